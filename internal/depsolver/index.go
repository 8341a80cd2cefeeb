package depsolver

import (
	"bufio"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
	"pault.ag/go/debian/control"
	"pault.ag/go/debian/dependency"

	"github.com/cloud-builder/cb/internal/repo"
)

// maxIndexSize bounds an index download (decompressed).
const maxIndexSize = 512 << 20

// ErrNotPublished means a repository has no index yet.
var ErrNotPublished = errors.New("repository not published yet")

var httpClient = &http.Client{Timeout: 5 * time.Minute}

// open fetches u (http, https or file) and returns its body.
func open(ctx context.Context, u string) (io.ReadCloser, error) {
	pu, err := url.Parse(u)
	if err != nil {
		return nil, err
	}
	switch pu.Scheme {
	case "file":
		f, err := os.Open(pu.Path)
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%s: %w", u, ErrNotPublished)
		}
		return f, err
	case "http", "https":
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return nil, err
		}
		resp, err := httpClient.Do(req)
		if err != nil {
			return nil, err
		}
		if resp.StatusCode == http.StatusNotFound {
			resp.Body.Close()
			return nil, fmt.Errorf("%s: %w", u, ErrNotPublished)
		}
		if resp.StatusCode != http.StatusOK {
			resp.Body.Close()
			return nil, fmt.Errorf("%s: %s", u, resp.Status)
		}
		return resp.Body, nil
	}
	return nil, fmt.Errorf("%s: unsupported scheme", u)
}

// decompressed wraps r according to the file name's suffix.
func decompressed(name string, r io.Reader) (io.Reader, error) {
	switch {
	case strings.HasSuffix(name, ".gz"):
		return gzip.NewReader(r)
	case strings.HasSuffix(name, ".xz"):
		return xz.NewReader(r)
	case strings.HasSuffix(name, ".zst"):
		d, err := zstd.NewReader(r)
		if err != nil {
			return nil, err
		}
		return d.IOReadCloser(), nil
	}
	return r, nil
}

// fetchIndex opens the first of the candidate names below base that exists.
func fetchIndex(ctx context.Context, base string, names []string, fn func(io.Reader) error) error {
	var errs []error
	for _, n := range names {
		body, err := open(ctx, base+n)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		defer body.Close()
		r, err := decompressed(n, body)
		if err != nil {
			return fmt.Errorf("%s%s: %w", base, n, err)
		}
		if err := fn(io.LimitReader(r, maxIndexSize)); err != nil {
			return fmt.Errorf("%s%s: %w", base, n, err)
		}
		return nil
	}
	for _, e := range errs {
		if !errors.Is(e, ErrNotPublished) {
			return errors.Join(errs...)
		}
	}
	return errors.Join(errs...)
}

// AptPackages reads the Packages indexes of an apt repository (every
// component) for the Debian architecture of arch. distribution "" is a
// flat repository.
func AptPackages(ctx context.Context, baseURL, distribution string, components []string, arch string) ([]Binary, error) {
	base := strings.TrimRight(baseURL, "/") + "/"
	var dirs []string
	if distribution == "" {
		dirs = []string{""}
	} else {
		for _, c := range components {
			dirs = append(dirs, "dists/"+distribution+"/"+c+"/binary-"+debArch(arch)+"/")
		}
	}
	var out []Binary
	for _, d := range dirs {
		err := fetchIndex(ctx, base+d, []string{"Packages.xz", "Packages.gz", "Packages"}, func(r io.Reader) error {
			bins, err := ParsePackages(r)
			out = append(out, bins...)
			return err
		})
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// ParsePackages reads a Debian Packages index one paragraph at a time
// (a distribution's index has tens of thousands; only the fields the
// graph needs are kept).
func ParsePackages(r io.Reader) ([]Binary, error) {
	pr, err := control.NewParagraphReader(bufio.NewReaderSize(r, 64<<10), nil)
	if err != nil {
		return nil, fmt.Errorf("parse Packages: %w", err)
	}
	var out []Binary
	for {
		p, err := pr.Next()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("parse Packages: %w", err)
		}
		v := p.Values
		if v["Package"] == "" {
			continue
		}
		b := Binary{Name: v["Package"], Version: v["Version"], Arch: v["Architecture"], File: v["Filename"], SHA256: v["SHA256"]}
		if prov := v["Provides"]; prov != "" {
			dep, err := dependency.Parse(prov)
			if err != nil {
				return nil, fmt.Errorf("parse Packages: %s: Provides: %w", b.Name, err)
			}
			for _, pp := range dep.GetAllPossibilities() {
				s := pp.Name
				if pp.Version != nil && pp.Version.Operator == "=" {
					s += " (= " + pp.Version.Number + ")"
				}
				b.Provides = append(b.Provides, s)
			}
		}
		out = append(out, b)
	}
}

// RPMPackages reads the primary metadata of an rpm-md repository.
func RPMPackages(ctx context.Context, baseURL string) ([]Binary, error) {
	base := strings.TrimRight(baseURL, "/") + "/"
	var md repo.Repomd
	err := fetchIndex(ctx, base, []string{"repodata/repomd.xml"}, func(r io.Reader) error {
		return xml.NewDecoder(r).Decode(&md)
	})
	if err != nil {
		return nil, err
	}
	for _, d := range md.Data {
		if d.Type != "primary" {
			continue
		}
		href := path.Clean(d.Location.Href)
		if strings.HasPrefix(href, "../") || strings.HasPrefix(href, "/") {
			return nil, fmt.Errorf("repomd.xml: primary location %q leaves the repository", d.Location.Href)
		}
		var out []Binary
		err := fetchIndex(ctx, base, []string{href}, func(r io.Reader) error {
			var err error
			out, err = ParsePrimary(r)
			return err
		})
		return out, err
	}
	return nil, fmt.Errorf("%srepodata/repomd.xml: no primary metadata", base)
}

// ParsePrimary reads an rpm-md primary.xml, one package at a time.
func ParsePrimary(r io.Reader) ([]Binary, error) {
	var out []Binary
	err := repo.EachPrimaryPackage(r, func(e *repo.XMLPackage) error {
		b := Binary{Name: e.Name, Arch: e.Arch, Version: rpmEVR(e.Version.Epoch, e.Version.Ver, e.Version.Rel),
			File: e.Location.Href}
		if e.Checksum.Type == "sha256" {
			b.SHA256 = strings.TrimSpace(e.Checksum.Value)
		}
		for _, p := range e.Provides {
			if p.Name == e.Name {
				continue
			}
			s := p.Name
			if p.Flags == "EQ" && p.Ver != "" {
				s += " = " + rpmEVR(p.Epoch, p.Ver, p.Rel)
			}
			b.Provides = append(b.Provides, s)
		}
		out = append(out, b)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func rpmEVR(epoch, ver, rel string) string {
	s := ver
	if rel != "" {
		s += "-" + rel
	}
	if epoch != "" && epoch != "0" {
		s = epoch + ":" + s
	}
	return s
}

// RepoBinaries reads the binaries of one repository of the collector
// (repoURL = <collector>/<repo path>) for arch.
func RepoBinaries(ctx context.Context, repoURL, format, arch string) ([]Binary, error) {
	if format == FormatRPM {
		return RPMPackages(ctx, repoURL)
	}
	return AptPackages(ctx, repoURL, path.Base(repoURL), []string{"main"}, arch)
}

// BaseNames reads the names the base repositories provide.
func BaseNames(ctx context.Context, repos []BaseRepo) (Names, error) {
	names := Names{}
	for _, r := range repos {
		var bins []Binary
		var err error
		switch r.Type {
		case "apt-deb":
			bins, err = AptPackages(ctx, r.URL, r.Distribution, r.Components, r.Arch)
		case "rpm-md":
			bins, err = RPMPackages(ctx, r.URL)
		default:
			err = fmt.Errorf("repository %s: unsupported type %q", r.URL, r.Type)
		}
		if err != nil {
			return nil, fmt.Errorf("read base repository %s: %w", r.URL, err)
		}
		for _, b := range bins {
			names.Add(b.Name, b.Version)
			for _, p := range b.Provides {
				n, v := splitProvide(p)
				names.Add(n, v)
			}
		}
	}
	return names, nil
}

// IndexDigest returns the sha256 of a repository's signed index
// (InRelease or Release; repomd.xml), which changes with every change of
// the repository.
func IndexDigest(ctx context.Context, r BaseRepo) (string, error) {
	base := strings.TrimRight(r.URL, "/") + "/"
	var names []string
	switch {
	case r.Type == "rpm-md":
		names = []string{"repodata/repomd.xml"}
	case r.Distribution == "":
		names = []string{"InRelease", "Release"}
	default:
		names = []string{"dists/" + r.Distribution + "/InRelease", "dists/" + r.Distribution + "/Release"}
	}
	var sum string
	err := fetchIndex(ctx, base, names, func(rd io.Reader) error {
		h := sha256.New()
		if _, err := io.Copy(h, rd); err != nil {
			return err
		}
		sum = hex.EncodeToString(h.Sum(nil))
		return nil
	})
	return sum, err
}
