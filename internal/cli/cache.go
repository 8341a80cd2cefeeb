package cli

import (
	"context"
	"log/slog"
	"path/filepath"

	"github.com/cloud-builder/cb/internal/buildroot"
	"github.com/cloud-builder/cb/internal/cachebudget"
	"github.com/cloud-builder/cb/internal/metrics"
)

// cacheSources are the caches the budget covers (a variable for the
// tests, which must not evict the machine's kiwi cache).
var cacheSources = buildroot.BudgetSources

// runnerCacheDir is the buildroot cache of the runner flags, as the job
// defaults it.
func (f *runnerFlags) runnerCacheDir() string {
	if f.cacheDir != "" {
		return f.cacheDir
	}
	return filepath.Join(f.runnerRoot, ".cache", "buildroot")
}

// watchCacheBudget makes the metrics report the runner's cache usage
// (the state the jobs' evictions keep) and enforces the budget once at
// start, which also measures what is there.
func watchCacheBudget(ctx context.Context, g *group, logger *slog.Logger, f *runnerFlags) {
	dir := f.runnerCacheDir()
	metrics.SetCacheState(func() (*metrics.CacheState, bool) {
		st, err := cachebudget.ReadState(dir)
		if err != nil {
			return nil, false
		}
		out := &metrics.CacheState{Budget: st.Budget, Kinds: map[string]metrics.CacheKind{}}
		for k, u := range st.Kinds {
			out.Kinds[k] = metrics.CacheKind{Bytes: u.Bytes, Entries: u.Entries, Evictions: u.Evictions, EvictedBytes: u.EvictedBytes}
		}
		return out, true
	})
	// Checked at start (checks.size).
	size, _ := cachebudget.ParseSize(f.cacheBudget)
	g.Go("cache budget", func() error {
		budget, err := size.Resolve(dir)
		if err != nil {
			logger.Warn("cache budget", "cache_dir", dir, "err", err)
			return nil
		}
		res, err := cachebudget.Enforce(ctx, dir, budget, cacheSources(dir), logger.With("component", "cache"))
		if err != nil {
			// A cache that cannot be measured or trimmed does not stop
			// the runner; the next prepare tries again.
			logger.Warn("cache budget", "cache_dir", dir, "err", err)
		}
		if res != nil && !res.Skipped {
			attrs := []any{"cache_dir", dir, "budget", res.State.Budget, "bytes", res.State.Total, "evicted", len(res.Evicted)}
			for k, u := range res.State.Kinds {
				attrs = append(attrs, k+"_bytes", u.Bytes)
			}
			logger.Info("cache budget", attrs...)
		}
		return nil
	})
}
