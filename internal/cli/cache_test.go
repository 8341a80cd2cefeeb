package cli

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/cloud-builder/cb/internal/buildroot/kiwi"
	"github.com/cloud-builder/cb/internal/cachebudget"
	"github.com/cloud-builder/cb/internal/metrics"
)

// At start the scheduler enforces the budget on the runner's cache and
// its metrics show the result.
func TestSchedulerStartEnforcesCacheBudget(t *testing.T) {
	t.Cleanup(func() { metrics.SetCacheState(nil) })
	// Only the runner's own caches: a budget of 1 byte would evict the
	// machine's kiwi cache otherwise.
	all := cacheSources
	t.Cleanup(func() { cacheSources = all })
	cacheSources = func(dir string) []cachebudget.Source {
		var own []cachebudget.Source
		for _, s := range all(dir) {
			if s.Kind() != kiwi.KindShared {
				own = append(own, s)
			}
		}
		if len(own) == len(all(dir)) {
			t.Error("kiwi's shared cache is not among the sources")
		}
		return own
	}
	rf := &runnerFlags{runnerRoot: t.TempDir(), cacheBudget: "1"}
	key := filepath.Join(rf.runnerCacheDir(), strings.Repeat("a", 64))
	for _, d := range []string{filepath.Join(key, "root-x", "usr")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(key, "current"), []byte("root-x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(key, "root-x", "usr", "blob"), make([]byte, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	g, ctx := newGroup(context.Background())
	watchCacheBudget(ctx, g, slog.New(slog.NewTextHandler(io.Discard, nil)), rf)
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(key); !os.IsNotExist(err) {
		t.Errorf("root above a budget of 1 byte kept: %v", err)
	}
	want := `
# HELP cb_cache_budget_bytes Disk budget of the runner's caches (buildroots, downloads, kiwi's cache).
# TYPE cb_cache_budget_bytes gauge
cb_cache_budget_bytes 1
`
	if err := testutil.GatherAndCompare(metrics.Registry, strings.NewReader(want), "cb_cache_budget_bytes"); err != nil {
		t.Error(err)
	}
	n, err := testutil.GatherAndCount(metrics.Registry, "cb_cache_evictions_total")
	if err != nil || n == 0 {
		t.Errorf("no eviction metrics: %d, %v", n, err)
	}
	mfs, err := metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "cb_cache_evictions_total" {
			continue
		}
		for _, m := range mf.Metric {
			if m.GetLabel()[0].GetValue() == "root" && m.GetCounter().GetValue() != 1 {
				t.Errorf("root evictions %v, want 1", m.GetCounter().GetValue())
			}
		}
	}
}
