package scheduler

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cloud-builder/cb/internal/broker"
	"github.com/cloud-builder/cb/internal/journal"
	"github.com/cloud-builder/cb/internal/message"
	"github.com/cloud-builder/cb/internal/target"
)

// TestRecoverClosesThePublishJournalWindow covers a crash between
// publishing the final response and journaling that it was published:
// recovery must not publish it a second time. A final response that never
// reached the broker is published once.
func TestRecoverClosesThePublishJournalWindow(t *testing.T) {
	c := newTestCluster(t, 1, 2)
	root := filepath.Join(c.dir, "runner")
	since := time.Now().Add(-time.Hour)
	reader, err := broker.NewConsumer(broker.Options{Brokers: []string{c.addr}, Logger: slog.New(slog.DiscardHandler)},
		broker.ConsumerConfig{Topics: []string{message.TopicResponse, message.TopicHeartbeat}, Start: broker.AtTime(since)})
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	ledger := NewLedger(reader, since, "runner", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	go func() { _ = ledger.Run(ctx) }()
	s, err := New(Config{RunnerGroup: "suse", RunnerRoot: root, Sources: c.sources, ThisHost: "runner", HostArch: "x86_64",
		JobCommand: []string{"false"}, Publisher: c.pub, Ledger: ledger})
	if err != nil {
		t.Fatal(err)
	}
	j, err := journal.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	finished := func(i int, published bool) string {
		id := c.request(i) // only for a fresh id; nobody consumes the topic here
		req := &message.BuildRequest{SchemaVersion: message.SchemaVersion, RequestID: id, RunnerGroup: "suse",
			Action: message.ActionPackageRebuild, Project: "projects/T/pkg0" + string(rune('0'+i)),
			Package: &message.PackageTarget{Dist: "TW", Arch: "x86_64"}}
		e, _, err := j.Add(req, false)
		if err != nil {
			t.Fatal(err)
		}
		tg, _ := target.ForRequest(root, req)
		if err := os.MkdirAll(filepath.Dir(tg.Dir()), 0o755); err != nil {
			t.Fatal(err)
		}
		data, _ := message.Encode(&message.Response{SchemaVersion: message.SchemaVersion, RequestID: id, Project: req.Project,
			Identity: "CBRun:runner:1:" + req.Project, ResponseCode: message.PackageBuildSucceeded, Message: "built"})
		if err := os.WriteFile(tg.ResultFile(), data, 0o644); err != nil {
			t.Fatal(err)
		}
		e.Code = message.PackageBuildSucceeded
		if err := e.Advance(journal.Finished); err != nil {
			t.Fatal(err)
		}
		if published {
			if err := c.pub.Publish(ctx, message.TopicResponse, data); err != nil {
				t.Fatal(err)
			}
		}
		return id
	}
	sent := finished(0, true)     // crashed after publishing
	notSent := finished(1, false) // crashed before publishing
	if err := ledger.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 10*time.Second, "the unsent final response", func() bool { return len(c.finals(notSent)) == 1 })
	time.Sleep(time.Second)
	for _, id := range []string{sent, notSent} {
		if n := len(c.finals(id)); n != 1 {
			t.Errorf("request %s: %d final responses on the topic, want 1", id, n)
		}
		e, err := j.Get(id)
		if err != nil || e.State != journal.Responded {
			t.Errorf("request %s: journal %+v, %v; want responded", id, e, err)
		}
	}
}
