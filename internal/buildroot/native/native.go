// Package native creates apt buildroots with mmdebstrap: one pass that
// resolves and installs the whole package set with apt, without kiwi's
// debootstrap stage followed by a second apt run in a chroot.
//
// Importing the package registers the backend as "native" with
// buildroot.Register.
package native

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/cloud-builder/cb/internal/buildroot"
)

func init() { buildroot.Register(Backend{}) }

// Backend runs mmdebstrap.
type Backend struct{}

var _ buildroot.Backend = Backend{}

// Name implements buildroot.Backend.
func (Backend) Name() string { return buildroot.BackendNative }

// Create implements buildroot.Backend.
func (Backend) Create(ctx context.Context, p *buildroot.Profile, deps []string, dir string, log io.Writer) error {
	argv, err := Command(p, deps, dir)
	if err != nil {
		return err
	}
	// Private mounts: mmdebstrap mounts /proc, /sys and /dev binds into
	// the root; a killed run must not leave them behind.
	if err := buildroot.Exec(ctx, log, buildroot.ExecOptions{PrivateMounts: true}, argv...); err != nil {
		return fmt.Errorf("create buildroot with mmdebstrap: %w", err)
	}
	return nil
}

// Command is the mmdebstrap argument vector for the profile.
func Command(p *buildroot.Profile, deps []string, dir string) ([]string, error) {
	if p.PackageManager != "apt" {
		return nil, fmt.Errorf("native backend: package manager %q is not apt (use the kiwi backend)", p.PackageManager)
	}
	var mirrors []string
	var components []string
	suite := ""
	for _, r := range p.Repositories {
		if r.Type != buildroot.RepoAptDeb {
			return nil, fmt.Errorf("native backend: repository %s has type %s, not apt-deb", r.Path, r.Type)
		}
		if suite == "" && r.Distribution != "" {
			suite = r.Distribution
		}
		dist := r.Distribution
		if dist == "" {
			dist = "./"
		}
		// One sources.list line per repository: every value was validated
		// by the description parser (no white space in any of them).
		mirrors = append(mirrors, strings.Join(append([]string{"deb", r.Path, dist}, r.Components...), " "))
		for _, c := range r.Components {
			if !slices.Contains(components, c) {
				components = append(components, c)
			}
		}
	}
	if suite == "" {
		return nil, fmt.Errorf("native backend: no repository names a distribution")
	}
	var include []string
	for _, list := range [][]string{p.Bootstrap, p.Packages, deps} {
		for _, n := range list {
			if !slices.Contains(include, n) {
				include = append(include, n)
			}
		}
	}
	argv := []string{"mmdebstrap",
		"--mode=root",
		"--variant=apt",
		"--format=directory",
		"--architectures=" + buildroot.DebianArch(p.Arch),
		"--components=" + strings.Join(components, ","),
		// A buildroot is thrown away or reused read-only; durability of
		// each unpacked file is not worth an fsync.
		"--dpkgopt=force-unsafe-io",
		"--aptopt=Acquire::Languages \"none\"",
	}
	if len(include) > 0 {
		argv = append(argv, "--include="+strings.Join(include, ","))
	}
	argv = append(argv, suite, dir)
	argv = append(argv, mirrors...)
	return argv, nil
}
