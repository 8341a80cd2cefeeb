package buildroot

import (
	"bufio"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/cloud-builder/cb/internal/sandbox"
	"github.com/cloud-builder/cb/internal/target"
)

// Layered roots. A backend that implements LayerBackend builds a root in
// two cached layers instead of one whole root per target:
//
//   - a base layer per (profile, arch, package manager, repositories with
//     their index digests, backend, base package set: the description's
//     bootstrap and image packages plus BasePackages), made by Create as
//     a whole root is, with the repositories' indexes kept;
//   - a target layer on top, keyed by the base layer (key and generation),
//     the target's build dependencies and its project repositories: the
//     upper dir of an overlay on the base in which the backend installs
//     the build dependencies.
//
// Targets with the same dependency set on the same base share their
// target layer; a new package on a known base costs only the install of
// its delta. Both layers are ordinary cache entries (locks, generations,
// refs, eviction); a layout's Lower names both, topmost first.

// LayerBackend is implemented by backends that can add a layer to a root.
// They create base layers (Create with KeepIndexes) and target layers as
// the request's id range, as an InRange backend does.
type LayerBackend interface {
	Backend
	// CreateLayer installs r.Deps (and the packages of the profile's
	// repositories they need) into the root r.Base, writing every change
	// into r.Dir, the upper dir of an overlay on r.Base. r.Base is never
	// written to.
	CreateLayer(ctx context.Context, r LayerRequest) error
}

// LayerRequest is what a backend gets to create a target layer. Its
// Profile lists the repositories of the base and, after them, the ones
// only the layer uses (Extra of them, at the end).
type LayerRequest struct {
	CreateRequest
	// Base is the base layer's root.
	Base string
	// Work is an empty directory on Dir's file system for the overlay.
	Work string
	// Extra is how many repositories at the end of Profile.Repositories
	// the base layer does not know (the target's project repositories).
	Extra int
}

// BasePackages are installed into every base layer besides the
// description's packages: what the build of every Debian source needs.
var BasePackages = []string{"build-essential"}

// needsProjectRepos marks a base layer key (without project repositories)
// whose creation failed for a target with project repositories.
const needsProjectRepos = "needs-project-repositories"

// layerFormat changes whenever what a layer contains changes in a way the
// other key inputs do not capture.
const layerFormat = 1

// baseProfile is p as its base layer is made: the repositories the
// description names and the base package set.
func baseProfile(p *Profile) *Profile {
	cp := *p
	cp.Packages = slices.Clone(p.Packages)
	for _, n := range BasePackages {
		if !slices.Contains(cp.Packages, n) && !slices.Contains(cp.Bootstrap, n) {
			cp.Packages = append(cp.Packages, n)
		}
	}
	return &cp
}

// sortedSet returns the sorted distinct names.
func sortedSet(names []string) []string {
	out := slices.Clone(names)
	sort.Strings(out)
	return slices.Compact(out)
}

// hashRepositories writes every repository with its index digest to h.
func hashRepositories(ctx context.Context, h io.Writer, repos []Repository, step func(string, ...any)) error {
	for _, r := range repos {
		sum := r.KeyDigest
		if sum == "" {
			var err error
			if sum, err = IndexDigest(ctx, r); err != nil {
				return err
			}
		}
		step("repository %s %s: index sha256 %s", r.Path, r.Distribution, sum)
		fmt.Fprintf(h, "repository %s %s %s %s %s\n", r.Type, r.Path, r.Distribution, strings.Join(r.Components, ","), sum)
	}
	return nil
}

// hashProjectRPMs writes the project rpm packages a root or layer takes
// from the verified rpm-md repositories (name, version, checksum) to h,
// if there are any: a new version of one gives a new root.
func hashProjectRPMs(h io.Writer, rpms *projectRPMs, step func(string, ...any)) {
	if rpms == nil {
		return
	}
	sum := rpms.Digest()
	step("project rpm packages: sha256 %s", sum)
	fmt.Fprintf(h, "project-rpms %s\n", sum)
}

// baseLayerKey hashes everything the content of a base layer depends on.
// base is the profile as baseProfile returns it. The description enters
// by what the backend takes from it (profile, architecture, package
// manager, repositories, packages), so every description that asks for
// the same base shares it.
func baseLayerKey(ctx context.Context, backend Backend, base *Profile, step func(string, ...any)) (string, error) {
	h := sha256.New()
	fmt.Fprintf(h, "layer base\nformat %d %d\nbackend %s\nprofile %s\narch %s\npackage manager %s\n",
		keyFormat, layerFormat, backendKey(backend), base.Name, base.Arch, base.PackageManager)
	if err := hashRepositories(ctx, h, base.Repositories, step); err != nil {
		return "", err
	}
	fmt.Fprintf(h, "bootstrap %s\n", strings.Join(sortedSet(base.Bootstrap), ","))
	fmt.Fprintf(h, "packages %s\n", strings.Join(sortedSet(base.Packages), ","))
	return fmt.Sprintf("%x", h.Sum(nil)), nil
}

// targetLayerKey hashes what a target layer depends on: its base layer
// (key and generation: a rebuilt base gets new target layers), the
// target's build dependencies, the repositories only the layer uses and
// the project rpm packages it installs (name, version, checksum).
func targetLayerKey(ctx context.Context, baseKey, baseGen string, deps []string, extra []Repository, rpms *projectRPMs, step func(string, ...any)) (string, error) {
	h := sha256.New()
	fmt.Fprintf(h, "layer target\nformat %d %d\nbase %s %s\n", keyFormat, layerFormat, baseKey, baseGen)
	if err := hashRepositories(ctx, h, extra, step); err != nil {
		return "", err
	}
	fmt.Fprintf(h, "deps %s\n", strings.Join(sortedSet(deps), ","))
	hashProjectRPMs(h, rpms, step)
	return fmt.Sprintf("%x", h.Sum(nil)), nil
}

// layered reports whether Prepare builds the root in layers: the backend
// can, and the process is root (the overlay of a layer is mounted by the
// host's root; builds without root have no id range either).
func layered(b Backend) (LayerBackend, bool) {
	lb, ok := b.(LayerBackend)
	return lb, ok && os.Geteuid() == 0
}

// layerEnv is what prepareLayered needs of Prepare.
type layerEnv struct {
	opts    Options
	c       cache
	backend LayerBackend
	prof    *Profile     // without the project repositories
	extra   []Repository // the project repositories
	rpms    *projectRPMs // the project rpm packages of a spec target
	deps    []string
	kind    string
	pkgDir  string
	t       target.Target
	step    func(string, ...any)
	logger  *slog.Logger
	logw    io.Writer
}

// ensureLayer returns the current generation of key, creating it with
// create (which returns the packages it installed besides the root's
// package manager, as for cache.build) when the cache lacks it, fresh
// asks for a new one, or it belongs to another id range. The caller holds
// the key lock; ensureLayer takes the key's use lock for the rest of the
// process, so the evictor leaves the layer alone once the key lock goes.
func (e *layerEnv) ensureLayer(ctx context.Context, what, key string, fresh bool, create func(dir string) (map[string]InstalledPackage, error),
	list func(ctx context.Context, dir string) (map[string]InstalledPackage, error)) (gen string, hit bool, err error) {
	c := e.c
	if err := c.hold(ctx, key); err != nil {
		return "", false, err
	}
	gen = c.current(key)
	otherRange := gen != "" && rangeOf(filepath.Join(c.keyDir(key), gen)) != rangeString(e.opts.IDs)
	if gen != "" && !fresh && !otherRange {
		e.logger.Info("buildroot cache hit", "layer", what, "key", key, "backend", e.backend.Name())
		e.step("buildroot cache hit (%s layer): reusing %s", what, filepath.Join(c.keyDir(key), gen))
		c.touch(key)
		return gen, true, nil
	}
	reason := "not cached"
	switch {
	case otherRange:
		reason = "cached layer belongs to another id range"
	case gen != "":
		reason = "fresh root requested"
	}
	e.logger.Info("buildroot cache miss", "layer", what, "key", key, "backend", e.backend.Name(), "reason", reason)
	e.step("buildroot cache miss (%s layer, %s): creating it with %s", what, reason, e.backend.Name())
	created := time.Now()
	ctx, cancel := context.WithTimeoutCause(ctx, e.opts.Timeout, fmt.Errorf("%w after %s", ErrTimeout, e.opts.Timeout))
	defer cancel()
	gen, err = c.buildList(ctx, key, func(dir string) (map[string]InstalledPackage, error) {
		if !e.opts.NoDownloadCache {
			// The evictor leaves the downloads alone meanwhile.
			unlock, err := c.useDownloads(ctx, e.backend.Name())
			if err != nil {
				return nil, err
			}
			defer unlock()
		}
		pkgs, err := create(dir)
		if err != nil {
			return nil, err
		}
		// Created as the range: no walk needed.
		return pkgs, markRange(dir, e.opts.IDs)
	}, list)
	if err != nil {
		return "", false, fmt.Errorf("%s layer: %w", what, err)
	}
	e.step("%s layer created in %.1fs", what, time.Since(created).Seconds())
	c.touch(key)
	return gen, false, nil
}

// downloads returns the backend's download cache, or "" without one.
func (e *layerEnv) downloads() (string, error) {
	if e.opts.NoDownloadCache {
		return "", nil
	}
	d := filepath.Join(e.c.dir, "downloads", e.backend.Name())
	return d, os.MkdirAll(d, 0o755)
}

// prepareLayered is Prepare for a LayerBackend: it takes or makes the
// base layer and the target layer, stages the target and writes its
// solver file and layout.
func prepareLayered(ctx context.Context, e *layerEnv) (*Layout, error) {
	c, step := e.c, e.step
	downloads, err := e.downloads()
	if err != nil {
		return nil, err
	}
	base := baseProfile(e.prof)
	extra := e.extra
	bkey, err := baseLayerKey(ctx, e.backend, base, step)
	if err != nil {
		return nil, err
	}
	// A description may name a package only a project repository has:
	// its base layer is then made with the project repositories, and
	// keyed by their indexes too. A base that failed so is marked, so
	// later prepares go there at once.
	marker := filepath.Join(c.keyDir(bkey), needsProjectRepos)
	var bgen string
	var bhit bool
	var basePkgs map[string]InstalledPackage
	if _, merr := os.Stat(marker); merr != nil || len(extra) == 0 {
		bgen, bhit, basePkgs, err = e.baseLayer(ctx, bkey, base, downloads)
	}
	if (err != nil || bgen == "") && len(extra) > 0 && ctx.Err() == nil {
		if err != nil {
			step("the base layer cannot be made from the description's repositories alone (%v)", err)
			if werr := os.WriteFile(marker, nil, 0o644); werr != nil {
				e.logger.Warn("mark base layer", "err", werr)
			}
		}
		step("making the base layer with the project repositories")
		base.Repositories = append(slices.Clone(base.Repositories), extra...)
		extra = nil
		if bkey, err = baseLayerKey(ctx, e.backend, base, step); err != nil {
			return nil, err
		}
		bgen, bhit, basePkgs, err = e.baseLayer(ctx, bkey, base, downloads)
	}
	if err != nil {
		return nil, err
	}
	bdir := filepath.Join(c.keyDir(bkey), bgen)

	provided, err := installedNames(bdir)
	if err != nil {
		return nil, fmt.Errorf("read base layer: %w", err)
	}
	var missing []string
	for _, d := range e.deps {
		if !provided[d] {
			missing = append(missing, d)
		}
	}
	keys := []string{bkey}
	lowers := []string{bdir}
	pkgs, hit := basePkgs, bhit
	layers := map[string]bool{"base": bhit}
	var unlockTarget func()
	if len(missing) == 0 && len(extra) == 0 && e.rpms == nil {
		step("the base layer has every build dependency: no target layer")
	} else {
		if len(missing) > 0 {
			step("build dependencies not in the base layer: %s", strings.Join(missing, " "))
		}
		tkey, err := targetLayerKey(ctx, bkey, bgen, e.deps, extra, e.rpms, step)
		if err != nil {
			return nil, err
		}
		step("target layer key %s", tkey)
		unlockTarget, _, err = c.lockKey(ctx, tkey, true)
		if err != nil {
			return nil, err
		}
		prof := *e.prof
		prof.Repositories = append(slices.Clone(base.Repositories), extra...)
		tgen, thit, err := e.ensureLayer(ctx, "target", tkey, false, func(dir string) (map[string]InstalledPackage, error) {
			if len(missing) > 0 || len(extra) > 0 {
				work := dir + ".work"
				if err := os.Mkdir(work, 0o700); err != nil {
					return nil, err
				}
				defer removeAll(work)
				if err := e.backend.CreateLayer(ctx, LayerRequest{
					CreateRequest: CreateRequest{Profile: &prof, Deps: e.deps, Dir: dir, Downloads: downloads, IDs: e.opts.IDs, Log: e.logw},
					Base:          bdir, Work: work, Extra: len(extra),
				}); err != nil {
					return nil, err
				}
			}
			if e.rpms == nil {
				return nil, nil
			}
			// The overlay shows the layer's root directory as the
			// upper dir's: the base's owner and mode.
			if err := matchDir(bdir, dir); err != nil {
				return nil, err
			}
			step("installing %d project packages with rpm", len(e.rpms.Packages))
			if err := installProjectRPMs(ctx, e.rpms, dir, bdir, c.dir, e.opts.IDs, e.logw); err != nil {
				return nil, err
			}
			return e.rpms.installed(), nil
		}, func(ctx context.Context, dir string) (map[string]InstalledPackage, error) {
			// dpkg rewrote its status in the layer, unless the layer
			// installed nothing.
			if _, err := os.Lstat(filepath.Join(dir, "var/lib/dpkg/status")); err == nil {
				return InstalledPackages(ctx, dir)
			}
			return InstalledPackages(ctx, bdir)
		})
		if err != nil {
			unlockTarget()
			return nil, err
		}
		keys = append([]string{tkey}, keys...)
		lowers = append([]string{filepath.Join(c.keyDir(tkey), tgen)}, lowers...)
		hit = hit && thit
		layers["target"] = thit
		if pkgs, err = c.packages(tkey, tgen); err != nil {
			unlockTarget()
			return nil, err
		}
	}
	if unlockTarget != nil {
		defer unlockTarget()
	}
	// Hold the base until the layout that points at it is recorded.
	unlockBase, _, err := c.lockKey(ctx, bkey, true)
	if err != nil {
		return nil, err
	}
	defer unlockBase()
	if fi, err := os.Stat(bdir); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("base layer %s was replaced while the target layer was made; prepare again", bdir)
	}
	l := newLayout(e.t, e.kind, e.prof, e.backend)
	l.Lower, l.CacheKey, l.CacheHit, l.Layers = strings.Join(lowers, ":"), keys[0], hit, layers
	if err := stageTarget(ctx, l, e.pkgDir, e.t, step, c.dir); err != nil {
		return nil, err
	}
	if err := sandbox.ShiftOwner(l.Upper, e.opts.IDs); err != nil {
		return nil, err
	}
	step("buildroot layers and sources belong to the build's id range %s", rangeString(e.opts.IDs))
	if err := c.record(e.t, l, pkgs, keys, step, e.logger); err != nil {
		return nil, err
	}
	return l, nil
}

// baseLayer takes the base layer for base from the cache or makes it.
// The base lock is not held when it returns (other targets on this base
// go on while the caller makes its target layer): a base generation is
// only replaced by a fresh prepare, which the caller checks for later.
func (e *layerEnv) baseLayer(ctx context.Context, key string, base *Profile, downloads string) (gen string, hit bool, pkgs map[string]InstalledPackage, err error) {
	e.step("base layer key %s (packages: %s)", key, strings.Join(sortedSet(append(slices.Clone(base.Bootstrap), base.Packages...)), " "))
	unlock, _, err := e.c.lockKey(ctx, key, true)
	if err != nil {
		return "", false, nil, err
	}
	defer unlock()
	gen, hit, err = e.ensureLayer(ctx, "base", key, e.opts.Fresh, func(dir string) (map[string]InstalledPackage, error) {
		return nil, e.backend.Create(ctx, CreateRequest{Profile: base, Dir: dir, Downloads: downloads,
			IDs: e.opts.IDs, KeepIndexes: true, Log: e.logw})
	}, InstalledPackages)
	if err != nil {
		return "", false, nil, err
	}
	pkgs, err = e.c.packages(key, gen)
	if err != nil {
		return "", false, nil, err
	}
	return gen, hit, pkgs, nil
}

// installedNames returns the names of the packages installed in root and
// of the virtual packages they provide (debhelper provides
// debhelper-compat): what a build dependency, whose version constraint
// is dropped as for any root, finds there.
func installedNames(root string) (map[string]bool, error) {
	r, err := os.OpenRoot(root)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	f, err := r.Open("var/lib/dpkg/status")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	names := map[string]bool{}
	var pkg, provides string
	installed := false
	flush := func() {
		if installed && pkg != "" {
			names[pkg] = true
			for _, p := range strings.Split(provides, ",") {
				n := strings.TrimSpace(p)
				if i := strings.IndexAny(n, " ("); i >= 0 {
					n = n[:i]
				}
				if n != "" {
					names[n] = true
				}
			}
		}
		pkg, provides, installed = "", "", false
	}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			flush()
		case strings.HasPrefix(line, "Package:"):
			pkg = strings.TrimSpace(strings.TrimPrefix(line, "Package:"))
		case strings.HasPrefix(line, "Status:"):
			installed = strings.HasSuffix(strings.TrimSpace(line), " installed")
		case strings.HasPrefix(line, "Provides:"):
			provides = strings.TrimPrefix(line, "Provides:")
		}
	}
	flush()
	return names, sc.Err()
}

// matchDir gives the directory dst the owner and mode of src.
func matchDir(src, dst string) error {
	fi, err := os.Stat(src)
	if err != nil {
		return err
	}
	st := fi.Sys().(*syscall.Stat_t)
	if err := os.Lchown(dst, int(st.Uid), int(st.Gid)); err != nil {
		return err
	}
	return os.Chmod(dst, fi.Mode()&(fs.ModePerm|fs.ModeSticky|fs.ModeSetgid))
}
