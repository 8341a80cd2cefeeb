package depsolver

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"pault.ag/go/debian/control"
	"pault.ag/go/debian/dependency"

	"github.com/cloud-builder/cb/internal/buildroot"
	"github.com/cloud-builder/cb/internal/message"
)

// maxFile bounds every file the scanner reads from the sources.
const maxFile = 1 << 20

// BaseRepo is one base repository of a buildroot or image description.
type BaseRepo struct {
	Type         string   `json:"type"` // apt-deb or rpm-md
	URL          string   `json:"url"`
	Distribution string   `json:"distribution,omitempty"`
	Components   []string `json:"components,omitempty"`
	Arch         string   `json:"arch"` // uname -m
}

// Scanner reads targets from a checkout of the sources repository.
type Scanner struct {
	Dir string // the checkout; projects/ is below it
	// Substitute replaces the mirror placeholder in descriptions
	// (mirror.Substitute); nil leaves them as they are.
	Substitute func([]byte) ([]byte, error)
}

// All scans every package and image below projects/.
func (s *Scanner) All(ctx context.Context) ([]*Target, error) {
	var projects []string
	root := filepath.Join(s.Dir, "projects")
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if d.IsDir() && d.Name() == ".git" {
			return filepath.SkipDir
		}
		if d.Type().IsRegular() && d.Name() == "cloud_builder.yml" && filepath.Base(filepath.Dir(p)) == ".cb" {
			rel, err := filepath.Rel(s.Dir, filepath.Dir(filepath.Dir(p)))
			if err != nil {
				return err
			}
			projects = append(projects, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("scan sources: %w", err)
	}
	sort.Strings(projects)
	var out []*Target
	for _, p := range projects {
		ts, err := s.Project(p)
		if err != nil {
			continue // an invalid project path: nothing to build
		}
		out = append(out, ts...)
	}
	return out, nil
}

// Project scans one package or image directory. A project whose metadata
// cannot be read has no targets; one whose sources cannot be read has
// targets with Err set. A project that does not exist (any more) returns
// no targets and no error.
func (s *Scanner) Project(project string) ([]*Target, error) {
	if err := message.ValidateProject(project); err != nil {
		return nil, err
	}
	root, err := os.OpenRoot(filepath.Join(s.Dir, filepath.FromSlash(project)))
	if err != nil {
		return nil, nil
	}
	defer root.Close()
	metaData, err := readFile(root, message.MetadataFile)
	if err != nil {
		return nil, nil
	}
	meta, err := message.DecodeMetadata(metaData, path.Base(project))
	if err != nil {
		return nil, nil
	}
	cfg := message.DefaultDepsolverConfig()
	var cfgErr error
	if data, err := readFile(root, message.DepsolverFile); err == nil {
		if cfg, cfgErr = message.DecodeDepsolverConfig(data); cfgErr != nil {
			cfgErr = fmt.Errorf("%s: %w", message.DepsolverFile, cfgErr)
			cfg = message.DefaultDepsolverConfig()
		}
	}
	parent := path.Dir(project)
	scope := func(repo string) []string {
		var sc []string
		if cfg.ProjectRepository {
			sc = append(sc, repo)
		}
		for _, r := range cfg.Repositories {
			if !slices.Contains(sc, r) {
				sc = append(sc, r)
			}
		}
		return sc
	}
	var out []*Target
	if meta.IsImage() {
		for _, im := range meta.Images {
			t := &Target{Project: project, Image: true, Selection: im.Selection.Name, Arch: im.Arch,
				RunnerGroup: im.RunnerGroup, Format: FormatRPM, Mode: Mode(cfg.Cascade)}
			t.ID = project + "@" + t.Profile()
			t.Repo = parent + "/" + im.Selection.Name
			t.Scope = scope(t.Repo)
			if err := s.imageNeeds(root, t, im.Selection.Profiles); err != nil {
				t.Err = err.Error()
			}
			if cfgErr != nil {
				t.Err = cfgErr.Error()
			}
			out = append(out, t)
		}
		return out, nil
	}
	src, srcErr := readSources(root)
	for _, d := range meta.Distributions {
		t := &Target{Project: project, Dist: d.Dist, Arch: d.Arch, RunnerGroup: d.RunnerGroup, Mode: Mode(cfg.Cascade)}
		t.ID = project + "@" + t.Profile()
		t.Repo = parent + "/" + d.Dist
		t.Scope = scope(t.Repo)
		switch {
		case cfgErr != nil:
			t.Err = cfgErr.Error()
		case srcErr != nil:
			t.Err = srcErr.Error()
		default:
			if err := s.packageNeeds(root, t, src); err != nil {
				t.Err = err.Error()
			}
		}
		out = append(out, t)
	}
	return out, nil
}

// sources is what a package's build sources say, independent of target.
type sources struct {
	kind      string // buildroot.KindDebian, KindDsc or KindSpec
	file      string
	buildDeps []dependency.Dependency // Debian
	specReqs  []Need                  // rpm
	declared  []Binary
}

func readSources(root *os.Root) (*sources, error) {
	if data, err := readFile(root, "debian/control"); err == nil {
		return debianSources(data, buildroot.KindDebian, "debian/control")
	}
	for _, k := range []struct{ kind, glob string }{{buildroot.KindDsc, "*.dsc"}, {buildroot.KindSpec, "*.spec"}} {
		m, _ := fs.Glob(root.FS(), k.glob)
		if len(m) == 0 {
			continue
		}
		sort.Strings(m)
		data, err := readFile(root, m[0])
		if err != nil {
			return nil, err
		}
		if k.kind == buildroot.KindDsc {
			return debianSources(data, buildroot.KindDsc, m[0])
		}
		return specSources(data, m[0])
	}
	return nil, errors.New("the package holds neither debian/control, a .dsc nor a .spec")
}

func debianSources(data []byte, kind, file string) (*sources, error) {
	src := &sources{kind: kind, file: file}
	fail := func(err error) (*sources, error) { return nil, fmt.Errorf("%s: %w", file, err) }
	if kind == buildroot.KindDsc {
		dsc, err := control.ParseDsc(bufio.NewReader(bytes.NewReader(data)), file)
		if err != nil {
			return fail(err)
		}
		src.buildDeps = []dependency.Dependency{dsc.BuildDepends, dsc.BuildDependsArch, dsc.BuildDependsIndep}
		for _, b := range dsc.Binaries {
			if b = strings.TrimSpace(b); b != "" {
				src.declared = append(src.declared, Binary{Name: b})
			}
		}
		return src, nil
	}
	c, err := control.ParseControl(bufio.NewReader(bytes.NewReader(data)), file)
	if err != nil {
		return fail(err)
	}
	src.buildDeps = []dependency.Dependency{c.Source.BuildDepends, c.Source.BuildDependsArch, c.Source.BuildDependsIndep}
	for _, b := range c.Binaries {
		bin := Binary{Name: b.Package}
		if len(b.Architectures) == 1 && b.Architectures[0].CPU == "all" {
			bin.Arch = "all"
		}
		for _, p := range b.Provides.GetAllPossibilities() {
			bin.Provides = append(bin.Provides, p.Name)
		}
		src.declared = append(src.declared, bin)
	}
	return src, nil
}

func (s *Scanner) packageNeeds(root *os.Root, t *Target, src *sources) error {
	if src.kind == buildroot.KindSpec {
		t.Format = FormatRPM
	} else {
		t.Format = FormatDeb
	}
	t.Declared = src.declared
	pm := ""
	if data, err := readFile(root, buildroot.DescriptionFile); err == nil {
		if s.Substitute != nil {
			if sub, err := s.Substitute(data); err == nil {
				data = sub
			}
		}
		desc, err := buildroot.ParseDescription(data)
		if err != nil {
			return fmt.Errorf("%s: %w", buildroot.DescriptionFile, err)
		}
		prof, err := desc.Profile(t.Profile())
		if err != nil {
			return fmt.Errorf("%s: %w", buildroot.DescriptionFile, err)
		}
		pm = prof.PackageManager
		for _, list := range [][]string{prof.Bootstrap, prof.Packages} {
			for _, n := range list {
				t.Needs = append(t.Needs, Need{Alternatives: []Alternative{{Name: n}}, From: buildroot.DescriptionFile})
			}
		}
		for _, r := range prof.Repositories {
			if strings.Contains(r.Path, "@") {
				continue // placeholder left: the base is unknown
			}
			t.BaseRepos = append(t.BaseRepos, BaseRepo{Type: r.Type, URL: r.Path, Distribution: r.Distribution,
				Components: r.Components, Arch: t.Arch})
		}
		if len(t.BaseRepos) == len(prof.Repositories) {
			t.Base = baseKey(t.BaseRepos)
		} else {
			t.BaseRepos = nil
		}
	}
	switch src.kind {
	case buildroot.KindSpec:
		// A spec's BuildRequires are rpm names: only a buildroot with an
		// rpm package manager could resolve them from its base.
		rpmRoot := slices.Contains([]string{"dnf", "dnf4", "dnf5", "zypper", "yum", "microdnf"}, pm)
		for _, n := range src.specReqs {
			n.ProjectOnly = !rpmRoot
			t.Needs = append(t.Needs, n)
		}
	default:
		arch := dependency.Arch{ABI: "gnu", OS: "linux", CPU: debArch(t.Arch)}
		for _, dep := range src.buildDeps {
			for _, rel := range dep.Relations {
				n := Need{From: src.file}
				for _, p := range rel.Possibilities {
					if p.Substvar || !possibilityApplies(p, &arch) {
						continue
					}
					a := Alternative{Name: p.Name}
					if p.Version != nil {
						a.Op, a.Version = p.Version.Operator, p.Version.Number
					}
					n.Alternatives = append(n.Alternatives, a)
				}
				if len(n.Alternatives) > 0 {
					t.Needs = append(t.Needs, n)
				}
			}
		}
	}
	return nil
}

// possibilityApplies evaluates the architecture restriction and, with no
// build profile active, the build profile restrictions of p.
func possibilityApplies(p dependency.Possibility, arch *dependency.Arch) bool {
	if p.Architectures != nil && len(p.Architectures.Architectures) > 0 && !p.Architectures.Matches(arch) {
		return false
	}
	if len(p.StageSets) == 0 {
		return true
	}
	for _, set := range p.StageSets {
		holds := true
		for _, st := range set.Stages {
			if !st.Not {
				holds = false
			}
		}
		if holds {
			return true
		}
	}
	return false
}

func baseKey(repos []BaseRepo) string {
	h := sha256.New()
	for _, r := range repos {
		fmt.Fprintf(h, "%s %s %s %s %s\n", r.Type, r.URL, r.Distribution, strings.Join(r.Components, ","), r.Arch)
	}
	return fmt.Sprintf("%x", h.Sum(nil))[:16]
}

// specSources reads what the spec declares and needs
// (buildroot.ParseSpec: the spec is not run through rpmspec, whose %(…)
// macros would run shell commands of untrusted sources).
func specSources(data []byte, file string) (*sources, error) {
	spec, err := buildroot.ParseSpec(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	src := &sources{kind: buildroot.KindSpec, file: file}
	for _, p := range spec.Packages {
		src.declared = append(src.declared, Binary{Name: p.Name, Provides: p.Provides})
	}
	for _, r := range spec.BuildRequires {
		src.specReqs = append(src.specReqs, Need{Alternatives: []Alternative{{Name: r.Name, Op: r.Op, Version: r.Version}}, From: file})
	}
	return src, nil
}

// imageDoc is the part of a KIWI image description the depsolver reads.
type imageDoc struct {
	Repositories []struct {
		Profiles     string `xml:"profiles,attr"`
		Type         string `xml:"type,attr"`
		Distribution string `xml:"distribution,attr"`
		Components   string `xml:"components,attr"`
		Source       struct {
			Path string `xml:"path,attr"`
		} `xml:"source"`
	} `xml:"repository"`
	Packages []struct {
		Profiles string `xml:"profiles,attr"`
		Type     string `xml:"type,attr"`
		Package  []struct {
			Name string `xml:"name,attr"`
		} `xml:"package"`
	} `xml:"packages"`
}

func (s *Scanner) imageNeeds(root *os.Root, t *Target, profiles []string) error {
	var file string
	for _, c := range []string{"appliance.kiwi", "config.kiwi", "config.xml"} {
		if fi, err := root.Stat(c); err == nil && fi.Mode().IsRegular() {
			file = c
			break
		}
	}
	if file == "" {
		m, _ := fs.Glob(root.FS(), "*.kiwi")
		if len(m) == 0 {
			return errors.New("no image description (appliance.kiwi, config.xml or *.kiwi)")
		}
		sort.Strings(m)
		file = m[0]
	}
	data, err := readFile(root, file)
	if err != nil {
		return err
	}
	if s.Substitute != nil {
		if sub, err := s.Substitute(data); err == nil {
			data = sub
		}
	}
	var doc imageDoc
	dec := xml.NewDecoder(bytes.NewReader(data))
	dec.Strict = true
	if err := dec.Decode(&doc); err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	applies := func(attr string) bool {
		if strings.TrimSpace(attr) == "" {
			return true
		}
		for _, p := range strings.Split(attr, ",") {
			if slices.Contains(profiles, strings.TrimSpace(p)) {
				return true
			}
		}
		return false
	}
	for _, pk := range doc.Packages {
		if !applies(pk.Profiles) || (pk.Type != "" && pk.Type != "image" && pk.Type != "bootstrap") {
			continue
		}
		for _, p := range pk.Package {
			if p.Name != "" {
				t.Needs = append(t.Needs, Need{Alternatives: []Alternative{{Name: p.Name}}, From: file})
			}
		}
	}
	complete := true
	for _, r := range doc.Repositories {
		if !applies(r.Profiles) {
			continue
		}
		if (r.Type != buildroot.RepoAptDeb && r.Type != buildroot.RepoRpmMd) || strings.Contains(r.Source.Path, "@") {
			complete = false
			continue
		}
		t.BaseRepos = append(t.BaseRepos, BaseRepo{Type: r.Type, URL: r.Source.Path, Distribution: r.Distribution,
			Components: strings.Fields(strings.ReplaceAll(r.Components, ",", " ")), Arch: t.Arch})
	}
	if complete && len(t.BaseRepos) > 0 {
		t.Base = baseKey(t.BaseRepos)
	} else {
		t.BaseRepos = nil
	}
	return nil
}

// readFile reads a regular file inside root, bounded.
func readFile(root *os.Root, name string) ([]byte, error) {
	f, err := root.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file", name)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxFile+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxFile {
		return nil, fmt.Errorf("%s: larger than %d bytes", name, maxFile)
	}
	return data, nil
}
