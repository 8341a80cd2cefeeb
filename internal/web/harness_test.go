package web

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
	"time"

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

// remote sends r to h as if it came from another machine.
func remote(h http.Handler, r *http.Request) *httptest.ResponseRecorder {
	r.RemoteAddr = net.JoinHostPort("192.0.2.10", "40000")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}
