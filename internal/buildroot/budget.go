package buildroot

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cloud-builder/cb/internal/cachebudget"
	"github.com/cloud-builder/cb/internal/proc"
)

// The disk budget (see cachebudget) covers three kinds of entry:
//
//	root       a key directory below CacheDir, with its generations
//	downloads  a .deb of <CacheDir>/downloads/<backend>/
//	kiwi       kiwi's shared cache (a backend's CacheSources)
//
// What protects an entry from eviction:
//
//	root       the key lock (a prepare of the key, a half-written
//	           generation) and the use lock locks/<key>.use, held shared
//	           by every process that prepared or loaded a layout of the
//	           key, until it ends (a job prepares and builds in one
//	           process); roots a target's layout.json points at go only
//	           after all others
//	downloads  locks/downloads-<backend>.lock, held shared while a
//	           backend creates a root with the downloads
//	kiwi       the backend's own lock on its shared cache
//
// The evictor takes each lock without waiting and passes over an entry
// whose lock is taken.

// Kinds of cache entry in the budget's metrics.
const (
	KindRoot      = "root"
	KindDownloads = "downloads"
)

// CacheOwner is implemented by backends that keep a cache outside
// CacheDir (kiwi's shared cache): its entries count against the budget.
type CacheOwner interface {
	CacheSources() []cachebudget.Source
}

// backendCaches includes the caches backends keep outside CacheDir in
// BudgetSources. Those are the machine's (kiwi's shared cache below
// /var/cache/kiwi): the package's tests, which evict with budgets of a
// few bytes, leave them out.
var backendCaches = true

// BudgetSources are the sources of every cache a runner with cacheDir
// keeps: its roots, the downloads of each registered backend and the
// backends' own caches.
func BudgetSources(cacheDir string) []cachebudget.Source {
	c := cache{dir: cacheDir}
	srcs := []cachebudget.Source{rootSource{c}}
	backendsMu.RLock()
	var names []string
	for n := range backends {
		names = append(names, n)
	}
	sort.Strings(names)
	var owned []cachebudget.Source
	for _, n := range names {
		srcs = append(srcs, downloadSource{c: c, backend: n})
		if o, ok := backends[n].(CacheOwner); ok && backendCaches {
			owned = append(owned, o.CacheSources()...)
		}
	}
	backendsMu.RUnlock()
	return append(srcs, owned...)
}

// EnforceBudget keeps the caches of cacheDir (see BudgetSources) within
// budget, removing least recently used entries that nothing uses. Its
// state, read by the scheduler's metrics, is <cacheDir>/budget.json.
func EnforceBudget(ctx context.Context, cacheDir string, budget cachebudget.Size, logger *slog.Logger) (*cachebudget.Result, error) {
	bytes, err := budget.Resolve(cacheDir)
	if err != nil {
		return nil, err
	}
	return cachebudget.Enforce(ctx, cacheDir, bytes, BudgetSources(cacheDir), logger)
}

// rootSource is the cached roots: one entry per key.
type rootSource struct{ c cache }

func (rootSource) Kind() string { return KindRoot }

func (s rootSource) List(ctx context.Context) ([]cachebudget.Entry, error) {
	ents, err := os.ReadDir(s.c.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []cachebudget.Entry
	for _, e := range ents {
		if !e.IsDir() || !keyRE.MatchString(e.Name()) {
			continue
		}
		key := e.Name()
		kd := s.c.keyDir(key)
		// Only complete generations count: a tmp-* is being written
		// (or left by a crash, and removed by the next build of key).
		if s.c.current(key) == "" {
			continue
		}
		gens, _ := filepath.Glob(filepath.Join(kd, "root-*"))
		var t time.Time
		if fi, err := os.Stat(filepath.Join(kd, "used")); err == nil {
			t = fi.ModTime()
		}
		out = append(out, cachebudget.Entry{Name: key, Paths: gens, Used: t, Stable: true,
			Referenced: s.c.hasRefs(key)})
	}
	return out, ctx.Err()
}

// Remove removes the key's directory when neither a prepare of the key
// (key lock) nor a process with a layout of it (use lock) holds it.
func (s rootSource) Remove(ctx context.Context, e cachebudget.Entry) (bool, error) {
	if !keyRE.MatchString(e.Name) {
		return false, fmt.Errorf("not a cache key: %q", e.Name)
	}
	unlock, ok, err := s.c.lockKey(ctx, e.Name, false)
	if err != nil || !ok {
		return false, err
	}
	defer unlock()
	unuse, ok, err := cachebudget.TryLock(s.c.usePath(e.Name))
	if err != nil || !ok {
		return false, err
	}
	defer unuse()
	if err := removeAll(s.c.keyDir(e.Name)); err != nil {
		return false, err
	}
	return true, nil
}

// hasRefs reports whether some ref of key names a layout that points at
// it, without removing stale refs (the caller holds no key lock).
func (c cache) hasRefs(key string) bool {
	refs, _ := filepath.Glob(filepath.Join(c.keyDir(key), "refs", "*"))
	for _, r := range refs {
		data, err := os.ReadFile(r)
		if err != nil {
			continue
		}
		if l, err := readLayout(string(data)); err == nil && len(l.pointsInto(c.keyDir(key))) > 0 {
			return true
		}
	}
	return false
}

func (c cache) usePath(key string) string { return filepath.Join(c.dir, "locks", key+".use") }

// held are the use locks this process holds, by lock path; they are
// released when the process ends.
var (
	heldMu sync.Mutex
	held   = map[string]*os.File{}
)

// hold takes the key's use lock shared, once per process: the evictor
// leaves the key alone while this process runs. It waits only while an
// evictor removes the key.
func (c cache) hold(ctx context.Context, key string) error {
	p := c.usePath(key)
	heldMu.Lock()
	defer heldMu.Unlock()
	if held[p] != nil {
		return nil
	}
	f, err := sharedLock(ctx, p)
	if err != nil {
		return err
	}
	held[p] = f
	return nil
}

// holdLower holds the key of a layout's lower dir (<cache>/<key>/<gen>)
// and checks that the root is still there.
func holdLower(lower string) error {
	kd := filepath.Dir(lower)
	if key := filepath.Base(kd); keyRE.MatchString(key) {
		if err := (cache{dir: filepath.Dir(kd)}).hold(context.Background(), key); err != nil {
			return err
		}
	}
	if _, err := os.Stat(lower); err != nil {
		return fmt.Errorf("cached root %s is gone (evicted to keep the disk budget?); prepare the buildroot again: %w", lower, err)
	}
	return nil
}

// downloadsLock is the lock of a backend's download cache.
func (c cache) downloadsLock(backend string) string {
	return filepath.Join(c.dir, "locks", "downloads-"+backend+".lock")
}

// useDownloads takes the lock of backend's download cache shared, for as
// long as a root is created with it.
func (c cache) useDownloads(ctx context.Context, backend string) (unlock func(), err error) {
	f, err := sharedLock(ctx, c.downloadsLock(backend))
	if err != nil {
		return nil, err
	}
	return func() { f.Close() }, nil
}

func sharedLock(ctx context.Context, path string) (*os.File, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB)
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", filepath.Base(path), err)
		}
		if !proc.Sleep(ctx, 50*time.Millisecond) {
			f.Close()
			return nil, fmt.Errorf("wait for %s: %w", filepath.Base(path), context.Cause(ctx))
		}
	}
}

// downloadSource is a backend's download cache: one entry per package.
type downloadSource struct {
	c       cache
	backend string
}

func (downloadSource) Kind() string { return KindDownloads }

func (s downloadSource) dir() string { return filepath.Join(s.c.dir, "downloads", s.backend) }

func (s downloadSource) List(ctx context.Context) ([]cachebudget.Entry, error) {
	ents, err := os.ReadDir(s.dir())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []cachebudget.Entry
	for _, e := range ents {
		if !e.Type().IsRegular() || !strings.HasSuffix(e.Name(), ".deb") {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			continue
		}
		// Linking a package into a root changes its ctime; reading it
		// may change its atime.
		used := fi.ModTime()
		for _, t := range []time.Time{cachebudget.Ctime(fi), cachebudget.Atime(fi)} {
			if t.After(used) {
				used = t
			}
		}
		p := filepath.Join(s.dir(), e.Name())
		out = append(out, cachebudget.Entry{Name: s.backend + "/" + e.Name(), Paths: []string{p}, Used: used,
			Size: cachebudget.Measure(p), Measured: true})
	}
	return out, ctx.Err()
}

// Remove removes the package unless a root is being created with the
// download cache.
func (s downloadSource) Remove(ctx context.Context, e cachebudget.Entry) (bool, error) {
	name, ok := strings.CutPrefix(e.Name, s.backend+"/")
	if !ok || name != filepath.Base(name) || !strings.HasSuffix(name, ".deb") {
		return false, fmt.Errorf("not a download of %s: %q", s.backend, e.Name)
	}
	unlock, ok, err := cachebudget.TryLock(s.c.downloadsLock(s.backend))
	if err != nil || !ok {
		return false, err
	}
	defer unlock()
	if err := os.Remove(filepath.Join(s.dir(), name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, err
	}
	return true, nil
}

// keepBudget runs after a prepare: it keeps at most opts.Keep entries when
// that is set, and the caches within the disk budget. What it cannot do
// is logged; the prepare has succeeded.
func (c cache) keepBudget(ctx context.Context, opts Options, logger *slog.Logger, step func(string, ...any)) {
	if opts.Keep > 0 {
		if removed, err := c.evict(ctx, opts.Keep); err != nil {
			logger.Warn("evict buildroot cache", "err", err)
		} else if len(removed) > 0 {
			logger.Info("evicted buildroot cache entries", "keys", removed)
			step("evicted %d old cache entries", len(removed))
		}
	}
	if res, err := EnforceBudget(ctx, c.dir, opts.Budget, logger); err != nil {
		logger.Warn("enforce the cache budget", "err", err)
	} else if len(res.Evicted) > 0 {
		step("evicted %d cache entries to stay within the disk budget of %d bytes", len(res.Evicted), res.State.Budget)
	}
}
