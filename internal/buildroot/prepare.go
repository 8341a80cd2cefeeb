// Package buildroot creates the buildroot a package is built in, from the
// package's .cb/build_root.kiwi, and caches it: a root whose description,
// profile, build dependencies and repository indexes are unchanged is
// reused read-only as the lower dir of an overlay, so a warm rebuild costs
// little more than the compile itself (SPEC §2.2, §4 cb-prepare, §8.6).
//
// Backends that create roots live in sub-packages (kiwi, native) and
// register themselves; import them for their side effect.
package buildroot

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cloud-builder/cb/internal/cachebudget"
	"github.com/cloud-builder/cb/internal/mirror"
	"github.com/cloud-builder/cb/internal/sandbox"
	"github.com/cloud-builder/cb/internal/target"
)

// keyFormat changes whenever what a cached root contains changes in a way
// the other key inputs do not capture.
const keyFormat = 1

// Options configure Prepare.
type Options struct {
	// CacheDir holds cached roots; default <runner root>/.cache/buildroot.
	CacheDir string
	// Backend is "auto" (native for apt profiles, kiwi otherwise), "kiwi"
	// or "native".
	Backend string
	// Fresh rebuilds the root even when the cache has it (metadata change
	// or --clean) and replaces the cache entry.
	Fresh bool
	// Keep, when above 0, also caps the number of cache entries: the
	// least recently used beyond it are removed (entries a target's
	// layout still points at are kept in addition). The disk budget
	// applies either way.
	Keep int
	// Budget caps the disk the caches take (roots, downloads, kiwi's
	// shared cache); the zero value is cachebudget.DefaultPercent of the
	// file system of CacheDir. It is enforced after every prepare.
	Budget cachebudget.Size
	// NoDownloadCache makes backends download every package again instead
	// of reusing the packages earlier roots downloaded (for benchmarks of
	// a truly cold start).
	NoDownloadCache bool
	// ProjectRepos, when set, adds the target's project repositories of
	// the collector to apt buildroots (of either backend).
	ProjectRepos *ProjectRepos
	// Timeout bounds the creation of a root by a backend
	// (DefaultTimeout when 0).
	Timeout time.Duration
	// IDs is the id range builds run as (sandbox.DefaultIDs when zero):
	// cached roots and staged sources are made to belong to it.
	IDs sandbox.IDMap
	// AllowRepositories are the repository URLs (prefixes) a
	// build_root.kiwi may name besides the runner's own apt sources.
	AllowRepositories []string
	// MaxLogBytes caps what is written to Log (tool output included);
	// zero means no cap.
	MaxLogBytes int64
	// Log receives the progress the user reads (<target>.prepare.log).
	Log    io.Writer
	Logger *slog.Logger
}

// DefaultTimeout bounds the creation of one root.
const DefaultTimeout = time.Hour

// ErrTimeout is wrapped by the error of a root creation that took longer
// than Options.Timeout.
var ErrTimeout = errors.New("buildroot creation timed out")

// Prepare creates (or takes from the cache) the buildroot for target t of
// the package in pkgDir, stages the package sources and the .cb/root
// overlay in the target's upper dir, writes t.SolverFile() and
// <t.Work()>/layout.json, and returns the layout.
func Prepare(ctx context.Context, opts Options, pkgDir string, t target.Target) (*Layout, error) {
	start := time.Now()
	logw := opts.Log
	if logw == nil {
		logw = io.Discard
	}
	if opts.MaxLogBytes > 0 {
		logw = &capWriter{w: logw, left: opts.MaxLogBytes}
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.Default()
	}
	logger = logger.With("component", "buildroot", "target", t.ID())
	step := func(format string, args ...any) {
		fmt.Fprintf(logw, "[%6.1fs] %s\n", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
	}
	fail := func(err error) (*Layout, error) {
		step("FAILED: %v", err)
		return nil, fmt.Errorf("prepare buildroot %s: %w", t.ID(), err)
	}
	// Layout paths end up in a mount's data string, read by another process
	// in another working directory: make them absolute.
	if !filepath.IsAbs(t.Root) {
		abs, err := filepath.Abs(t.Root)
		if err != nil {
			return fail(err)
		}
		t.Root = abs
	}
	if opts.CacheDir == "" {
		opts.CacheDir = filepath.Join(t.Root, ".cache", "buildroot")
	}
	if abs, err := filepath.Abs(opts.CacheDir); err == nil {
		opts.CacheDir = abs
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.IDs == (sandbox.IDMap{}) {
		opts.IDs = sandbox.DefaultIDs
	}
	if err := opts.IDs.Validate(); err != nil {
		return fail(err)
	}

	step("reading %s for profile %s", DescriptionFile, t.Profile)
	raw, err := readInside(pkgDir, DescriptionFile, maxDescription)
	if err != nil {
		return fail(err)
	}
	data, err := mirror.Substitute(raw)
	if err != nil {
		return fail(err)
	}
	desc, err := ParseDescription(data)
	if err != nil {
		return fail(err)
	}
	prof, err := desc.Profile(t.Profile)
	if err != nil {
		return fail(err)
	}
	allowed, err := mirror.Sources()
	if err != nil {
		return fail(err)
	}
	allowed = append(allowed, opts.AllowRepositories...)
	if err := CheckRepositories(prof, allowed); err != nil {
		return fail(err)
	}
	backend, err := SelectBackend(opts.Backend, prof)
	if err != nil {
		return fail(err)
	}
	kind, err := SourceKind(pkgDir)
	if err != nil {
		return fail(err)
	}
	deps, err := BuildDeps(pkgDir, prof.Arch)
	if err != nil {
		return fail(err)
	}
	baseProf := *prof
	var extra []Repository
	var rpms *projectRPMs
	switch {
	case opts.ProjectRepos != nil && kind == KindSpec:
		// A spec's buildroot is a Debian root: the project's rpm packages
		// its BuildRequires name are installed into it with rpm.
		if rpms, err = projectRPMRepositories(ctx, opts.ProjectRepos, opts.CacheDir, pkgDir, t, prof, step); err != nil {
			return fail(err)
		}
	case opts.ProjectRepos != nil:
		// Both backends take them from the profile: the native one as
		// signed-by apt sources, kiwi as repositories of its description.
		extra, err = projectRepositories(ctx, opts.ProjectRepos, opts.CacheDir, pkgDir, t, prof, kind, deps, step)
		if err != nil {
			return fail(err)
		}
		// A new index of a project repository gives a new cache key:
		// a new dependency version gives a new root.
		prof.Repositories = append(prof.Repositories, extra...)
	}
	step("package manager %s, backend %s, %d repositories", prof.PackageManager, backend.Name(), len(prof.Repositories))
	step("bootstrap packages: %s", strings.Join(prof.Bootstrap, " "))
	step("image packages: %s", strings.Join(prof.Packages, " "))
	switch kind {
	case KindSpec:
		step("rpm spec: BuildRequires are installed only from the project's rpm-md repositories (a Debian buildroot cannot resolve rpm names); the description must list what else the build needs")
	default:
		step("build dependencies from the %s source: %s", kind, strings.Join(deps, " "))
	}

	c := cache{dir: opts.CacheDir}
	if err := os.MkdirAll(c.dir, 0o755); err != nil {
		return fail(fmt.Errorf("create buildroot cache: %w", err))
	}
	if lb, ok := layered(backend); ok {
		layout, err := prepareLayered(ctx, &layerEnv{opts: opts, c: c, backend: lb, prof: &baseProf, extra: extra,
			rpms: rpms, deps: deps, kind: kind, pkgDir: pkgDir, t: t, step: step, logger: logger, logw: logw})
		if err != nil {
			return fail(err)
		}
		c.keepBudget(ctx, opts, logger, step)
		step("buildroot ready (lower %s)", layout.Lower)
		return layout, nil
	}
	key, err := cacheKey(ctx, backendKey(backend), data, prof, deps, rpms, step)
	if err != nil {
		return fail(err)
	}
	step("cache key %s", key)
	unlock, _, err := c.lockKey(ctx, key, true)
	if err != nil {
		return fail(err)
	}
	layout, err := func() (*Layout, error) {
		defer unlock()
		gen := c.current(key)
		// A root shifted to another id range cannot be used by builds of
		// this one; it is built again.
		otherRange := gen != "" && rangeOf(filepath.Join(c.keyDir(key), gen)) != "" &&
			rangeOf(filepath.Join(c.keyDir(key), gen)) != rangeString(opts.IDs)
		hit := gen != "" && !opts.Fresh && !otherRange
		if hit {
			logger.Info("buildroot cache hit", "key", key, "backend", backend.Name())
			step("buildroot cache hit: reusing %s", filepath.Join(c.keyDir(key), gen))
		} else {
			reason := "not cached"
			switch {
			case otherRange:
				reason = "cached root belongs to another id range"
			case gen != "":
				reason = "fresh root requested"
			}
			logger.Info("buildroot cache miss", "key", key, "backend", backend.Name(), "reason", reason)
			step("buildroot cache miss (%s): creating the root with %s", reason, backend.Name())
			created := time.Now()
			ctx, cancel := context.WithTimeoutCause(ctx, opts.Timeout, fmt.Errorf("%w after %s", ErrTimeout, opts.Timeout))
			defer cancel()
			gen, err = c.build(ctx, key, func(dir string) (map[string]InstalledPackage, error) {
				req := CreateRequest{Profile: prof, Deps: deps, Dir: dir, Log: logw}
				if !opts.NoDownloadCache {
					req.Downloads = filepath.Join(c.dir, "downloads", backend.Name())
					if err := os.MkdirAll(req.Downloads, 0o755); err != nil {
						return nil, err
					}
					// The evictor leaves the downloads alone meanwhile.
					unlock, err := c.useDownloads(ctx, backend.Name())
					if err != nil {
						return nil, err
					}
					defer unlock()
				}
				if os.Geteuid() == 0 {
					req.IDs = opts.IDs
				}
				if err := backend.Create(ctx, req); err != nil {
					return nil, err
				}
				if r, ok := backend.(InRange); ok && r.CreatesInRange() && req.IDs.Count != 0 {
					step("root created as the build's id range %s", rangeString(req.IDs))
					// Already the range's: ownByRange need not walk it.
					if err := markRange(dir, req.IDs); err != nil {
						return nil, err
					}
				}
				if rpms == nil {
					return nil, nil
				}
				if req.IDs.Count != 0 {
					// rpm installs as the range's root.
					if err := ownByRange(dir, req.IDs); err != nil {
						return nil, err
					}
				}
				step("installing %d project packages with rpm", len(rpms.Packages))
				if err := installProjectRPMs(ctx, rpms, dir, "", c.dir, req.IDs, logw); err != nil {
					return nil, err
				}
				return rpms.installed(), nil
			})
			if err != nil {
				return nil, err
			}
			step("root created in %.1fs", time.Since(created).Seconds())
		}
		// Only root can give files away; without root there are no
		// rootless sandboxes to build in either.
		rootless := os.Geteuid() == 0
		if rootless {
			if err := ownByRange(filepath.Join(c.keyDir(key), gen), opts.IDs); err != nil {
				return nil, err
			}
		}
		c.touch(key)
		// The evictor leaves the key alone while this process runs
		// (a build that mounts the root follows in it).
		if err := c.hold(ctx, key); err != nil {
			return nil, err
		}
		l := newLayout(t, kind, prof, backend)
		l.Lower, l.CacheKey, l.CacheHit = filepath.Join(c.keyDir(key), gen), key, hit
		if err := stageTarget(ctx, l, pkgDir, t, step, c.dir); err != nil {
			return nil, err
		}
		// The sources belong to root inside the build, like the root.
		if rootless {
			if err := sandbox.ShiftOwner(l.Upper, opts.IDs); err != nil {
				return nil, err
			}
			step("buildroot and sources belong to the build's id range %s", rangeString(opts.IDs))
		}
		pkgs, err := c.packages(key, gen)
		if err != nil {
			return nil, err
		}
		if err := c.record(t, l, pkgs, []string{key}, step, logger); err != nil {
			return nil, err
		}
		return l, nil
	}()
	if err != nil {
		return fail(err)
	}
	c.keepBudget(ctx, opts, logger, step)
	step("buildroot ready (lower %s)", layout.Lower)
	return layout, nil
}

// newLayout is the layout of t for a root of backend made from prof; the
// caller sets the cached root (Lower, CacheKey, CacheHit).
func newLayout(t target.Target, kind string, prof *Profile, backend Backend) *Layout {
	return &Layout{
		Upper:          filepath.Join(t.Work(), "upper"),
		Work:           filepath.Join(t.Work(), "work"),
		Merged:         t.Dir(),
		PackageDir:     "/" + t.Name(),
		SourceKind:     kind,
		Profile:        prof.Name,
		PackageManager: prof.PackageManager,
		Backend:        backend.Name(),
	}
}

// record writes t's solver file (pkgs) and layout l, and records in each
// cache entry of keys (the root, or every layer of a layered root) that
// the layout points into it, pruning the generations nothing uses.
func (c cache) record(t target.Target, l *Layout, pkgs map[string]InstalledPackage, keys []string,
	step func(string, ...any), logger *slog.Logger) error {
	solved := Solved{SchemaVersion: SolverVersion, Profile: l.Profile, Backend: l.Backend,
		PackageManager: l.PackageManager, CacheKey: l.CacheKey, Packages: pkgs}
	if err := writeJSON(t.SolverFile(), solved); err != nil {
		return fmt.Errorf("write solver file: %w", err)
	}
	step("wrote %s (%d packages)", t.SolverFile(), len(pkgs))
	if err := writeJSON(LayoutPath(t), l); err != nil {
		return fmt.Errorf("write layout: %w", err)
	}
	for _, k := range keys {
		if err := c.addRef(k, LayoutPath(t)); err != nil {
			return fmt.Errorf("record cache use: %w", err)
		}
		if err := c.pruneGenerations(k); err != nil {
			logger.Warn("prune buildroot generations", "key", k, "err", err)
		}
	}
	return nil
}

// backendKey is the backend's part of the cache key: its name, and its
// own settings if it has any (see Keyed).
func backendKey(b Backend) string {
	if k, ok := b.(Keyed); ok {
		return b.Name() + " " + fmt.Sprintf("%x", sha256.Sum256([]byte(k.KeyOptions())))
	}
	return b.Name()
}

// cacheKey hashes everything the content of a fresh root depends on.
func cacheKey(ctx context.Context, backend string, desc []byte, p *Profile, deps []string, rpms *projectRPMs, step func(string, ...any)) (string, error) {
	h := sha256.New()
	fmt.Fprintf(h, "format %d\nbackend %s\nprofile %s\ndescription %x\n", keyFormat, backend, p.Name, sha256.Sum256(desc))
	if err := hashRepositories(ctx, h, p.Repositories, step); err != nil {
		return "", err
	}
	fmt.Fprintf(h, "deps %s\n", strings.Join(deps, ","))
	hashProjectRPMs(h, rpms, step)
	return fmt.Sprintf("%x", h.Sum(nil)), nil
}

// stageTarget resets the target's directories and fills the upper dir.
func stageTarget(ctx context.Context, l *Layout, pkgDir string, t target.Target, step func(string, ...any), cacheDir string) error {
	for _, d := range []string{t.Work(), t.Dir()} {
		if err := removeAll(d); err != nil {
			return err
		}
	}
	for _, d := range []string{l.Upper, l.Work, l.Merged} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("create target directories: %w", err)
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	dst := filepath.Join(l.Upper, t.Name())
	// A runner root or cache kept inside the package directory (a local
	// build run with --root=.) must not be copied into itself.
	skip := []string{".git"}
	absPkg, err := filepath.Abs(pkgDir)
	if err != nil {
		return err
	}
	for _, d := range []string{t.Root, cacheDir, t.Work(), t.Dir()} {
		if rel, err := filepath.Rel(absPkg, d); err == nil && rel != "." && !strings.HasPrefix(rel, "..") {
			skip = append(skip, filepath.ToSlash(rel))
		}
	}
	if err := CopyTree(pkgDir, dst, skip...); err != nil {
		return err
	}
	step("copied the package sources to %s", l.PackageDir)
	overlay := filepath.Join(pkgDir, ".cb", "root")
	fi, err := os.Lstat(overlay)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("read .cb/root: %w", err)
	case !fi.IsDir():
		return fmt.Errorf("read .cb/root: %w: not a directory", ErrUnsafeTree)
	}
	if err := CopyTree(overlay, l.Upper); err != nil {
		return err
	}
	if err := matchLowerDirs(l.Upper, l.Lower, t.Name()); err != nil {
		return err
	}
	step("copied the .cb/root overlay into the buildroot")
	return nil
}

// matchLowerDirs gives every directory of the upper dir that also exists
// in the lower root the lower one's mode and owner: git does not keep
// directory modes, and an upper directory's attributes win in the overlay
// (a .cb/root/tmp would otherwise turn /tmp from 1777 into 0755).
func matchLowerDirs(upper, lower, skip string) error {
	// The lower root was made by package maintainer scripts: its paths
	// are resolved beneath it, so a link there cannot show a host file's
	// attributes. A layered root's directory shows the attributes of the
	// topmost layer that has it.
	var layers []*os.Root
	for _, dir := range strings.Split(lower, ":") {
		lr, err := os.OpenRoot(dir)
		if err != nil {
			return fmt.Errorf("stage overlay: %w", err)
		}
		defer lr.Close()
		layers = append(layers, lr)
	}
	ur, err := os.OpenRoot(upper)
	if err != nil {
		return fmt.Errorf("stage overlay: %w", err)
	}
	defer ur.Close()
	return fs.WalkDir(ur.FS(), ".", func(rel string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			return nil
		}
		if rel == skip {
			return fs.SkipDir
		}
		var fi fs.FileInfo
		for _, lr := range layers {
			if f, err := lr.Lstat(rel); err == nil {
				fi = f
				break
			}
		}
		if fi == nil || !fi.IsDir() {
			return nil
		}
		st := fi.Sys().(*syscall.Stat_t)
		if err := ur.Lchown(rel, int(st.Uid), int(st.Gid)); err != nil {
			return fmt.Errorf("stage overlay: %w", err)
		}
		return ur.Chmod(rel, fi.Mode()&(fs.ModePerm|fs.ModeSticky|fs.ModeSetgid))
	})
}

// capWriter passes writes on until its budget is spent, then notes the cut
// once and swallows the rest without failing the writer (a tool must not
// die of a full log).
type capWriter struct {
	mu   sync.Mutex
	w    io.Writer
	left int64
	cut  bool
}

func (c *capWriter) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cut {
		return len(p), nil
	}
	if int64(len(p)) > c.left {
		_, _ = c.w.Write(p[:c.left])
		_, _ = io.WriteString(c.w, "\n[prepare log truncated: it reached its size limit]\n")
		c.cut = true
		return len(p), nil
	}
	c.left -= int64(len(p))
	_, err := c.w.Write(p)
	return len(p), err
}
