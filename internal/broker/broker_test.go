package broker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
)

func TestMain(m *testing.M) {
	// The crash test runs a group member in a child process that it
	// kills with SIGKILL; the child is this test binary.
	if os.Getenv(childEnv) != "" {
		os.Exit(runChild())
	}
	os.Exit(m.Run())
}

// testLogger keeps kgo's and kfake's chatter out of test output unless
// CB_TEST_LOG is set.
func testLogger() *slog.Logger {
	if os.Getenv("CB_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

type clusterOpt func(*EmbeddedOptions)

func withDataDir(dir string) clusterOpt { return func(o *EmbeddedOptions) { o.DataDir = dir } }

func withTopics(partitions int32, topics ...string) clusterOpt {
	return func(o *EmbeddedOptions) { o.Partitions, o.Topics = partitions, topics }
}

func withKfake(opts ...kfake.Opt) clusterOpt {
	return func(o *EmbeddedOptions) { o.extra = append(o.extra, opts...) }
}

// newCluster starts an embedded broker on a random loopback port. Groups may
// use session timeouts down to 500ms so that dead members are noticed fast.
func newCluster(t *testing.T, opts ...clusterOpt) *Embedded {
	t.Helper()
	eo := EmbeddedOptions{
		Listen: "127.0.0.1:0",
		Logger: testLogger(),
		extra:  []kfake.Opt{kfake.GroupMinSessionTimeout(500 * time.Millisecond)},
	}
	for _, o := range opts {
		o(&eo)
	}
	e, err := StartEmbedded(eo)
	if err != nil {
		t.Fatalf("start embedded broker: %v", err)
	}
	t.Cleanup(func() {
		if err := e.Close(); err != nil {
			t.Errorf("close embedded broker: %v", err)
		}
	})
	return e
}

func clientOpts(e *Embedded) Options {
	return Options{Brokers: e.Addrs(), ClientID: "cb-test", Logger: testLogger()}
}

func newClient(t *testing.T, e *Embedded) *Client {
	t.Helper()
	c, err := New(clientOpts(e))
	if err != nil {
		t.Fatalf("new client: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

func newConsumer(t *testing.T, e *Embedded, cfg ConsumerConfig) *Consumer {
	t.Helper()
	c, err := NewConsumer(clientOpts(e), cfg)
	if err != nil {
		t.Fatalf("new consumer: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

func testContext(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

// publishN publishes "prefix-0" … "prefix-(n-1)" in bulk and waits until all
// are durable.
func publishN(t *testing.T, ctx context.Context, c *Client, topic, prefix string, n int) {
	t.Helper()
	for i := range n {
		c.PublishAsync(ctx, topic, fmt.Appendf(nil, "%s-%d", prefix, i), nil)
	}
	if err := c.Flush(ctx); err != nil {
		t.Fatalf("flush: %v", err)
	}
}

// collector gathers records from a consumer loop running in the background.
type collector struct {
	mu   sync.Mutex
	recs []Record
	errs []error
	done chan struct{}
}

// consume polls c until ctx is done or c is closed, acking every record when
// ack is set.
func consume(ctx context.Context, c *Consumer, ack bool) *collector {
	col := &collector{done: make(chan struct{})}
	go func() {
		defer close(col.done)
		for {
			recs, err := c.Poll(ctx)
			if err != nil {
				if ctx.Err() != nil || errors.Is(err, ErrClosed) {
					return
				}
				col.mu.Lock()
				col.errs = append(col.errs, err)
				col.mu.Unlock()
				continue
			}
			if ack && len(recs) > 0 {
				if err := c.Ack(ctx, recs...); err != nil && ctx.Err() == nil {
					col.mu.Lock()
					col.errs = append(col.errs, err)
					col.mu.Unlock()
				}
			}
			col.mu.Lock()
			col.recs = append(col.recs, recs...)
			col.mu.Unlock()
		}
	}()
	return col
}

func (col *collector) snapshot() []Record {
	col.mu.Lock()
	defer col.mu.Unlock()
	return append([]Record(nil), col.recs...)
}

func (col *collector) count() int {
	col.mu.Lock()
	defer col.mu.Unlock()
	return len(col.recs)
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// assignedCount returns how many partitions the member currently owns.
func (c *Consumer) assignedCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.parts)
}

func (c *Consumer) generation() int32 {
	_, gen := c.cl.GroupMetadata()
	return gen
}
