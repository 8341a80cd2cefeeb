package kiwi

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/cloud-builder/cb/internal/buildroot"
)

// WithProjectRepos returns the description desc with the collector's
// project repositories among repos (the ones with a SignedBy key, which
// buildroot.Prepare adds) as <repository> elements, each verified with
// its key (<signing key="file://KEY"/>, repository_gpgcheck="true").
//
// They go before the description's first repository rather than through
// kiwi-ng's --add-repo, which appends: for apt, kiwi 9 bootstraps with
// debootstrap from the last repository with a distribution unless one is
// marked use_for_bootstrap, and a project repository holds only the
// project's packages. Placed first, the bootstrap repository stays the
// one the description chose.
//
// kiwi imports every signing key into one keyring that apt trusts for all
// of the root's repositories (no per-repository signed-by as with the
// native backend): the collector's key verifies the project repositories,
// and a description's own keys could too.
func WithProjectRepos(desc []byte, repos []buildroot.Repository) ([]byte, error) {
	var project []buildroot.Repository
	for _, r := range repos {
		if r.SignedBy != "" {
			project = append(project, r)
		}
	}
	if len(project) == 0 {
		return desc, nil
	}
	at, err := repositoryOffset(desc)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	b.Write(desc[:at])
	for i, r := range project {
		if r.Type != buildroot.RepoAptDeb {
			return nil, fmt.Errorf("project repository %s: type %s, want %s", r.Path, r.Type, buildroot.RepoAptDeb)
		}
		key, err := filepath.Abs(r.SignedBy)
		if err != nil {
			return nil, fmt.Errorf("project repository %s: %w", r.Path, err)
		}
		// The alias names kiwi's apt sources file: one per repository.
		alias := r.Alias
		if alias == "" {
			alias = "cb-project"
		}
		if i > 0 {
			alias += "-" + strconv.Itoa(i+1)
		}
		b.WriteString(`<repository type="apt-deb" alias="`)
		attr(&b, alias)
		b.WriteString(`" repository_gpgcheck="true" imageinclude="false"`)
		if r.Distribution != "" {
			b.WriteString(` distribution="`)
			attr(&b, r.Distribution)
			b.WriteString(`" components="`)
			attr(&b, strings.Join(r.Components, " "))
			b.WriteString(`"`)
		}
		b.WriteString(`><source path="`)
		attr(&b, r.Path)
		b.WriteString(`"><signing key="`)
		attr(&b, "file://"+key)
		b.WriteString("\"/></source></repository>\n    ")
	}
	b.Write(desc[at:])
	return b.Bytes(), nil
}

func attr(b *bytes.Buffer, s string) {
	xml.EscapeText(b, []byte(s)) //nolint:errcheck // a bytes.Buffer does not fail
}

// repositoryOffset is the byte offset of the first <repository> child of
// the description's <image> element, else of its end tag.
func repositoryOffset(desc []byte) (int, error) {
	d := xml.NewDecoder(bytes.NewReader(desc))
	depth := 0
	for {
		off := d.InputOffset()
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			return 0, errors.New("description: no <image> element")
		}
		if err != nil {
			return 0, fmt.Errorf("description: %w", err)
		}
		switch t := tok.(type) {
		case xml.StartElement:
			depth++
			if depth == 1 && t.Name.Local != "image" {
				return 0, fmt.Errorf("description: root element <%s>, want <image>", t.Name.Local)
			}
			if depth == 2 && t.Name.Local == "repository" {
				return int(off), nil
			}
		case xml.EndElement:
			if depth == 1 {
				return int(off), nil
			}
			depth--
		}
	}
}
