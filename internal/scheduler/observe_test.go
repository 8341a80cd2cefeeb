package scheduler

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/cloud-builder/cb/internal/journal"
	"github.com/cloud-builder/cb/internal/metrics"
)

// A finished prepare counts the whole buildroot's cache outcome and,
// for a layered root, each layer's.
func TestObserveCacheLayers(t *testing.T) {
	s := &Scheduler{cfg: Config{RunnerGroup: "observe-test"}}
	count := func(layer, outcome string) float64 {
		return testutil.ToFloat64(metrics.BuildrootLayers.WithLabelValues(layer, outcome))
	}
	miss := testutil.ToFloat64(metrics.BuildrootCache.WithLabelValues("miss"))
	baseHit, targetMiss, targetHit := count("base", "hit"), count("target", "miss"), count("target", "hit")

	hit := false
	s.observe(&journal.Entry{CacheHit: &hit, Layers: map[string]bool{"base": true, "target": false}})
	if got := testutil.ToFloat64(metrics.BuildrootCache.WithLabelValues("miss")) - miss; got != 1 {
		t.Errorf("buildroot misses counted %v, want 1", got)
	}
	if got := count("base", "hit") - baseHit; got != 1 {
		t.Errorf("base layer hits counted %v, want 1", got)
	}
	if got := count("target", "miss") - targetMiss; got != 1 {
		t.Errorf("target layer misses counted %v, want 1", got)
	}
	if got := count("target", "hit") - targetHit; got != 0 {
		t.Errorf("target layer hits counted %v, want 0", got)
	}
	// A whole root (kiwi) has no layers to count.
	s.observe(&journal.Entry{CacheHit: &hit})
	if got := count("base", "hit") - baseHit; got != 1 {
		t.Errorf("a root without layers counted a base layer")
	}
}
