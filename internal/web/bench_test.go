package web

import (
	"context"
	"fmt"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/cloud-builder/cb/internal/broker"
	"github.com/cloud-builder/cb/internal/message"
	"github.com/cloud-builder/cb/internal/web/webtest"
)

// buildMessages returns the records of n builds spread over targets
// packages × 2 dists, each with request, accepted, buildroot ready and a
// final response: what the UI folds in a real installation.
func buildMessages(tb testing.TB, n, packages int) (topics []string, values [][]byte) {
	tb.Helper()
	add := func(topic string, v any) {
		data, err := message.Encode(v)
		if err != nil {
			tb.Fatal(err)
		}
		topics, values = append(topics, topic), append(values, data)
	}
	for i := 0; i < n; i++ {
		p := fmt.Sprintf("projects/Debian/pkg%04d", i%packages)
		dist := []string{"bookworm", "trixie"}[(i/packages)%2]
		id := fmt.Sprintf("req-%d", i)
		add("debian", pkgRequest(id, p, dist))
		tg := &message.Target{Arch: "x86_64", Dist: dist}
		add(message.TopicResponse, response(id, p, message.PackageRequestAccepted, "Accept package build request", tg))
		add(message.TopicResponse, response(id, p, message.BuildRootSetupSucceeded, "Buildroot ready for package build", nil))
		final := message.PackageBuildSucceeded
		if i%7 == 0 {
			final = message.PackageBuildFailed
		}
		add(message.TopicResponse, response(id, p, final, "Package build finished", nil))
	}
	return topics, values
}

// BenchmarkFold is the cost of decoding and folding one message into a
// model of 2,000 targets.
func BenchmarkFold(b *testing.B) {
	topics, values := buildMessages(b, 8000, 1000)
	m := NewModel()
	now := time.Now()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		j := i % len(values)
		if err := m.Apply(topics[j], values[j], now.Add(time.Duration(i)*time.Millisecond)); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

// BenchmarkFeedThroughBroker publishes responses to a real (in-process)
// broker and measures until the UI's model has folded every one: the
// rate the UI keeps up with, broker included.
func BenchmarkFeedThroughBroker(b *testing.B) {
	emb, err := broker.StartEmbedded(broker.EmbeddedOptions{Listen: "127.0.0.1:0", Topics: []string{"debian"}, Logger: testLogger(b)})
	if err != nil {
		b.Fatal(err)
	}
	defer emb.Close()
	opts := broker.Options{Brokers: emb.Addrs(), Logger: testLogger(b)}
	client, err := broker.New(opts)
	if err != nil {
		b.Fatal(err)
	}
	defer client.Close()
	m := NewModel()
	cons, err := NewConsumer(opts, []string{"debian"})
	if err != nil {
		b.Fatal(err)
	}
	defer cons.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go Follow(ctx, cons, m, testLogger(b))
	topics, values := buildMessages(b, (b.N+3)/4, 1000)
	b.ResetTimer()
	for i := range values {
		client.PublishAsync(ctx, topics[i], values[i], nil)
	}
	if err := client.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	for m.Records() < uint64(len(values)) {
		time.Sleep(time.Millisecond)
	}
	b.ReportMetric(float64(len(values))/b.Elapsed().Seconds(), "msgs/s")
}

// model2000 is a model of 1,000 packages × 2 dists = 2,000 targets.
func model2000(b *testing.B) *Model {
	topics, values := buildMessages(b, 2000, 1000)
	m := NewModel()
	now := time.Now().Add(-time.Hour)
	for i := range values {
		if err := m.Apply(topics[i], values[i], now.Add(time.Duration(i)*time.Millisecond)); err != nil {
			b.Fatal(err)
		}
	}
	if n := len(m.Cells(nil)); n != 2000 {
		b.Fatalf("%d targets, want 2000", n)
	}
	return m
}

// BenchmarkOverview2000 renders the overview of 2,000 targets on one page
// (per_page=1000 rows × 2 columns): server time per page and its size.
func BenchmarkOverview2000(b *testing.B) {
	m := model2000(b)
	ui, err := New(Config{Model: m})
	if err != nil {
		b.Fatal(err)
	}
	h := ui.Handler()
	for _, bc := range []struct{ name, path string }{
		{"html", "/ui/?per_page=1000"},
		{"json", "/api/v1/targets?per_page=1000"},
	} {
		for _, enc := range []string{"", "gzip"} {
			b.Run(bc.name+"-"+map[string]string{"": "plain", "gzip": "gzip"}[enc], func(b *testing.B) {
				var size int
				b.ReportAllocs()
				for i := 0; i < b.N; i++ {
					r := httptest.NewRequest("GET", bc.path, nil)
					r.RemoteAddr = "127.0.0.1:1"
					if enc != "" {
						r.Header.Set("Accept-Encoding", enc)
					}
					w := httptest.NewRecorder()
					h.ServeHTTP(w, r)
					if w.Code != 200 || w.Header().Get("Content-Encoding") != enc {
						b.Fatal(w.Code, w.Header())
					}
					size = w.Body.Len()
				}
				b.ReportMetric(float64(size), "bytes/page")
				b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/page")
			})
		}
	}
}

// BenchmarkBrowserOverview2000 loads the overview of 2,000 targets in
// headless Chromium and reports the time to first contentful paint and to
// the load event, as the browser measures them.
func BenchmarkBrowserOverview2000(b *testing.B) {
	m := model2000(b)
	ui, err := New(Config{Model: m})
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(ui.Handler())
	defer srv.Close()
	defer ui.Close()
	ctx := webtest.NewBrowser(b, 1280, 800)
	for _, bc := range []struct{ name, path string }{
		{"all-2000-targets", "/ui/?per_page=1000"},
		{"default-page-1000-targets", "/ui/"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			var fcp, load float64
			for i := 0; i < b.N; i++ {
				webtest.Do(b, ctx, chromedp.Navigate(srv.URL+bc.path), chromedp.WaitVisible("#matrix"))
				// Wait for the load event's timing to be recorded.
				webtest.WaitJS(b, ctx, 10*time.Second, "load timing", `performance.getEntriesByType('navigation')[0].loadEventEnd > 0`)
				fcp += webtest.Eval[float64](b, ctx, `performance.getEntriesByName('first-contentful-paint')[0].startTime`)
				load += webtest.Eval[float64](b, ctx, `performance.getEntriesByType('navigation')[0].loadEventEnd`)
			}
			b.ReportMetric(fcp/float64(b.N), "ms-first-paint")
			b.ReportMetric(load/float64(b.N), "ms-load")
		})
	}
	// Do not count the browser's shutdown.
	b.StopTimer()
}
