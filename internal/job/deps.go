package job

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/cloud-builder/cb/internal/buildroot"
	"github.com/cloud-builder/cb/internal/message"
	"github.com/cloud-builder/cb/internal/mirror"
	"github.com/cloud-builder/cb/internal/target"
)

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

// Dependencies is the buildroot package list of a local target.
type Dependencies struct {
	// SolverFile is the resolved list of a local build of the target
	// that is newer than the description; empty when there is none.
	SolverFile string
	// Requested is what the description asks for, when there is no
	// SolverFile (packages only).
	Requested *Requested
	// Description is the description file, relative to the package.
	Description string
}

// LocalDependencies finds the buildroot package list of the package or
// image in o.Dir without a broker. When a local build of the target
// exists that is newer than the description, that is its solver file (the
// resolved list); otherwise, for packages, the list the description
// requests for the profile, with the source's build dependencies. Images
// have no description of their own to read here, so they need an earlier
// LocalImage. Package targets are looked up below cfg.RunnerRoot.
func LocalDependencies(cfg Config, o Local) (*Dependencies, error) {
	if err := o.defaults(); err != nil {
		return nil, fmt.Errorf("--arch: %w", err)
	}
	meta, err := message.LoadMetadata(o.Dir)
	if err != nil {
		return nil, err
	}
	var t target.Target
	var desc string
	switch {
	case o.Dist != "" && o.Selection != "":
		return nil, errors.New("--dist and --selection exclude each other")
	case o.Dist != "":
		if _, ok := meta.FindDistribution(o.Dist, o.Arch); !ok {
			return nil, fmt.Errorf("%s has no target %s.%s in %s", meta.Name, o.Dist, o.Arch, message.MetadataFile)
		}
		if t, err = target.New(cfg.RunnerRoot, localProject+meta.Name, o.Dist, o.Arch); err != nil {
			return nil, err
		}
		desc = buildroot.DescriptionFile
	case o.Selection != "":
		if _, ok := meta.FindImage(o.Selection, o.Arch); !ok {
			return nil, fmt.Errorf("%s has no image selection %s for %s in %s", meta.Name, o.Selection, o.Arch, message.MetadataFile)
		}
		if t, err = target.Local(o.Dir, meta.Name, o.Selection, o.Arch); err != nil {
			return nil, fmt.Errorf("--selection: %w", err)
		}
		desc = message.MetadataFile
	default:
		return nil, errors.New("--dist (package) or --selection (image) is required")
	}

	root, err := os.OpenRoot(o.Dir)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	descInfo, err := root.Stat(desc)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", desc, err)
	}
	if fi, err := os.Stat(t.SolverFile()); err == nil && fi.ModTime().After(descInfo.ModTime()) {
		return &Dependencies{SolverFile: t.SolverFile(), Description: desc}, nil
	}
	if o.Selection != "" {
		return nil, fmt.Errorf("no local build of %s@%s: run --build-image-local --selection=%s first", meta.Name, t.Profile, o.Selection)
	}

	raw, err := root.ReadFile(desc)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s is missing", desc)
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", desc, err)
	}
	data, err := mirror.Substitute(raw)
	if err != nil {
		return nil, err
	}
	d, err := buildroot.ParseDescription(data)
	if err != nil {
		return nil, err
	}
	p, err := d.Profile(t.Profile)
	if err != nil {
		return nil, err
	}
	deps, err := buildroot.BuildDeps(o.Dir, p.Arch)
	if err != nil {
		return nil, err
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
	return &Dependencies{Requested: &r, Description: desc}, nil
}
