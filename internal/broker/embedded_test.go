package broker

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// readAll reads n records from topic with a fresh direct reader.
func readAll(t *testing.T, e *Embedded, topic string, n int) []Record {
	t.Helper()
	ctx := testContext(t, 20*time.Second)
	c := newConsumer(t, e, ConsumerConfig{Topics: []string{topic}})
	defer c.Close()
	var recs []Record
	for len(recs) < n {
		got, err := c.Poll(ctx)
		if err != nil {
			t.Fatalf("read %s: have %d of %d records: %v", topic, len(recs), n, err)
		}
		recs = append(recs, got...)
	}
	return recs
}

func TestEmbeddedSurvivesRestart(t *testing.T) {
	for _, fsync := range []bool{false, true} {
		t.Run("fsync="+strconv.FormatBool(fsync), func(t *testing.T) {
			dir := t.TempDir()
			withFsync := func(o *EmbeddedOptions) { o.Fsync = fsync }
			e := newCluster(t, withDataDir(dir), withTopics(2, "durable"), withFsync)
			ctx := testContext(t, 40*time.Second)
			const n = 100
			publishN(t, ctx, newClient(t, e), "durable", "job", n)

			// A runner finishes 60 jobs and dies with the rest open.
			c, err := NewConsumer(clientOpts(e), ConsumerConfig{Group: "runners", Topics: []string{"durable"}})
			if err != nil {
				t.Fatal(err)
			}
			var recs []Record
			for len(recs) < n {
				got, err := c.Poll(ctx)
				if err != nil {
					t.Fatalf("poll: %v", err)
				}
				recs = append(recs, got...)
			}
			done := map[string]bool{}
			for _, r := range recs {
				if len(done) < 60 {
					if err := c.Ack(ctx, r); err != nil {
						t.Fatalf("ack: %v", err)
					}
					done[string(r.Value)] = true
				}
			}
			c.Close()
			if err := e.Close(); err != nil {
				t.Fatal(err)
			}

			e2 := newCluster(t, withDataDir(dir), withTopics(2, "durable"), withFsync)
			// Every record is still there …
			got := values(readAll(t, e2, "durable", n))
			for i := range n {
				if got[fmt.Sprintf("job-%d", i)] != 1 {
					t.Errorf("job-%d: %d copies after restart", i, got[fmt.Sprintf("job-%d", i)])
				}
			}
			// … and the group continues where it committed.
			col := consume(ctx, newConsumer(t, e2, ConsumerConfig{Group: "runners", Topics: []string{"durable"}}), true)
			waitFor(t, 20*time.Second, "the open jobs", func() bool { return col.count() >= n-len(done) })
			time.Sleep(300 * time.Millisecond)
			again := values(col.snapshot())
			if len(col.snapshot()) != n-len(done) {
				t.Errorf("%d records redelivered, want %d", len(col.snapshot()), n-len(done))
			}
			for v := range again {
				if done[v] {
					t.Errorf("acked %s redelivered after restart", v)
				}
			}
			// New records continue the old offsets.
			cl := newClient(t, e2)
			if err := cl.Publish(ctx, "durable", []byte("after")); err != nil {
				t.Fatal(err)
			}
			waitFor(t, 10*time.Second, "record published after restart", func() bool { return col.count() > n-len(done) })
			last := col.snapshot()[col.count()-1]
			if string(last.Value) != "after" || last.Offset < int64(n/2) {
				t.Errorf("record after restart: %q at offset %d", last.Value, last.Offset)
			}
		})
	}
}

func TestEmbeddedCreatesTopics(t *testing.T) {
	dir := t.TempDir()
	e := newCluster(t, withDataDir(dir), withTopics(3, "suse"))
	ctx := testContext(t, 20*time.Second)
	partitions := func(e *Embedded) map[string]int {
		cl, err := kgo.NewClient(kgo.SeedBrokers(e.Addrs()...))
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		td, err := kadm.NewClient(cl).ListTopics(ctx)
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]int{}
		for _, d := range td {
			m[d.Topic] = len(d.Partitions)
		}
		return m
	}
	want := map[string]int{"cb-response": 3, "cb-info-request": 3, "cb-info-response": 3, "cb-build-request": 3, "cb-heartbeat": 3, "suse": 3}
	if got := partitions(e); !mapsEqual(got, want) {
		t.Errorf("topics = %v, want %v", got, want)
	}

	// The data dir belongs to one broker at a time.
	if _, err := StartEmbedded(EmbeddedOptions{DataDir: dir, Logger: testLogger()}); err == nil || !strings.Contains(err.Error(), "used by another broker") {
		t.Errorf("second broker on the same data dir: %v", err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Errorf("second close: %v", err)
	}

	// A restart with a new runner group and more partitions keeps the
	// old topics, grows the ones it is told about and leaves the rest.
	e2 := newCluster(t, withDataDir(dir), withTopics(4, "fedora"))
	want = map[string]int{"cb-response": 4, "cb-info-request": 4, "cb-info-response": 4, "cb-build-request": 4, "cb-heartbeat": 4, "suse": 3, "fedora": 4}
	if got := partitions(e2); !mapsEqual(got, want) {
		t.Errorf("topics after restart = %v, want %v", got, want)
	}
}

func mapsEqual(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func TestEmbeddedOptions(t *testing.T) {
	tests := []struct {
		name    string
		opts    EmbeddedOptions
		wantErr string
	}{
		{"bad address", EmbeddedOptions{Listen: "nonsense"}, "listen address"},
		{"bad port", EmbeddedOptions{Listen: "127.0.0.1:http"}, "bad port"},
		{"bad topic", EmbeddedOptions{Topics: []string{"../etc"}}, "topic name"},
		{"port in use", EmbeddedOptions{Listen: "busy"}, "address already in use"},
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.opts.Listen == "busy" {
				tt.opts.Listen = ln.Addr().String()
			}
			tt.opts.Logger = testLogger()
			e, err := StartEmbedded(tt.opts)
			if err == nil {
				e.Close()
				t.Fatal("started")
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %q does not mention %q", err, tt.wantErr)
			}
		})
	}
}

func TestEmbeddedAdvertisesReachableAddress(t *testing.T) {
	e := newCluster(t, func(o *EmbeddedOptions) { o.Listen = ":0"; o.Advertise = "127.0.0.1" })
	addrs := e.Addrs()
	if len(addrs) != 1 || !strings.HasPrefix(addrs[0], "127.0.0.1:") {
		t.Fatalf("addrs = %v", addrs)
	}
	ctx := testContext(t, 10*time.Second)
	if err := newClient(t, e).Ping(ctx); err != nil {
		t.Fatal(err)
	}
	if h := advertiseHost("0.0.0.0"); h == "" || h == "0.0.0.0" {
		t.Errorf("advertise host for 0.0.0.0 = %q", h)
	}
	if h := advertiseHost("10.1.2.3"); h != "10.1.2.3" {
		t.Errorf("advertise host for 10.1.2.3 = %q", h)
	}
}

func TestEnsureTopics(t *testing.T) {
	e := newCluster(t)
	ctx := testContext(t, 20*time.Second)
	cl := newClient(t, e)
	if err := cl.EnsureTopics(ctx, 2, time.Hour, "suse", "fedora"); err != nil {
		t.Fatal(err)
	}
	if err := cl.EnsureTopics(ctx, 2, time.Hour, "suse"); err != nil {
		t.Fatalf("existing topic: %v", err)
	}
	if err := cl.EnsureTopics(ctx, 5, time.Hour, "suse"); err != nil {
		t.Fatalf("grow: %v", err)
	}
	if err := cl.EnsureTopics(ctx, 1, 0, "suse"); err != nil {
		t.Fatalf("fewer partitions than exist: %v", err)
	}
	adm := cl.adm
	td, err := adm.ListTopics(ctx, "suse", "fedora")
	if err != nil {
		t.Fatal(err)
	}
	if n := len(td["suse"].Partitions); n != 5 {
		t.Errorf("suse has %d partitions, want 5", n)
	}
	if n := len(td["fedora"].Partitions); n != 2 {
		t.Errorf("fedora has %d partitions, want 2", n)
	}
	cfgs, err := adm.DescribeTopicConfigs(ctx, "fedora")
	if err != nil {
		t.Fatal(err)
	}
	rc, err := cfgs.On("fedora", nil)
	if err != nil {
		t.Fatal(err)
	}
	var retention string
	for _, c := range rc.Configs {
		if c.Key == "retention.ms" {
			retention = c.MaybeValue()
		}
	}
	if retention != "3600000" {
		t.Errorf("retention.ms = %q, want 3600000", retention)
	}
	for _, bad := range []string{"", "a/b", "../x", strings.Repeat("x", 250), "with space"} {
		if err := cl.EnsureTopics(ctx, 1, 0, bad); err == nil {
			t.Errorf("EnsureTopics(%q) succeeded", bad)
		}
	}
}

func TestPingUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	cl, err := New(Options{Brokers: []string{addr}, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	err = cl.Ping(testContext(t, 10*time.Second))
	if err == nil || !strings.HasPrefix(err.Error(), "broker unreachable: "+addr) {
		t.Errorf("ping = %v, want broker unreachable: %s…", err, addr)
	}
	if err := cl.Publish(testContext(t, 2*time.Second), "x", []byte("y")); err == nil {
		t.Error("publish to an unreachable broker succeeded")
	}
}

func TestOptionsValidation(t *testing.T) {
	tests := []struct {
		name    string
		opts    Options
		wantErr string
	}{
		{"no broker", Options{}, "no broker address"},
		{"no port", Options{Brokers: []string{"localhost"}}, "broker address \"localhost\""},
		{"bad sasl", Options{Brokers: []string{"h:9092"}, SASL: &SASL{Mechanism: "GSSAPI", User: "u"}}, "unsupported mechanism"},
		{"sasl without user", Options{Brokers: []string{"h:9092"}, SASL: &SASL{Mechanism: "PLAIN"}}, "user is empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := New(tt.opts); err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("New: %v, want %q", err, tt.wantErr)
			}
			if _, err := NewConsumer(tt.opts, ConsumerConfig{Topics: []string{"t"}}); err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("NewConsumer: %v, want %q", err, tt.wantErr)
			}
		})
	}
	if _, err := NewConsumer(Options{Brokers: []string{"h:1"}}, ConsumerConfig{}); err == nil {
		t.Error("consumer without topics accepted")
	}
}

// TestClientsRideOutABrokerRestart stops the broker under a running
// consumer loop and a producer: the loop sees wrapped errors and keeps
// polling, and both carry on once the broker is back on the same address.
func TestClientsRideOutABrokerRestart(t *testing.T) {
	dir := t.TempDir()
	e := newCluster(t, withDataDir(dir), withTopics(1, "restart"))
	addr := e.Addrs()[0]
	ctx := testContext(t, 50*time.Second)
	cl := newClient(t, e)
	con := newConsumer(t, e, ConsumerConfig{Group: "g", Topics: []string{"restart"}, MaxWait: 200 * time.Millisecond})
	col := consume(ctx, con, true)
	if err := cl.Publish(ctx, "restart", []byte("before")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "first record", func() bool { return col.count() == 1 })

	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	pctx, pcancel := context.WithTimeout(ctx, 500*time.Millisecond)
	err := cl.Ping(pctx)
	pcancel()
	if err == nil || !strings.Contains(err.Error(), "broker unreachable") {
		t.Errorf("ping while the broker is down: %v", err)
	}
	time.Sleep(2 * time.Second) // the loop polls against a dead broker

	newCluster(t, withDataDir(dir), withTopics(1, "restart"), func(o *EmbeddedOptions) { o.Listen = addr })
	if err := cl.Publish(ctx, "restart", []byte("after")); err != nil {
		t.Fatalf("publish after restart: %v", err)
	}
	waitFor(t, 30*time.Second, "record after restart", func() bool { return col.count() == 2 })
	got := col.snapshot()
	if string(got[0].Value) != "before" || string(got[1].Value) != "after" {
		t.Errorf("records %q, %q", got[0].Value, got[1].Value)
	}
	col.mu.Lock()
	for _, err := range col.errs {
		t.Logf("poll error during the outage: %v", err)
	}
	col.mu.Unlock()
}

// A publish ends with its context when the broker is gone, and so does
// closing the client: a service stopping beside a stopped broker (its
// last heartbeat) must not hang.
func TestPublishEndsWithItsContextWhenTheBrokerIsGone(t *testing.T) {
	e := newCluster(t, withTopics(1, "gone"))
	ctx := testContext(t, 50*time.Second)
	cl, err := New(clientOpts(e))
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.Publish(ctx, "gone", []byte("before")); err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	returned := make(chan error, 1)
	go func() {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		returned <- cl.Publish(pctx, "gone", []byte("after"))
	}()
	select {
	case err := <-returned:
		if err == nil {
			t.Error("publish to a stopped broker succeeded")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("publish did not end with its context")
	}
	closed := make(chan struct{})
	go func() { cl.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(30 * time.Second):
		t.Fatal("closing the client hangs")
	}
}
