// Package native creates apt buildroots with mmdebstrap, which resolves
// the whole package set with apt up front and installs it in one run,
// where kiwi runs debootstrap first and apt in a chroot afterwards. It
// also leaves out manuals, docs and translations and skips fsyncs, and
// reuses downloaded packages between roots.
//
// Importing the package registers the backend as "native" with
// buildroot.Register.
package native

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/cloud-builder/cb/internal/buildroot"
)

func init() { buildroot.Register(Backend{}) }

// Backend runs mmdebstrap.
type Backend struct{}

var _ buildroot.DownloadCacher = Backend{}

// Name implements buildroot.Backend.
func (Backend) Name() string { return buildroot.BackendNative }

// Create implements buildroot.Backend.
func (b Backend) Create(ctx context.Context, p *buildroot.Profile, deps []string, dir string, log io.Writer) error {
	return b.CreateCached(ctx, p, deps, dir, "", log)
}

// CreateCached implements buildroot.DownloadCacher: the .deb files of
// downloads are hard-linked into the new root's apt archive before
// mmdebstrap runs (apt then downloads only what is missing), and the ones
// it fetched are linked back afterwards. Hard links cost no copying, and
// apt checks every archive against the repository's hashes before use.
func (Backend) CreateCached(ctx context.Context, p *buildroot.Profile, deps []string, dir, downloads string, log io.Writer) error {
	argv, err := Command(p, deps, dir)
	if err != nil {
		return err
	}
	if downloads != "" {
		n, err := linkDebs(downloads, filepath.Join(dir, archives))
		if err != nil {
			return fmt.Errorf("reuse downloaded packages: %w", err)
		}
		fmt.Fprintf(log, "reusing %d downloaded packages from %s\n", n, downloads)
		// The root is not empty any more (it holds the archive), and the
		// archive must survive until it is linked back.
		argv = append(argv[:1], append([]string{"--skip=check/empty", "--skip=essential/unlink", "--skip=cleanup/apt/cache"}, argv[1:]...)...)
	}
	// Private mounts: mmdebstrap mounts /proc, /sys and /dev binds into
	// the root; a killed run must not leave them behind.
	if err := buildroot.Exec(ctx, log, buildroot.ExecOptions{PrivateMounts: true, Isolate: true, Repositories: buildroot.RepositoryURLs(p)}, argv...); err != nil {
		return fmt.Errorf("create buildroot with mmdebstrap: %w", err)
	}
	if downloads == "" {
		return nil
	}
	n, err := linkDebs(filepath.Join(dir, archives), downloads)
	if err != nil {
		return fmt.Errorf("keep downloaded packages: %w", err)
	}
	fmt.Fprintf(log, "kept %d newly downloaded packages in %s\n", n, downloads)
	if err := pruneDebs(downloads, maxUnused); err != nil {
		fmt.Fprintf(log, "warning: prune %s: %v\n", downloads, err)
	}
	// A buildroot carries no package cache, as with mmdebstrap's default cleanup.
	debs, _ := filepath.Glob(filepath.Join(dir, archives, "*.deb"))
	for _, d := range debs {
		if err := os.Remove(d); err != nil {
			return fmt.Errorf("clean apt archive: %w", err)
		}
	}
	return nil
}

const archives = "var/cache/apt/archives"

// eatmydataHooks ships with mmdebstrap.
const eatmydataHooks = "/usr/share/mmdebstrap/hooks/eatmydata"

// maxUnused is how long a downloaded package stays without being used.
const maxUnused = 14 * 24 * time.Hour

// linkDebs hard-links every regular *.deb of src into dst that dst lacks
// and returns how many it linked.
func linkDebs(src, dst string) (int, error) {
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return 0, err
	}
	ents, err := os.ReadDir(src)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range ents {
		if !e.Type().IsRegular() || !strings.HasSuffix(e.Name(), ".deb") {
			continue
		}
		err := os.Link(filepath.Join(src, e.Name()), filepath.Join(dst, e.Name()))
		switch {
		case err == nil:
			n++
		case errors.Is(err, fs.ErrExist):
		default:
			return n, err
		}
	}
	return n, nil
}

// pruneDebs removes packages no root linked for maxAge. Linking a file
// changes its inode's ctime, so ctime is the last use.
func pruneDebs(dir string, maxAge time.Duration) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range ents {
		fi, err := e.Info()
		if err != nil || !strings.HasSuffix(e.Name(), ".deb") {
			continue
		}
		if ct, ok := ctime(fi); ok && time.Since(ct) > maxAge {
			errs = append(errs, os.Remove(filepath.Join(dir, e.Name())))
		}
	}
	return errors.Join(errs...)
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
		line := []string{"deb", r.Path, dist}
		if r.SignedBy != "" {
			// A path without white space, chosen by the runner (never
			// from the description).
			line = []string{"deb", "[signed-by=" + r.SignedBy + "]", r.Path, dist}
		}
		mirrors = append(mirrors, strings.Join(append(line, r.Components...), " "))
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
	// Builds do not read manuals, info pages or translations; leaving them
	// out saves unpacking thousands of files (as Debian's slim images do).
	// Copyright files stay.
	for _, p := range []string{"man", "doc", "info", "locale"} {
		argv = append(argv, "--dpkgopt=path-exclude=/usr/share/"+p+"/*")
	}
	argv = append(argv, "--dpkgopt=path-include=/usr/share/doc/*/copyright",
		// Without manuals man-db's index rebuild is pure overhead.
		`--essential-hook=echo "man-db man-db/auto-update boolean false" | chroot "$1" debconf-set-selections`)
	if fi, err := os.Stat(eatmydataHooks); err == nil && fi.IsDir() {
		// eatmydata also turns off the fsyncs of apt and maintainer
		// scripts; mmdebstrap installs it only for the run.
		argv = append(argv, "--hook-dir="+eatmydataHooks)
	}
	if len(include) > 0 {
		argv = append(argv, "--include="+strings.Join(include, ","))
	}
	argv = append(argv, suite, dir)
	argv = append(argv, mirrors...)
	return argv, nil
}
