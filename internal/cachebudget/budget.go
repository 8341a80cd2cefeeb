// Package cachebudget keeps a runner's caches (cached buildroots, the
// shared package downloads, kiwi's shared cache) under one disk budget.
//
// Each kind of cache is a Source: it lists its entries with their last
// use and removes one when nothing uses it (a source decides that with
// its own locks). Enforce measures every entry (allocated blocks, hard
// links counted once), and while the total is above the budget removes
// the least recently used entries first, those a source marks as still
// referenced only after every other. It records what it measured and
// removed in a state file next to the caches, which the scheduler's
// metrics read: entries are removed by whichever process prepares a
// buildroot, and the counts must survive them.
package cachebudget

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cloud-builder/cb/internal/atomicfile"
)

// Entry is one removable unit of a cache.
type Entry struct {
	// Name identifies the entry within its source (for logs and Remove).
	Name string
	// Paths are the files and directories the entry occupies.
	Paths []string
	// Used is the entry's last use.
	Used time.Time
	// Referenced entries go only after every unreferenced one.
	Referenced bool
	// Stable paths never change once listed (a complete root
	// generation): their size is measured once and remembered by path.
	Stable bool
	// Size, when Measured, is the entry's size as the source measured it.
	Size     int64
	Measured bool
}

// Source is one kind of cache entry.
type Source interface {
	// Kind names the source in metrics and logs: root, downloads, kiwi.
	Kind() string
	// List returns the complete entries. A missing cache is no error.
	List(ctx context.Context) ([]Entry, error)
	// Remove removes e unless something uses it now (removed false).
	Remove(ctx context.Context, e Entry) (removed bool, err error)
}

// Usage is one kind's part of the cache.
type Usage struct {
	Bytes        int64 `json:"bytes"`
	Entries      int   `json:"entries"`
	Evictions    int64 `json:"evictions"`     // entries removed, ever
	EvictedBytes int64 `json:"evicted_bytes"` // their bytes, ever
}

// State is what the last Enforce measured, and the eviction counts.
type State struct {
	Budget  int64            `json:"budget"`
	Total   int64            `json:"total"`
	Checked time.Time        `json:"checked"`
	Kinds   map[string]Usage `json:"kinds"`
	// Sizes remembers the size of stable paths.
	Sizes map[string]int64 `json:"sizes,omitempty"`
}

// StateFile is the name of the state file in the state directory.
const StateFile = "budget.json"

// ReadState reads the state Enforce wrote to dir.
func ReadState(dir string) (*State, error) {
	data, err := os.ReadFile(filepath.Join(dir, StateFile))
	if err != nil {
		return nil, err
	}
	var s State
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("read cache budget state: %w", err)
	}
	return &s, nil
}

// Result is what one Enforce did.
type Result struct {
	State   State
	Evicted []string // kind/name of each removed entry
	// Skipped is set when another process was enforcing the budget at
	// the same time; nothing was measured or removed.
	Skipped bool
}

// Enforce measures the entries of every source and removes least
// recently used ones until their total is at most budget. dir holds the
// state file and the lock that lets one process at a time enforce. An
// entry that cannot be removed now (in use) is passed over, so the total
// may stay above the budget.
func Enforce(ctx context.Context, dir string, budget int64, sources []Source, logger *slog.Logger) (*Result, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("cache budget: %w", err)
	}
	unlock, ok, err := tryLock(filepath.Join(dir, "budget.lock"), syscall.LOCK_EX)
	if err != nil {
		return nil, fmt.Errorf("cache budget: %w", err)
	}
	if !ok {
		return &Result{Skipped: true}, nil
	}
	defer unlock()
	old, err := ReadState(dir)
	if err != nil {
		old = &State{}
	}
	st := State{Budget: budget, Kinds: map[string]Usage{}, Sizes: map[string]int64{}}
	for k, u := range old.Kinds {
		st.Kinds[k] = Usage{Evictions: u.Evictions, EvictedBytes: u.EvictedBytes}
	}
	type cand struct {
		src Source
		e   Entry
	}
	var all []cand
	seen := map[inode]bool{}
	var errs []error
	for _, s := range sources {
		ents, err := s.List(ctx)
		if err != nil {
			errs = append(errs, fmt.Errorf("list %s cache: %w", s.Kind(), err))
			continue
		}
		u := st.Kinds[s.Kind()]
		for _, e := range ents {
			if !e.Measured {
				e.Size = 0
				for _, p := range e.Paths {
					n, ok := old.Sizes[p]
					if !e.Stable || !ok {
						n = measure(p, seen)
					}
					if e.Stable {
						st.Sizes[p] = n
					}
					e.Size += n
				}
			}
			u.Bytes += e.Size
			u.Entries++
			st.Total += e.Size
			all = append(all, cand{s, e})
		}
		st.Kinds[s.Kind()] = u
	}
	res := &Result{}
	if st.Total > budget {
		sort.SliceStable(all, func(i, j int) bool {
			a, b := all[i].e, all[j].e
			if a.Referenced != b.Referenced {
				return !a.Referenced
			}
			return a.Used.Before(b.Used)
		})
		for _, c := range all {
			if st.Total <= budget || ctx.Err() != nil {
				break
			}
			removed, err := c.src.Remove(ctx, c.e)
			if err != nil {
				errs = append(errs, fmt.Errorf("evict %s %s: %w", c.src.Kind(), c.e.Name, err))
			}
			if !removed {
				continue
			}
			k := c.src.Kind()
			u := st.Kinds[k]
			u.Bytes -= c.e.Size
			u.Entries--
			u.Evictions++
			u.EvictedBytes += c.e.Size
			st.Kinds[k] = u
			st.Total -= c.e.Size
			for _, p := range c.e.Paths {
				delete(st.Sizes, p)
			}
			res.Evicted = append(res.Evicted, k+"/"+c.e.Name)
			logger.Info("evicted cache entry", "kind", k, "entry", c.e.Name, "bytes", c.e.Size,
				"last_used", c.e.Used.UTC().Format(time.RFC3339), "referenced", c.e.Referenced)
		}
		if st.Total > budget {
			logger.Warn("cache above its budget: the rest is in use", "bytes", st.Total, "budget", budget)
		}
	}
	st.Checked = time.Now().UTC()
	res.State = st
	data, err := json.MarshalIndent(st, "", "  ")
	if err == nil {
		err = atomicfile.WriteFile(filepath.Join(dir, StateFile), data, 0o644)
	}
	if err != nil {
		errs = append(errs, fmt.Errorf("write cache budget state: %w", err))
	}
	return res, errors.Join(errs...)
}

type inode struct{ dev, ino uint64 }

// Measure returns the bytes allocated to path and everything below it,
// as du counts them: allocated blocks, each hard-linked inode once.
func Measure(path string) int64 { return measure(path, map[inode]bool{}) }

// Scan is Measure that also returns the newest modification or change
// time below path: the last use of a cache that tools only write to.
func Scan(path string) (bytes int64, newest time.Time) {
	bytes = walk(path, map[inode]bool{}, func(fi fs.FileInfo, ctime time.Time) {
		for _, t := range []time.Time{fi.ModTime(), ctime} {
			if t.After(newest) {
				newest = t
			}
		}
	})
	return bytes, newest
}

// measure counts an inode with more than one link only when seen does not
// hold it yet; files that vanish during the walk are left out.
func measure(path string, seen map[inode]bool) int64 { return walk(path, seen, nil) }

func walk(path string, seen map[inode]bool, visit func(fi fs.FileInfo, ctime time.Time)) int64 {
	var total int64
	_ = filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil // vanished or unreadable: not counted
		}
		fi, err := d.Info()
		if err != nil {
			return nil
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			total += fi.Size()
			return nil
		}
		if visit != nil {
			visit(fi, Ctime(fi))
		}
		if st.Nlink > 1 && !fi.IsDir() {
			k := inode{uint64(st.Dev), st.Ino}
			if seen[k] {
				return nil
			}
			seen[k] = true
		}
		total += st.Blocks * 512
		return nil
	})
	return total
}

// tryLock takes a flock of kind how (LOCK_EX or LOCK_SH) on path without
// waiting.
func tryLock(path string, how int) (unlock func(), ok bool, err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, false, err
	}
	if err := syscall.Flock(int(f.Fd()), how|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, false, nil
		}
		return nil, false, err
	}
	return func() { f.Close() }, true, nil
}

// TryLock takes an exclusive flock on path without waiting; ok is false
// when someone else holds a lock on it.
func TryLock(path string) (unlock func(), ok bool, err error) {
	return tryLock(path, syscall.LOCK_EX)
}

// Size is a budget setting: a number of bytes, or a percentage of the
// file system the cache lives on.
type Size struct {
	Bytes   int64
	Percent float64 // 0 < Percent <= 100, when Bytes is 0
}

// DefaultPercent is the budget when none is configured: half of the file
// system the runner's cache lives on.
const DefaultPercent = 50

// ParseSize reads "50%", "200G", "1.5TiB", "500M" or a plain number of
// bytes. K, M, G, T (with or without "iB" or "B") are powers of 1024.
// "" is the default (DefaultPercent).
func ParseSize(s string) (Size, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return Size{Percent: DefaultPercent}, nil
	}
	if p, ok := strings.CutSuffix(s, "%"); ok {
		v, err := strconv.ParseFloat(strings.TrimSpace(p), 64)
		if err != nil || v <= 0 || v > 100 {
			return Size{}, fmt.Errorf("cache budget %q: a percentage must be above 0 and at most 100", s)
		}
		return Size{Percent: v}, nil
	}
	num := strings.TrimRight(s, "KMGTiBkmgtib ")
	unit := strings.ToUpper(strings.TrimSpace(s[len(num):]))
	unit = strings.TrimSuffix(strings.TrimSuffix(unit, "B"), "I")
	mult := map[string]float64{"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}[unit]
	v, err := strconv.ParseFloat(strings.TrimSpace(num), 64)
	if mult == 0 || err != nil || v <= 0 || v*mult >= 1<<62 {
		return Size{}, fmt.Errorf("cache budget %q: want a size (bytes, or with K, M, G, T) above 0, or a percentage like 50%%", s)
	}
	return Size{Bytes: int64(v * mult)}, nil
}

// String is the setting as ParseSize reads it.
func (s Size) String() string {
	if s.Bytes > 0 {
		return strconv.FormatInt(s.Bytes, 10)
	}
	return strconv.FormatFloat(s.Percent, 'f', -1, 64) + "%"
}

// Resolve returns the budget in bytes: Bytes, or Percent of the size of
// the file system dir (or its nearest existing parent) is on.
func (s Size) Resolve(dir string) (int64, error) {
	if s.Bytes > 0 {
		return s.Bytes, nil
	}
	pct := s.Percent
	if pct <= 0 {
		pct = DefaultPercent
	}
	for {
		var st syscall.Statfs_t
		err := syscall.Statfs(dir, &st)
		if err == nil {
			return int64(float64(st.Blocks) * float64(st.Bsize) * pct / 100), nil
		}
		parent := filepath.Dir(dir)
		if !errors.Is(err, syscall.ENOENT) || parent == dir {
			return 0, fmt.Errorf("cache budget: size of the file system of %s: %w", dir, err)
		}
		dir = parent
	}
}
