package metrics

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestCacheMetricsReadTheState(t *testing.T) {
	t.Cleanup(func() { SetCacheState(nil) })
	names := []string{"cb_cache_budget_bytes", "cb_cache_bytes", "cb_cache_entries", "cb_cache_evictions_total", "cb_cache_evicted_bytes_total"}
	// No state yet (no scheduler, or nothing measured): no series.
	if n, err := testutil.GatherAndCount(Registry, names...); err != nil || n != 0 {
		t.Fatalf("without a state: %d series, %v", n, err)
	}
	st := &CacheState{Budget: 1000, Kinds: map[string]CacheKind{
		"root":      {Bytes: 600, Entries: 2, Evictions: 3, EvictedBytes: 900},
		"downloads": {Bytes: 100, Entries: 7},
	}}
	SetCacheState(func() (*CacheState, bool) { return st, true })
	want := `
# HELP cb_cache_budget_bytes Disk budget of the runner's caches (buildroots, downloads, kiwi's cache).
# TYPE cb_cache_budget_bytes gauge
cb_cache_budget_bytes 1000
# HELP cb_cache_bytes Bytes the runner's caches occupy, by kind, as last measured.
# TYPE cb_cache_bytes gauge
cb_cache_bytes{kind="downloads"} 100
cb_cache_bytes{kind="root"} 600
# HELP cb_cache_evictions_total Cache entries removed to keep the disk budget, by kind.
# TYPE cb_cache_evictions_total counter
cb_cache_evictions_total{kind="downloads"} 0
cb_cache_evictions_total{kind="root"} 3
`
	if err := testutil.GatherAndCompare(Registry, strings.NewReader(want), "cb_cache_budget_bytes", "cb_cache_bytes", "cb_cache_evictions_total"); err != nil {
		t.Error(err)
	}
	if n, err := testutil.GatherAndCount(Registry, names...); err != nil || n != 9 {
		t.Errorf("%d series, %v; want 9", n, err)
	}
}
