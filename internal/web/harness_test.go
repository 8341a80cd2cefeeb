package web

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/cloud-builder/cb/internal/broker"
	"github.com/cloud-builder/cb/internal/message"
)

func testLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// uiSystem is a UI on a real in-process broker: tests publish requests,
// responses and heartbeats as the services would, and the UI follows.
type uiSystem struct {
	t      *testing.T
	broker *broker.Embedded
	client *broker.Client
	model  *Model
	ui     *Server
	srv    *httptest.Server
	url    string
}

const testToken = "ui-test-token"

func newUISystem(t *testing.T, cfg Config) *uiSystem {
	t.Helper()
	emb, err := broker.StartEmbedded(broker.EmbeddedOptions{Listen: "127.0.0.1:0", Partitions: 1, Topics: []string{"debian"}, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { emb.Close() })
	opts := broker.Options{Brokers: emb.Addrs(), Logger: testLogger(t)}
	client, err := broker.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(client.Close)
	s := &uiSystem{t: t, broker: emb, client: client, model: NewModel()}
	cfg.Model, cfg.Publisher, cfg.Token, cfg.Logger = s.model, client, testToken, testLogger(t)
	if s.ui, err = New(cfg); err != nil {
		t.Fatal(err)
	}
	cons, err := NewConsumer(opts, []string{"debian"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		Follow(ctx, cons, s.model, testLogger(t))
	}()
	s.srv = httptest.NewServer(s.ui.Handler())
	s.url = s.srv.URL
	t.Cleanup(func() {
		s.ui.Close()
		s.srv.Close()
		cancel()
		cons.Close()
		<-done
	})
	return s
}

func (s *uiSystem) publish(topic string, v any) {
	s.t.Helper()
	data, err := message.Encode(v)
	if err != nil {
		s.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.client.Publish(ctx, topic, data); err != nil {
		s.t.Fatal(err)
	}
}

// request publishes a build request and waits until the UI has it.
func (s *uiSystem) request(id, project, dist string) {
	s.t.Helper()
	s.publish("debian", pkgRequest(id, project, dist))
	s.waitState(Key(project, dist+".x86_64"), Queued)
}

func (s *uiSystem) respond(id, project, code, msg string, tg *message.Target) {
	s.t.Helper()
	s.publish(message.TopicResponse, response(id, project, code, msg, tg))
}

func (s *uiSystem) waitState(key string, want State) {
	s.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if tg, ok := s.model.Target(key); ok && tg.State == want {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	tg, _ := s.model.Target(key)
	s.t.Fatalf("%s never became %s: %+v", key, want, tg)
}

// chromium finds the browser: on a developer box without it the browser
// tests skip; under CI=true they fail, as every missing tool does.
func chromium(t testing.TB) string {
	t.Helper()
	for _, n := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(n); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("chromium is not installed (scripts/setup installs it)")
	}
	t.Skip("chromium is not installed (scripts/setup installs it)")
	return ""
}

// newBrowser starts a headless Chromium with a fresh profile that talks to
// nothing but the test's servers, and returns a tab's context.
func newBrowser(t testing.TB, width, height int) context.Context {
	t.Helper()
	path := chromium(t)
	actx, cancelA := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(path),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(width, height),
	)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() {
		cancel()
		cancelA()
	})
	// Start the browser now, with the long-lived context.
	if _, err := chromedp.Run(ctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

func do(t testing.TB, ctx context.Context, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(tctx, steps...); err != nil {
		t.Fatal(err)
	}
}

func eval[T any](t testing.TB, ctx context.Context, js string) T {
	t.Helper()
	tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(tctx, chromedp.Evaluate[T](js, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("evaluate %s: %v", js, err)
	}
	return v
}

// waitJS waits until the expression is true in the page. It evaluates
// again and again rather than polling inside the page, so that it rides
// out navigations.
func waitJS(t testing.TB, ctx context.Context, timeout time.Duration, what, js string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		tctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		ok, err := chromedp.Run(tctx, chromedp.Evaluate[bool](js))
		cancel()
		if err == nil && ok {
			return
		}
		last = err
		time.Sleep(50 * time.Millisecond)
	}
	text, _ := chromedp.Run(ctx, chromedp.Evaluate[string]("document.body ? document.body.innerText.slice(0, 3000) : ''"))
	t.Fatalf("%s: not within %s (last error %v)\npage text:\n%s", what, timeout, last, text)
}

// screenshot saves the viewport as <name>.png into $CB_SCREENSHOTS (the
// README's pictures: CB_SCREENSHOTS=$PWD/docs/screenshots) or a temporary
// directory.
func screenshot(t testing.TB, ctx context.Context, name string) string {
	t.Helper()
	dir := os.Getenv("CB_SCREENSHOTS")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "cb-ui-screenshots")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	png, err := chromedp.Run(tctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	p := filepath.Join(dir, name+".png")
	if err := os.WriteFile(p, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot %s", p)
	return p
}

// jsString quotes s for a JavaScript expression.
func jsString(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`, "\n", `\n`).Replace(s) + "'"
}

// remote sends r to h as if it came from another machine.
func remote(h http.Handler, r *http.Request) *httptest.ResponseRecorder {
	r.RemoteAddr = net.JoinHostPort("192.0.2.10", "40000")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}
