package collect_test

import (
	"context"
	"sync"
	"testing"

	"github.com/cloud-builder/cb/internal/collect"
	"github.com/cloud-builder/cb/internal/message"
	"github.com/cloud-builder/cb/internal/repo/repotest"
)

// recorder keeps what the collector publishes.
type recorder struct {
	mu   sync.Mutex
	msgs map[string][][]byte
}

func (r *recorder) Publish(_ context.Context, topic string, v []byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.msgs == nil {
		r.msgs = map[string][][]byte{}
	}
	r.msgs[topic] = append(r.msgs[topic], v)
	return nil
}

// Every published upload is announced on cb-response, also a repeated
// (unchanged) one, with the build's request id and project.
func TestPublishEvent(t *testing.T) {
	repotest.RequireTools(t, "rpmbuild", "createrepo_c")
	rec := &recorder{}
	ts := newServer(t, func(c *collect.Config) { c.Events = rec; c.ThisHost = "collector.test" })
	u := rpmUpload(t, "cb-hello", "1.0")
	for i := 0; i < 2; i++ {
		if err := ts.client().Upload(ctxT(t), u); err != nil {
			t.Fatal(err)
		}
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.msgs[message.TopicResponse]) != 2 {
		t.Fatalf("events = %d, want 2", len(rec.msgs[message.TopicResponse]))
	}
	for i, raw := range rec.msgs[message.TopicResponse] {
		r, err := message.DecodeResponse(raw)
		if err != nil {
			t.Fatal(err)
		}
		if r.ResponseCode != message.BinariesPublished || r.Project != u.Project || r.RequestID != u.RequestID ||
			r.Target == nil || r.Target.Dist != "TW" {
			t.Fatalf("event %d = %+v", i, r)
		}
	}
}
