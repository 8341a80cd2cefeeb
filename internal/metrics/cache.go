package metrics

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// CacheKind is one kind of a runner's cache (root, downloads, kiwi) as
// last measured.
type CacheKind struct {
	Bytes        int64
	Entries      int
	Evictions    int64 // entries removed to keep the budget, ever
	EvictedBytes int64
}

// CacheState is a runner's cache usage against its disk budget.
type CacheState struct {
	Budget int64
	Kinds  map[string]CacheKind
}

var (
	cacheMu     sync.Mutex
	cacheSource func() (*CacheState, bool)

	cacheBudgetDesc = prometheus.NewDesc("cb_cache_budget_bytes",
		"Disk budget of the runner's caches (buildroots, downloads, kiwi's cache).", nil, nil)
	cacheBytesDesc = prometheus.NewDesc("cb_cache_bytes",
		"Bytes the runner's caches occupy, by kind, as last measured.", []string{"kind"}, nil)
	cacheEntriesDesc = prometheus.NewDesc("cb_cache_entries",
		"Entries of the runner's caches, by kind, as last measured.", []string{"kind"}, nil)
	cacheEvictionsDesc = prometheus.NewDesc("cb_cache_evictions_total",
		"Cache entries removed to keep the disk budget, by kind.", []string{"kind"}, nil)
	cacheEvictedDesc = prometheus.NewDesc("cb_cache_evicted_bytes_total",
		"Bytes of cache entries removed to keep the disk budget, by kind.", []string{"kind"}, nil)
)

// SetCacheState makes the cache metrics report what read returns at each
// scrape (nothing while it returns false). The state is kept by the
// processes that measure and evict (the runner's jobs), so it is read
// rather than counted here.
func SetCacheState(read func() (*CacheState, bool)) {
	cacheMu.Lock()
	defer cacheMu.Unlock()
	cacheSource = read
}

type cacheCollector struct{}

func (cacheCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{cacheBudgetDesc, cacheBytesDesc, cacheEntriesDesc, cacheEvictionsDesc, cacheEvictedDesc} {
		ch <- d
	}
}

func (cacheCollector) Collect(ch chan<- prometheus.Metric) {
	cacheMu.Lock()
	read := cacheSource
	cacheMu.Unlock()
	if read == nil {
		return
	}
	st, ok := read()
	if !ok || st == nil {
		return
	}
	ch <- prometheus.MustNewConstMetric(cacheBudgetDesc, prometheus.GaugeValue, float64(st.Budget))
	for kind, k := range st.Kinds {
		ch <- prometheus.MustNewConstMetric(cacheBytesDesc, prometheus.GaugeValue, float64(k.Bytes), kind)
		ch <- prometheus.MustNewConstMetric(cacheEntriesDesc, prometheus.GaugeValue, float64(k.Entries), kind)
		ch <- prometheus.MustNewConstMetric(cacheEvictionsDesc, prometheus.CounterValue, float64(k.Evictions), kind)
		ch <- prometheus.MustNewConstMetric(cacheEvictedDesc, prometheus.CounterValue, float64(k.EvictedBytes), kind)
	}
}
