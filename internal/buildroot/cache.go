package buildroot

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/cloud-builder/cb/internal/atomicfile"
	"github.com/cloud-builder/cb/internal/cachebudget"
	"github.com/cloud-builder/cb/internal/proc"
)

// Cache layout below Options.CacheDir:
//
//	locks/<key>.lock          flock per key; never removed, so waiters and
//	                          newcomers always lock the same inode
//	<key>/current             name of the complete root generation (the marker)
//	<key>/<gen>/              the root, used read-only as overlay lower dir
//	<key>/<gen>.packages.json installed packages of that root
//	<key>/used                mtime = last use, for LRU eviction
//	<key>/refs/<id>           path of a layout.json that may point at <key>
//	<key>/tmp-*               a root being built (left over only by a crash)
//	locks/<key>.use           flock held shared by every process with a
//	                          layout of <key> (see budget.go)
//	locks/downloads-<b>.lock  flock held shared while backend b creates a
//	                          root with downloads/<b>/
//	downloads/<b>/*.deb       packages backend b downloaded
//	budget.json, budget.lock  the disk budget's state (cachebudget)
//
// A generation is never removed while some target's layout.json points at
// it: a build may have it mounted as lower dir in its own mount namespace,
// which this process cannot see.

var keyRE = regexp.MustCompile(`^[0-9a-f]{64}$`)

type cache struct{ dir string }

// lockKey takes the key's flock, polling so ctx can cancel the wait.
func (c cache) lockKey(ctx context.Context, key string, wait bool) (unlock func(), ok bool, err error) {
	if err := os.MkdirAll(filepath.Join(c.dir, "locks"), 0o755); err != nil {
		return nil, false, err
	}
	f, err := os.OpenFile(filepath.Join(c.dir, "locks", key+".lock"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, false, err
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, true, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, false, fmt.Errorf("lock buildroot cache: %w", err)
		}
		if !wait {
			f.Close()
			return nil, false, nil
		}
		if !proc.Sleep(ctx, 250*time.Millisecond) {
			f.Close()
			return nil, false, fmt.Errorf("wait for buildroot cache lock: %w", context.Cause(ctx))
		}
	}
}

func (c cache) keyDir(key string) string { return filepath.Join(c.dir, key) }

// current returns the complete generation of key, or "".
func (c cache) current(key string) string {
	data, err := os.ReadFile(filepath.Join(c.keyDir(key), "current"))
	if err != nil {
		return ""
	}
	gen := strings.TrimSpace(string(data))
	if !strings.HasPrefix(gen, "root-") || strings.ContainsAny(gen, "/\x00") {
		return ""
	}
	if fi, err := os.Stat(filepath.Join(c.keyDir(key), gen)); err != nil || !fi.IsDir() {
		return ""
	}
	return gen
}

// build creates a new generation of key with create (which returns the
// packages it installed besides the root's package manager) and makes it
// current.
// The caller holds the key lock.
func (c cache) build(ctx context.Context, key string, create func(dir string) (map[string]InstalledPackage, error)) (string, error) {
	return c.buildList(ctx, key, create, InstalledPackages)
}

// buildList is build with list telling the packages of the new root.
func (c cache) buildList(ctx context.Context, key string, create func(dir string) (map[string]InstalledPackage, error),
	list func(ctx context.Context, dir string) (map[string]InstalledPackage, error)) (string, error) {
	kd := c.keyDir(key)
	if err := os.MkdirAll(kd, 0o755); err != nil {
		return "", fmt.Errorf("create buildroot cache entry: %w", err)
	}
	// Holding the lock, any tmp-* is from a builder that died.
	stale, _ := filepath.Glob(filepath.Join(kd, "tmp-*"))
	for _, s := range stale {
		if err := removeAll(s); err != nil {
			return "", err
		}
	}
	tmp, err := os.MkdirTemp(kd, "tmp-")
	if err != nil {
		return "", fmt.Errorf("create buildroot cache entry: %w", err)
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return "", err
	}
	extra, err := create(tmp)
	if err != nil {
		if rerr := removeAll(tmp); rerr != nil {
			err = errors.Join(err, rerr)
		}
		return "", err
	}
	pkgs, err := list(ctx, tmp)
	if err != nil {
		return "", errors.Join(err, removeAll(tmp))
	}
	// Packages create installed besides the root's package manager.
	pkgs = mergePackages(pkgs, extra)
	gen := "root-" + time.Now().UTC().Format("20060102T150405") + "-" + randomID()
	if err := writeJSON(filepath.Join(kd, gen+".packages.json"), pkgs); err != nil {
		return "", errors.Join(fmt.Errorf("write package list: %w", err), removeAll(tmp))
	}
	if err := os.Rename(tmp, filepath.Join(kd, gen)); err != nil {
		return "", errors.Join(fmt.Errorf("store buildroot: %w", err), removeAll(tmp))
	}
	if err := atomicfile.WriteFile(filepath.Join(kd, "current"), []byte(gen+"\n"), 0o644); err != nil {
		return "", fmt.Errorf("store buildroot: %w", err)
	}
	return gen, nil
}

func (c cache) packages(key, gen string) (map[string]InstalledPackage, error) {
	data, err := os.ReadFile(filepath.Join(c.keyDir(key), gen+".packages.json"))
	if err != nil {
		return nil, fmt.Errorf("read cached package list: %w", err)
	}
	var pkgs map[string]InstalledPackage
	if err := json.Unmarshal(data, &pkgs); err != nil {
		return nil, fmt.Errorf("read cached package list: %w", err)
	}
	return pkgs, nil
}

func (c cache) touch(key string) {
	p := filepath.Join(c.keyDir(key), "used")
	now := time.Now()
	if err := os.Chtimes(p, now, now); err != nil {
		_ = os.WriteFile(p, nil, 0o644)
	}
}

// addRef records that the layout at layoutPath may point into key.
func (c cache) addRef(key, layoutPath string) error {
	dir := filepath.Join(c.keyDir(key), "refs")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	sum := sha256.Sum256([]byte(layoutPath))
	return atomicfile.WriteFile(filepath.Join(dir, hex.EncodeToString(sum[:12])), []byte(layoutPath), 0o644)
}

// referenced returns the generations of key that a layout.json points at,
// dropping refs whose layout is gone or points elsewhere.
func (c cache) referenced(key string) map[string]bool {
	used := map[string]bool{}
	refs, _ := filepath.Glob(filepath.Join(c.keyDir(key), "refs", "*"))
	for _, r := range refs {
		data, err := os.ReadFile(r)
		if err != nil {
			continue
		}
		l, err := readLayout(string(data))
		if err == nil {
			if gens := l.pointsInto(c.keyDir(key)); len(gens) > 0 {
				for _, g := range gens {
					used[g] = true
				}
				continue
			}
		}
		if err == nil || errors.Is(err, fs.ErrNotExist) {
			_ = os.Remove(r)
		}
	}
	return used
}

// pruneGenerations removes generations of key that are neither current
// nor referenced. The caller holds the key lock.
func (c cache) pruneGenerations(key string) error {
	cur := c.current(key)
	used := c.referenced(key)
	gens, _ := filepath.Glob(filepath.Join(c.keyDir(key), "root-*"))
	var errs []error
	for _, g := range gens {
		name := strings.TrimSuffix(filepath.Base(g), ".packages.json")
		if name == cur || used[name] {
			continue
		}
		if strings.HasSuffix(g, ".packages.json") {
			errs = append(errs, os.Remove(g))
		} else {
			errs = append(errs, removeAll(g))
		}
	}
	return errors.Join(errs...)
}

// evict keeps the keep most recently used entries (plus every entry some
// layout still points at) and removes the rest. Entries locked by another
// prepare are skipped.
func (c cache) evict(ctx context.Context, keep int) (removed []string, err error) {
	ents, err := os.ReadDir(c.dir)
	if err != nil {
		return nil, err
	}
	type entry struct {
		key  string
		used time.Time
	}
	var all []entry
	for _, e := range ents {
		if !e.IsDir() || !keyRE.MatchString(e.Name()) {
			continue
		}
		var t time.Time
		if fi, err := os.Stat(filepath.Join(c.dir, e.Name(), "used")); err == nil {
			t = fi.ModTime()
		}
		all = append(all, entry{e.Name(), t})
	}
	sort.Slice(all, func(i, j int) bool { return all[i].used.After(all[j].used) })
	var errs []error
	for i, e := range all {
		if i < keep {
			continue
		}
		unlock, ok, err := c.lockKey(ctx, e.key, false)
		if err != nil || !ok {
			continue
		}
		// A process with a layout of the key holds its use lock.
		unuse, ok, err := cachebudget.TryLock(c.usePath(e.key))
		if err != nil || !ok {
			unlock()
			continue
		}
		if err := c.pruneGenerations(e.key); err != nil {
			errs = append(errs, err)
		}
		if len(c.referenced(e.key)) == 0 {
			if err := removeAll(c.keyDir(e.key)); err != nil {
				errs = append(errs, err)
			} else {
				removed = append(removed, e.key)
			}
		}
		unuse()
		unlock()
	}
	return removed, errors.Join(errs...)
}

func randomID() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
