package ctl

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/cloud-builder/cb/internal/buildroot"
	"github.com/cloud-builder/cb/internal/image"
	"github.com/cloud-builder/cb/internal/message"
	"github.com/cloud-builder/cb/internal/mirror"
	"github.com/cloud-builder/cb/internal/target"
)

// LocalDeps are the options of --build-dependencies-local.
type LocalDeps struct {
	Dir        string // package or image description directory
	RunnerRoot string // where --build-package-local keeps its targets
	Dist       string // packages
	Selection  string // images
	Arch       string
}

// Requested is the buildroot a package's description asks for, before a
// package manager resolved it.
type Requested struct {
	Profile           string       `json:"profile"`
	PackageManager    string       `json:"package_manager"`
	Repositories      []Repository `json:"repositories"`
	Bootstrap         []string     `json:"bootstrap_packages"`
	Packages          []string     `json:"image_packages"`
	BuildDependencies []string     `json:"build_dependencies"`
	// Resolved is false: versions and indirect dependencies are decided
	// when the buildroot is created.
	Resolved bool `json:"resolved"`
}

// Repository is a repository of the buildroot description.
type Repository struct {
	Type         string   `json:"type"`
	Path         string   `json:"path"`
	Distribution string   `json:"distribution,omitempty"`
	Components   []string `json:"components,omitempty"`
}

// LocalDependencies prints the buildroot package list of the package or
// image in o.Dir without a broker. When a local build of the target
// exists that is newer than the description, its solver file (the
// resolved list) is printed; otherwise, for packages, the list the
// description requests for the profile, with the source's build
// dependencies. Images have no description of their own to read here, so
// they need an earlier --build-image-local.
func LocalDependencies(o LocalDeps, stdout, stderr io.Writer) error {
	meta, err := message.LoadMetadata(o.Dir)
	if err != nil {
		return err
	}
	if err := message.ValidateName(o.Arch); err != nil {
		return fmt.Errorf("--arch: %w", err)
	}
	var t target.Target
	var desc string
	switch {
	case o.Dist != "" && o.Selection != "":
		return errors.New("--dist and --selection exclude each other")
	case o.Dist != "":
		if _, ok := meta.FindDistribution(o.Dist, o.Arch); !ok {
			return fmt.Errorf("%s has no target %s.%s in %s", meta.Name, o.Dist, o.Arch, message.MetadataFile)
		}
		if t, err = target.New(o.RunnerRoot, "projects/local/"+meta.Name, o.Dist, o.Arch); err != nil {
			return err
		}
		desc = buildroot.DescriptionFile
	case o.Selection != "":
		if _, ok := meta.FindImage(o.Selection, o.Arch); !ok {
			return fmt.Errorf("%s has no image selection %s for %s in %s", meta.Name, o.Selection, o.Arch, message.MetadataFile)
		}
		if err := message.ValidateName(o.Selection); err != nil {
			return fmt.Errorf("--selection: %w", err)
		}
		t = image.LocalTarget(o.Dir, meta.Name, o.Selection, o.Arch)
		desc = message.MetadataFile
	default:
		return errors.New("--dist (package) or --selection (image) is required")
	}

	root, err := os.OpenRoot(o.Dir)
	if err != nil {
		return err
	}
	defer root.Close()
	descInfo, err := root.Stat(desc)
	if err != nil {
		return fmt.Errorf("read %s: %w", desc, err)
	}
	if fi, err := os.Stat(t.SolverFile()); err == nil && fi.ModTime().After(descInfo.ModTime()) {
		f, err := os.Open(t.SolverFile())
		if err != nil {
			return err
		}
		defer f.Close()
		fmt.Fprintf(stderr, "cb-ctl: resolved package list of the local build: %s\n", t.SolverFile())
		_, err = io.Copy(stdout, f)
		return err
	}
	if o.Selection != "" {
		return fmt.Errorf("no local build of %s@%s: run --build-image-local --selection=%s first", meta.Name, t.Profile, o.Selection)
	}

	raw, err := root.ReadFile(desc)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%s is missing", desc)
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", desc, err)
	}
	data, err := mirror.Substitute(raw)
	if err != nil {
		return err
	}
	d, err := buildroot.ParseDescription(data)
	if err != nil {
		return err
	}
	p, err := d.Profile(t.Profile)
	if err != nil {
		return err
	}
	deps, err := buildroot.BuildDeps(o.Dir, p.Arch)
	if err != nil {
		return err
	}
	r := Requested{Profile: p.Name, PackageManager: p.PackageManager, Repositories: []Repository{},
		Bootstrap: p.Bootstrap, Packages: p.Packages, BuildDependencies: deps}
	for _, repo := range p.Repositories {
		r.Repositories = append(r.Repositories, Repository{Type: repo.Type, Path: repo.Path, Distribution: repo.Distribution, Components: repo.Components})
	}
	for _, s := range []*[]string{&r.Bootstrap, &r.Packages, &r.BuildDependencies} {
		if *s == nil {
			*s = []string{}
		}
	}
	fmt.Fprintf(stderr, "cb-ctl: no local build newer than %s: printing what the %s profile requests (unresolved)\n", desc, p.Name)
	return PrintJSON(stdout, r)
}
