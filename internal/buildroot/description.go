package buildroot

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strings"
)

// DescriptionFile is the buildroot description inside a package directory.
const DescriptionFile = ".cb/build_root.kiwi"

// Repository types understood by the cache (the index of each must be
// fetchable to know whether a cached root is still current).
const (
	RepoAptDeb = "apt-deb"
	RepoRpmMd  = "rpm-md"
)

// Repository is one <repository> of a profile.
type Repository struct {
	Type         string   // apt-deb or rpm-md
	Path         string   // source URL after mirror substitution
	Distribution string   // apt-deb suite; empty for a flat repository
	Components   []string // apt-deb components
	Alias        string
	// SignedBy is the key file apt verifies the repository with (the
	// project repositories of the collector); "" uses apt's keyrings.
	SignedBy string
	// KeyDigest, when set, stands for the repository's index in the cache
	// key (a project repository: the packages the root takes from it).
	KeyDigest string
	// SigningKeys are the <signing key="..."/> URLs of the source; kiwi
	// imports them.
	SigningKeys []string
}

// Profile is what one DIST.ARCH profile of a description asks for: the
// union of the elements without profiles= and those naming the profile (or
// a profile it requires).
type Profile struct {
	Name           string
	Arch           string // the part after the last dot, as uname -m prints it
	PackageManager string
	Repositories   []Repository
	Bootstrap      []string
	Packages       []string
	// Source is the (substituted) description the profile was read from;
	// backends that hand the description to kiwi write it out again.
	Source []byte
}

// Description is a parsed .cb/build_root.kiwi.
type Description struct {
	Name          string
	SchemaVersion string
	Profiles      []string // declared profile names in document order
	raw           []byte
	doc           xmlImage
}

type xmlImage struct {
	XMLName       xml.Name         `xml:"image"`
	Name          string           `xml:"name,attr"`
	SchemaVersion string           `xml:"schemaversion,attr"`
	Profiles      []xmlProfile     `xml:"profiles>profile"`
	Preferences   []xmlPreferences `xml:"preferences"`
	Repositories  []xmlRepository  `xml:"repository"`
	Packages      []xmlPackages    `xml:"packages"`
	Includes      []struct {
		From string `xml:"from,attr"`
	} `xml:"include"`
}

type xmlProfile struct {
	Name     string `xml:"name,attr"`
	Requires []struct {
		Profile string `xml:"profile,attr"`
	} `xml:"requires"`
}

type xmlPreferences struct {
	Profiles       string   `xml:"profiles,attr"`
	PackageManager []string `xml:"packagemanager"`
}

type xmlRepository struct {
	Profiles     string `xml:"profiles,attr"`
	Type         string `xml:"type,attr"`
	Alias        string `xml:"alias,attr"`
	Distribution string `xml:"distribution,attr"`
	Components   string `xml:"components,attr"`
	Source       struct {
		Path    string `xml:"path,attr"`
		Signing []struct {
			Key string `xml:"key,attr"`
		} `xml:"signing"`
	} `xml:"source"`
}

type xmlPackages struct {
	Profiles string `xml:"profiles,attr"`
	Type     string `xml:"type,attr"`
	Package  []struct {
		Name string `xml:"name,attr"`
		Arch string `xml:"arch,attr"`
	} `xml:"package"`
}

// ErrUnknownProfile means a description does not declare the requested profile.
var ErrUnknownProfile = errors.New("profile not declared in the buildroot description")

var (
	profileRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+-]*$`)
	// Package names of deb and rpm; no comma (mmdebstrap joins lists with
	// commas) and no leading dash (it would become an option).
	packageRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+~-]*$`)
	suiteRE   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._/+-]*$`)
)

// maxDescription bounds the size of a description read from the repo.
const maxDescription = 1 << 20

// ParseDescription parses a kiwi XML description (schema 7.x). data must
// already have the mirror placeholder substituted.
func ParseDescription(data []byte) (*Description, error) {
	if len(data) > maxDescription {
		return nil, fmt.Errorf("parse buildroot description: larger than %d bytes", maxDescription)
	}
	var doc xmlImage
	dec := xml.NewDecoder(bytes.NewReader(data))
	// Entities beyond the XML builtins are refused by encoding/xml, which
	// keeps entity expansion attacks out.
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("parse buildroot description: %w", err)
	}
	if !strings.HasPrefix(doc.SchemaVersion, "7.") {
		return nil, fmt.Errorf("parse buildroot description: schemaversion %q is not 7.x", doc.SchemaVersion)
	}
	if len(doc.Includes) > 0 {
		// kiwi would read another file of the repository here; a buildroot
		// description must be self-contained so its hash is its content.
		return nil, fmt.Errorf("parse buildroot description: <include from=%q> is not supported", doc.Includes[0].From)
	}
	d := &Description{Name: doc.Name, SchemaVersion: doc.SchemaVersion, raw: data, doc: doc}
	for _, p := range doc.Profiles {
		if !profileRE.MatchString(p.Name) {
			return nil, fmt.Errorf("parse buildroot description: invalid profile name %q", p.Name)
		}
		if slices.Contains(d.Profiles, p.Name) {
			return nil, fmt.Errorf("parse buildroot description: profile %q declared twice", p.Name)
		}
		d.Profiles = append(d.Profiles, p.Name)
	}
	return d, nil
}

// Profile resolves the elements that apply to the profile name.
func (d *Description) Profile(name string) (*Profile, error) {
	if !slices.Contains(d.Profiles, name) {
		return nil, fmt.Errorf("profile %q: %w", name, ErrUnknownProfile)
	}
	active := d.activeProfiles(name)
	applies := func(attr string) bool {
		if strings.TrimSpace(attr) == "" {
			return true
		}
		for _, p := range strings.Split(attr, ",") {
			if active[strings.TrimSpace(p)] {
				return true
			}
		}
		return false
	}
	p := &Profile{Name: name, Source: d.raw}
	if i := strings.LastIndexByte(name, '.'); i >= 0 {
		p.Arch = name[i+1:]
	}
	for _, pref := range d.doc.Preferences {
		if !applies(pref.Profiles) {
			continue
		}
		for _, pm := range pref.PackageManager {
			// kiwi lets a profile-specific <preferences> override the shared one.
			if pm = strings.TrimSpace(pm); pm != "" && (p.PackageManager == "" || pref.Profiles != "") {
				p.PackageManager = pm
			}
		}
	}
	if p.PackageManager == "" {
		return nil, fmt.Errorf("profile %q: no <packagemanager>", name)
	}
	if !packageRE.MatchString(p.PackageManager) {
		return nil, fmt.Errorf("profile %q: invalid packagemanager %q", name, p.PackageManager)
	}
	for _, r := range d.doc.Repositories {
		if !applies(r.Profiles) {
			continue
		}
		repo, err := newRepository(r)
		if err != nil {
			return nil, fmt.Errorf("profile %q: %w", name, err)
		}
		p.Repositories = append(p.Repositories, repo)
	}
	if len(p.Repositories) == 0 {
		return nil, fmt.Errorf("profile %q: no <repository>", name)
	}
	for _, pk := range d.doc.Packages {
		if !applies(pk.Profiles) {
			continue
		}
		var list *[]string
		switch pk.Type {
		case "image", "":
			list = &p.Packages
		case "bootstrap":
			list = &p.Bootstrap
		default:
			// delete/uninstall lists change an image after installation;
			// a buildroot has no use for them.
			continue
		}
		for _, e := range pk.Package {
			if !archMatches(e.Arch, p.Arch) {
				continue
			}
			if !packageRE.MatchString(e.Name) {
				return nil, fmt.Errorf("profile %q: invalid package name %q", name, e.Name)
			}
			if !slices.Contains(*list, e.Name) {
				*list = append(*list, e.Name)
			}
		}
	}
	return p, nil
}

// activeProfiles is the profile plus every profile it <requires>, transitively.
func (d *Description) activeProfiles(name string) map[string]bool {
	active := map[string]bool{}
	var visit func(string)
	visit = func(n string) {
		if active[n] {
			return
		}
		active[n] = true
		for _, p := range d.doc.Profiles {
			if p.Name == n {
				for _, r := range p.Requires {
					visit(r.Profile)
				}
			}
		}
	}
	visit(name)
	return active
}

func archMatches(attr, arch string) bool {
	if strings.TrimSpace(attr) == "" {
		return true
	}
	for _, a := range strings.Split(attr, ",") {
		if strings.TrimSpace(a) == arch {
			return true
		}
	}
	return false
}

func newRepository(r xmlRepository) (Repository, error) {
	repo := Repository{Type: r.Type, Path: strings.TrimSpace(r.Source.Path), Distribution: r.Distribution, Alias: r.Alias}
	for _, k := range r.Source.Signing {
		repo.SigningKeys = append(repo.SigningKeys, strings.TrimSpace(k.Key))
	}
	switch r.Type {
	case RepoAptDeb:
		repo.Components = strings.FieldsFunc(r.Components, func(c rune) bool { return c == ' ' || c == ',' })
		if len(repo.Components) == 0 {
			repo.Components = []string{"main"}
		}
		for _, c := range repo.Components {
			if !profileRE.MatchString(c) {
				return Repository{}, fmt.Errorf("repository %q: invalid component %q", repo.Path, c)
			}
		}
		if repo.Distribution != "" && !suiteRE.MatchString(repo.Distribution) || strings.Contains(repo.Distribution, "..") {
			return Repository{}, fmt.Errorf("repository %q: invalid distribution %q", repo.Path, repo.Distribution)
		}
	case RepoRpmMd:
	default:
		return Repository{}, fmt.Errorf("repository %q: unsupported type %q (want %s or %s)", repo.Path, r.Type, RepoAptDeb, RepoRpmMd)
	}
	if repo.Alias != "" && !profileRE.MatchString(repo.Alias) {
		return Repository{}, fmt.Errorf("repository %q: invalid alias %q", repo.Path, repo.Alias)
	}
	if err := validateURL(repo.Path); err != nil {
		return Repository{}, err
	}
	return repo, nil
}

func validateURL(u string) error {
	if strings.ContainsFunc(u, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return fmt.Errorf("repository path %q contains white space or control characters", u)
	}
	p, err := url.Parse(u)
	if err != nil {
		return fmt.Errorf("repository path: %w", err)
	}
	switch {
	case p.Scheme == "http" || p.Scheme == "https":
		if p.Host == "" {
			return fmt.Errorf("repository path %q has no host", u)
		}
	case p.Scheme == "file":
		if !strings.HasPrefix(p.Path, "/") {
			return fmt.Errorf("repository path %q is not absolute", u)
		}
	default:
		return fmt.Errorf("repository path %q: unsupported scheme %q (want http, https or file)", u, p.Scheme)
	}
	return nil
}
