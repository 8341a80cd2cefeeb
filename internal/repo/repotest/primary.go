package repotest

import (
	"bytes"
	"compress/gzip"
	"encoding/xml"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/cloud-builder/cb/internal/repo"
)

// PrimaryPackage is one package of primary.xml.
type PrimaryPackage struct {
	Name     string           `xml:"name"`
	Arch     string           `xml:"arch"`
	Checksum repo.XMLChecksum `xml:"checksum"`
	Location repo.XMLLocation `xml:"location"`
	Version  repo.XMLVersion  `xml:"version"`
}

// Primary reads the packages listed by the primary metadata of the rpm-md
// repository in dir, whatever compression createrepo_c chose.
func Primary(t testing.TB, dir string) []PrimaryPackage {
	t.Helper()
	md, err := repo.ReadRepomd(dir)
	if err != nil {
		t.Fatalf("read repomd.xml: %v", err)
	}
	for _, d := range md.Data {
		if d.Type != "primary" {
			continue
		}
		raw, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(d.Location.Href)))
		if err != nil {
			t.Fatalf("read primary: %v", err)
		}
		data, err := decompress(d.Location.Href, raw)
		if err != nil {
			t.Fatalf("decompress %s: %v", d.Location.Href, err)
		}
		var doc struct {
			Packages []PrimaryPackage `xml:"package"`
		}
		if err := xml.Unmarshal(data, &doc); err != nil {
			t.Fatalf("parse primary: %v", err)
		}
		return doc.Packages
	}
	t.Fatalf("repomd.xml in %s lists no primary metadata", dir)
	return nil
}

func decompress(name string, raw []byte) ([]byte, error) {
	switch {
	case strings.HasSuffix(name, ".gz"):
		zr, err := gzip.NewReader(bytes.NewReader(raw))
		if err != nil {
			return nil, err
		}
		return io.ReadAll(zr)
	case strings.HasSuffix(name, ".zst"):
		zr, err := zstd.NewReader(bytes.NewReader(raw))
		if err != nil {
			return nil, err
		}
		defer zr.Close()
		return io.ReadAll(zr)
	case strings.HasSuffix(name, ".xml"):
		return raw, nil
	}
	return nil, fmt.Errorf("unknown compression of %s", name)
}
