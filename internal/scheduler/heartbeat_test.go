package scheduler

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/cloud-builder/cb/internal/message"
)

type recorder struct {
	mu   sync.Mutex
	msgs map[string][][]byte
}

func (r *recorder) Publish(_ context.Context, topic string, value []byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.msgs == nil {
		r.msgs = map[string][][]byte{}
	}
	r.msgs[topic] = append(r.msgs[topic], value)
	return nil
}

func (r *recorder) heartbeats(t *testing.T) []*message.Heartbeat {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*message.Heartbeat
	for _, d := range r.msgs[message.TopicHeartbeat] {
		h, err := message.DecodeHeartbeat(d)
		if err != nil {
			t.Fatalf("published heartbeat does not decode: %v", err)
		}
		out = append(out, h)
	}
	return out
}

func TestHeartbeatIsPeriodicAndSaysGoodbye(t *testing.T) {
	rec := &recorder{}
	s, err := New(Config{RunnerGroup: "debian", RunnerRoot: t.TempDir(), ThisHost: "10.1.2.3", BuildLimit: 3,
		JobCommand: []string{"true"}, Publisher: rec, ArtifactURL: "http://10.1.2.3:8081",
		HeartbeatInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stop := s.startHeartbeat(ctx)
	deadline := time.Now().Add(5 * time.Second)
	for len(rec.heartbeats(t)) < 3 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	stop()
	hbs := rec.heartbeats(t)
	if len(hbs) < 4 {
		t.Fatalf("got %d heartbeats, want at least 3 periodic and a last one", len(hbs))
	}
	for _, h := range hbs[:len(hbs)-1] {
		if h.Stopping || h.RunnerGroup != "debian" || h.SourceIP != "10.1.2.3" || h.BuildLimit != 3 ||
			h.ArtifactURL != "http://10.1.2.3:8081" || h.QueueLag != -1 || h.Interval != 0.02 {
			t.Errorf("periodic heartbeat %+v", h)
		}
	}
	if last := hbs[len(hbs)-1]; !last.Stopping {
		t.Errorf("last heartbeat %+v is not marked stopping", last)
	}
}
