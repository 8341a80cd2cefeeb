// Package metrics holds the Prometheus metrics every Cloud Builder service
// exports, and the small HTTP mux that serves them with /healthz. The
// metrics are defined once here so a single process running several
// services (cb up) exports each exactly once.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Registry is the process-wide registry.
var Registry = prometheus.NewRegistry()

var durationBuckets = []float64{1, 5, 15, 30, 60, 120, 300, 600, 1200, 3600}

// Metrics of the runner, collector and fetcher.
var (
	BuildsStarted = promauto(prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cb_builds_started_total", Help: "Builds started, by runner group.",
	}, []string{"runner_group"}))
	BuildsFinished = promauto(prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cb_builds_finished_total", Help: "Builds finished, by runner group and result (succeeded, failed).",
	}, []string{"runner_group", "result"}))
	BuildDuration = promauto(prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "cb_build_duration_seconds", Help: "Duration of the build step.", Buckets: durationBuckets,
	}, []string{"runner_group"}))
	PrepareDuration = promauto(prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "cb_prepare_duration_seconds", Help: "Duration of buildroot preparation.", Buckets: durationBuckets,
	}, []string{"runner_group"}))
	BuildrootCache = promauto(prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cb_buildroot_cache_total", Help: "Buildroot cache lookups by outcome (hit, miss).",
	}, []string{"outcome"}))
	BuildrootLayers = promauto(prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cb_buildroot_layer_total", Help: "Lookups of the layers of layered buildroots, by layer (base, target) and outcome (hit, miss).",
	}, []string{"layer", "outcome"}))
	RunningBuilds = promauto(prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "cb_running_builds", Help: "Builds running on this runner.",
	}))
	QueueLag = promauto(prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "cb_queue_lag_messages", Help: "Unconsumed requests on the runner group topic.",
	}, []string{"runner_group"}))
	AssignedPartitions = promauto(prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "cb_assigned_partitions", Help: "Partitions of the runner group topic this runner owns; 0 means it gets no requests.",
	}, []string{"runner_group"}))
	Redispatched = promauto(prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cb_requests_redispatched_total", Help: "Requests another runner had taken on and that were built here after its heartbeats stopped.",
	}, []string{"runner_group"}))
	PublishDuration = promauto(prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "cb_repo_publish_duration_seconds", Help: "Duration of a repository metadata update.",
		Buckets: []float64{.05, .1, .25, .5, 1, 2, 5, 10, 30, 60},
	}, []string{"repo_type"}))
	Uploads = promauto(prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cb_uploads_total", Help: "Build result uploads received by the collector, by result.",
	}, []string{"result"}))
	FetchRequests = promauto(prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cb_fetch_requests_total", Help: "Build requests sent by cb-fetch, by action.",
	}, []string{"action"}))
)

func init() {
	Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), cacheCollector{})
}

func promauto[T prometheus.Collector](c T) T {
	Registry.MustRegister(c)
	return c
}

// Mux returns a mux serving /metrics and /healthz. healthy, when not nil,
// is asked on every /healthz request; an error makes it answer 503.
func Mux(healthy func(context.Context) error) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		if healthy != nil {
			ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
			defer cancel()
			if err := healthy(ctx); err != nil {
				http.Error(w, "unhealthy: "+err.Error(), http.StatusServiceUnavailable)
				return
			}
		}
		fmt.Fprintln(w, "ok")
	})
	return mux
}

// Serve serves h on addr until ctx is done, then shuts down gracefully. It
// returns the listener's address through ready (when not nil) once
// listening, so callers can print where it is.
func Serve(ctx context.Context, addr string, h http.Handler, logger *slog.Logger, ready func(net.Addr)) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", addr, err)
	}
	if ready != nil {
		ready(ln.Addr())
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err = srv.Shutdown(sctx)
	if e := <-errc; e != nil && !errors.Is(e, http.ErrServerClosed) {
		err = errors.Join(err, e)
	}
	if logger != nil {
		logger.Debug("http server stopped", "addr", ln.Addr().String())
	}
	return err
}
