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
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cloud-builder/cb/internal/buildroot"
	"github.com/cloud-builder/cb/internal/sandbox"
)

func init() { buildroot.Register(Backend{}) }

// Backend runs mmdebstrap.
type Backend struct{}

var _ buildroot.InRange = Backend{}

// Name implements buildroot.Backend.
func (Backend) Name() string { return buildroot.BackendNative }

// CreatesInRange implements buildroot.InRange: with an id range in the
// request, mmdebstrap runs in its unshare mode as root of a user
// namespace mapped to the range, as sbuild's unshare mode does. Maintainer
// scripts, from whatever repository the description names, then have no
// privilege on the host, and the root comes out owned by the range.
func (Backend) CreatesInRange() bool { return true }

// Create implements buildroot.Backend. With r.Downloads, the .deb files of
// earlier roots are hard-linked into the new root's apt archive before
// mmdebstrap runs (apt then downloads only what is missing), and the ones
// it fetched are linked back afterwards. Hard links cost no copying, and
// apt checks every archive against the repository's hashes before use.
func (Backend) Create(ctx context.Context, r buildroot.CreateRequest) error {
	p, deps, dir, downloads, log := r.Profile, r.Deps, r.Dir, r.Downloads, r.Log
	inRange := r.IDs.Count != 0
	target, prof := dir, p
	var binds []buildroot.Bind
	if inRange {
		// The range's root may not be able to reach the cache through
		// its parents, nor the runner's repository keys: mmdebstrap sees
		// both through binds.
		target = buildroot.BindPath("root")
		binds = append(binds, buildroot.Bind{Source: dir, Name: "root"})
		cp := *p
		cp.Repositories = slices.Clone(p.Repositories)
		for i := range cp.Repositories {
			if k := cp.Repositories[i].SignedBy; k != "" {
				name := fmt.Sprintf("key-%d.gpg", i)
				binds = append(binds, buildroot.Bind{Source: k, Name: name})
				cp.Repositories[i].SignedBy = buildroot.BindPath(name)
			}
		}
		prof = &cp
	}
	argv, err := Command(prof, deps, target, inRange)
	if err != nil {
		return err
	}
	if r.KeepIndexes {
		// A base layer: layers on it install from these indexes.
		argv = append(argv[:1], append([]string{"--skip=cleanup/apt/lists"}, argv[1:]...)...)
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
	o := buildroot.ExecOptions{PrivateMounts: true, Isolate: true, Repositories: buildroot.RepositoryURLs(p), UserNS: r.IDs, Binds: binds,
		// HOME is where dpkg and apt look for user settings; the range's
		// root may not read the host root's.
		Env: []string{"HOME=/nonexistent"}}
	if inRange {
		// The root of the namespace must own the tree it fills; the
		// downloaded archives linked in stay the host's, read-only to it.
		if err := ownTop(dir, filepath.Join(dir, archives), r.IDs); err != nil {
			return fmt.Errorf("create buildroot with mmdebstrap: %w", err)
		}
	}
	if err := buildroot.Exec(ctx, log, o, argv...); err != nil {
		return fmt.Errorf("create buildroot with mmdebstrap: %w", err)
	}
	if downloads == "" {
		return nil
	}
	n, err := keepDebs(dir, archives, downloads, r.IDs)
	if err != nil {
		return fmt.Errorf("keep downloaded packages: %w", err)
	}
	fmt.Fprintf(log, "kept %d newly downloaded packages in %s\n", n, downloads)
	if err := pruneDebs(downloads, maxUnused); err != nil {
		fmt.Fprintf(log, "warning: prune %s: %v\n", downloads, err)
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

// ownTop gives dir and the directories from dir down to below (which the
// download cache created) to the range's root.
func ownTop(dir, below string, ids sandbox.IDMap) error {
	p := below
	for {
		if err := os.Lchown(p, int(ids.UID), int(ids.GID)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		if p == dir || len(p) <= len(dir) {
			return nil
		}
		p = filepath.Dir(p)
	}
}

// keepDebs hard-links the packages apt downloaded into the root's archive
// (rel, below dir) into downloads, makes them the host root's and
// read-only, and empties the archive: a buildroot carries no package
// cache, as with mmdebstrap's default cleanup. It returns how many it
// kept.
//
// The root's tree was written by maintainer scripts, so every path is
// resolved beneath dir (a link pointing out of it is an error), and only
// files with one link whose owner is the range's are taken: nothing of
// the host is ever linked or given to the host's root.
func keepDebs(dir, rel, downloads string, ids sandbox.IDMap) (int, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return 0, err
	}
	defer root.Close()
	d, err := root.Open(rel)
	if err != nil {
		return 0, err
	}
	ents, err := d.ReadDir(-1)
	d.Close()
	if err != nil {
		return 0, err
	}
	n := 0
	var errs []error
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".deb") {
			continue
		}
		name := filepath.Join(rel, e.Name())
		kept, err := keepDeb(root, name, filepath.Join(downloads, e.Name()), ids)
		if err != nil {
			errs = append(errs, err)
		}
		if kept {
			n++
		}
		if err := root.Remove(name); err != nil {
			errs = append(errs, fmt.Errorf("clean apt archive: %w", err))
		}
	}
	return n, errors.Join(errs...)
}

func keepDeb(root *os.Root, name, dst string, ids sandbox.IDMap) (bool, error) {
	f, err := root.OpenFile(name, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		// A symlink or something else that is no package.
		return false, nil
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return false, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || !fi.Mode().IsRegular() || st.Nlink != 1 {
		// Linked in from downloads (or a link to anything else).
		return false, nil
	}
	if ids.Count != 0 && (st.Uid < ids.UID || st.Uid-ids.UID >= ids.Count) {
		return false, nil
	}
	// Link the open file itself, so no path is resolved twice.
	err = unix.Linkat(unix.AT_FDCWD, fmt.Sprintf("/proc/self/fd/%d", f.Fd()), unix.AT_FDCWD, dst, unix.AT_SYMLINK_FOLLOW)
	switch {
	case errors.Is(err, fs.ErrExist):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("keep %s: %w", filepath.Base(name), err)
	}
	if err := f.Chown(0, 0); err != nil {
		return true, fmt.Errorf("keep %s: %w", filepath.Base(name), err)
	}
	if err := f.Chmod(0o644); err != nil {
		return true, fmt.Errorf("keep %s: %w", filepath.Base(name), err)
	}
	return true, nil
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

// options of every mmdebstrap run for a shorter cold path, measured one by
// one with BenchmarkColdLevers (numbers in bench/README.md):
//   - dpkg's force-unsafe-io and, with mmdebstrap's eatmydata hooks
//     installed, eatmydata: a buildroot is thrown away or reused read-only,
//     so durability of each unpacked file is not worth an fsync;
//   - no translated package descriptions from the repository indexes;
//   - no manuals, info pages, docs (except the copyright files) and
//     translations: builds do not read them, and leaving them out saves
//     unpacking thousands of files (as Debian's slim images do). dpkg
//     learns the excludes from slimHook only after mmdebstrap extracted
//     the essential set, which it would otherwise filter through its tar
//     filter (6 s of a 60 s cold base here);
//   - man-db's index is not rebuilt, since there are no manuals.
//
// Options that change what a root holds (the path excludes, man-db's
// setting) are part of its cache key through KeyOptions: a root made
// under other options is not reused.
func options() []string {
	o := []string{
		"--dpkgopt=force-unsafe-io",
		aptNoLanguages,
		slimHook(),
		manDBHook,
	}
	if fi, err := os.Stat(eatmydataHooks); err == nil && fi.IsDir() {
		// mmdebstrap installs eatmydata only for the run.
		o = append(o, "--hook-dir="+eatmydataHooks)
	}
	return o
}

// slimHook gives dpkg the path excludes only after mmdebstrap extracted
// the essential set (whose copies of the excluded files it removes), so
// that extraction runs without mmdebstrap's tar filter.
func slimHook() string {
	quoted := []string{}
	for _, o := range slimOptions() {
		quoted = append(quoted, "'"+o+"'")
	}
	dirs := []string{}
	for _, p := range slimPaths {
		if p != "doc" {
			dirs = append(dirs, "usr/share/"+p+"/*")
		}
	}
	return `--extract-hook=set -e; cd "$1"; mkdir -p etc/dpkg/dpkg.cfg.d; printf '%s\n' ` + strings.Join(quoted, " ") +
		` > etc/dpkg/dpkg.cfg.d/99cloud-builder-slim; rm -rf ` + strings.Join(dirs, " ") +
		`; if [ -d usr/share/doc ]; then find usr/share/doc ! -type d ! -name copyright -delete; fi`
}

// slimOptions are dpkg's options for the path excludes, in order.
func slimOptions() []string {
	o := []string{}
	for _, p := range slimPaths {
		o = append(o, "path-exclude=/usr/share/"+p+"/*")
	}
	return append(o, "path-include=/usr/share/doc/*/copyright")
}

var slimPaths = []string{"man", "doc", "info", "locale"}

const (
	aptNoLanguages = `--aptopt=Acquire::Languages "none"`
	manDBHook      = `--essential-hook=echo "man-db man-db/auto-update boolean false" | chroot "$1" debconf-set-selections`
)

// KeyOptions implements buildroot.Keyed: the options of options, so a
// change of them gives new cache keys. The eatmydata hooks are left out:
// whether this host has them changes how fast a root is made, not what
// it holds.
func (Backend) KeyOptions() string {
	o := slices.DeleteFunc(options(), func(s string) bool { return strings.HasPrefix(s, "--hook-dir=") })
	return strings.Join(o, "\n")
}

// Command is the mmdebstrap argument vector for the profile; unshare
// selects mmdebstrap's mode for a run as root of a user namespace.
func Command(p *buildroot.Profile, deps []string, dir string, unshare bool) ([]string, error) {
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
	mode := "--mode=root"
	if unshare {
		// Run as root of a user namespace (see CreatesInRange), where
		// mknod is not allowed: unshare mode binds device nodes instead.
		mode = "--mode=unshare"
	}
	argv := []string{"mmdebstrap",
		mode,
		"--variant=apt",
		"--format=directory",
		"--architectures=" + buildroot.DebianArch(p.Arch),
		"--components=" + strings.Join(components, ","),
	}
	argv = append(argv, options()...)
	if len(include) > 0 {
		argv = append(argv, "--include="+strings.Join(include, ","))
	}
	argv = append(argv, suite, dir)
	argv = append(argv, mirrors...)
	return argv, nil
}
