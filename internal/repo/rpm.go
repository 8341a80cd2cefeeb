package repo

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Repomd is the part of repodata/repomd.xml the collector reads.
type Repomd struct {
	Revision string       `xml:"revision"`
	Data     []RepomdData `xml:"data"`
}

// RepomdData is one metadata file listed in repomd.xml.
type RepomdData struct {
	Type     string      `xml:"type,attr"`
	Checksum XMLChecksum `xml:"checksum"`
	Location XMLLocation `xml:"location"`
}

// The elements rpm-md metadata (repomd.xml, primary.xml) shares.
type (
	// XMLChecksum is <checksum type="sha256">hex</checksum>.
	XMLChecksum struct {
		Type  string `xml:"type,attr"`
		Value string `xml:",chardata"`
	}
	// XMLLocation is <location href="…"/>; a Base (xml:base) points
	// away from the repository.
	XMLLocation struct {
		Href string `xml:"href,attr"`
		Base string `xml:"base,attr"`
	}
	// XMLVersion is a package's <version epoch ver rel/>.
	XMLVersion struct {
		Epoch string `xml:"epoch,attr"`
		Ver   string `xml:"ver,attr"`
		Rel   string `xml:"rel,attr"`
	}
	// XMLDep is one <entry/> of a provides or requires list.
	XMLDep struct {
		Name  string `xml:"name,attr"`
		Flags string `xml:"flags,attr"`
		Epoch string `xml:"epoch,attr"`
		Ver   string `xml:"ver,attr"`
		Rel   string `xml:"rel,attr"`
	}
)

// XMLPackage is one <package/> of primary.xml.
type XMLPackage struct {
	Type     string      `xml:"type,attr"`
	Name     string      `xml:"name"`
	Arch     string      `xml:"arch"`
	Version  XMLVersion  `xml:"version"`
	Checksum XMLChecksum `xml:"checksum"`
	Location XMLLocation `xml:"location"`
	Provides []XMLDep    `xml:"format>provides>entry"`
	Requires []XMLDep    `xml:"format>requires>entry"`
}

// EachPrimaryPackage reads primary.xml from r one package at a time (a
// large repository's primary never sits in memory whole) and calls fn
// with each; an error of fn ends the read and is returned as it is.
func EachPrimaryPackage(r io.Reader, fn func(*XMLPackage) error) error {
	dec := xml.NewDecoder(r)
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("parse primary.xml: %w", err)
		}
		se, ok := tok.(xml.StartElement)
		if !ok || se.Name.Local != "package" {
			continue
		}
		var p XMLPackage
		if err := dec.DecodeElement(&p, &se); err != nil {
			return fmt.Errorf("parse primary.xml: %w", err)
		}
		if err := fn(&p); err != nil {
			return err
		}
	}
}

// ReadRepomd parses dir/repodata/repomd.xml.
func ReadRepomd(dir string) (*Repomd, error) {
	data, err := os.ReadFile(filepath.Join(dir, "repodata", "repomd.xml"))
	if err != nil {
		return nil, err
	}
	var md Repomd
	if err := xml.Unmarshal(data, &md); err != nil {
		return nil, fmt.Errorf("parse repomd.xml: %w", err)
	}
	return &md, nil
}

// publishRPM regenerates repodata/ with createrepo_c --update, which reuses
// the previous metadata of every rpm whose size and mtime did not change, so
// adding one package to thousands costs little. The new repodata is built
// next to the old one, signed, and exchanged with it in one step.
func (p *Publisher) publishRPM(ctx context.Context, r Repository, builds []Build) error {
	tmp, err := os.MkdirTemp(r.Dir(), ".repodata-")
	if err != nil {
		return fmt.Errorf("publish %s: %w", r.Path, err)
	}
	defer os.RemoveAll(tmp)

	// The package list comes from the bookkeeping, not from a directory
	// scan, so a file that is not recorded never reaches the metadata.
	var list strings.Builder
	for _, b := range builds {
		for _, f := range b.Files {
			list.WriteString(f.Name + "\n")
		}
	}
	pkglist := filepath.Join(tmp, "pkglist")
	if err := os.WriteFile(pkglist, []byte(list.String()), 0o644); err != nil {
		return fmt.Errorf("publish %s: %w", r.Path, err)
	}
	out := filepath.Join(tmp, "out")
	if err := os.Mkdir(out, 0o755); err != nil {
		return fmt.Errorf("publish %s: %w", r.Path, err)
	}
	args := []string{"--quiet", "--update", "--outputdir", out, "--pkglist", pkglist,
		"--workers", "2", "--general-compress-type", "gz"}
	if _, err := os.Stat(filepath.Join(r.Dir(), "repodata", "repomd.xml")); err == nil {
		args = append(args, "--update-md-path", r.Dir())
	}
	if !p.RPMDatabase {
		args = append(args, "--no-database")
	}
	args = append(args, r.Dir())
	if _, err := run(ctx, nil, p.createrepo(), args...); err != nil {
		return fmt.Errorf("publish %s: %w", r.Path, err)
	}
	fresh := filepath.Join(out, "repodata")
	md := filepath.Join(fresh, "repomd.xml")
	if err := p.Signer.SignDetached(ctx, md, md+".asc"); err != nil {
		return fmt.Errorf("publish %s: %w", r.Path, err)
	}
	// zypper looks for the key next to repomd.xml.
	if key, err := os.ReadFile(filepath.Join(r.Root, PublicKeyArmored)); err == nil {
		if err := os.WriteFile(md+".key", key, 0o644); err != nil {
			return fmt.Errorf("publish %s: %w", r.Path, err)
		}
	}
	current := filepath.Join(r.Dir(), "repodata")
	keepPreviousRPM(current, fresh)
	if err := swapIn(fresh, current); err != nil {
		return fmt.Errorf("publish %s: swap repodata: %w", r.Path, err)
	}
	return nil
}

// keepPreviousRPM links the data files the previous repomd.xml names into
// the new repodata, so a client that fetched the old repomd.xml a moment
// before the swap can still download what it lists. Only one generation
// back is kept. Failures only cost that courtesy, so they are ignored.
func keepPreviousRPM(current, fresh string) {
	md, err := ReadRepomd(filepath.Dir(current))
	if err != nil {
		return
	}
	for _, d := range md.Data {
		name, ok := strings.CutPrefix(d.Location.Href, "repodata/")
		if !ok || strings.Contains(name, "/") || name == "" || strings.HasPrefix(name, ".") {
			continue
		}
		dst := filepath.Join(fresh, name)
		if _, err := os.Lstat(dst); !errors.Is(err, fs.ErrNotExist) {
			continue
		}
		_ = os.Link(filepath.Join(current, name), dst)
	}
}
