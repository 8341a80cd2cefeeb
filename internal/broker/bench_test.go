package broker

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloud-builder/cb/internal/message"
)

// benchTopic makes a fresh topic name per benchmark round, so that each
// round starts on an empty log.
var benchRound atomic.Int64

func benchTopic(prefix string) string {
	return fmt.Sprintf("%s-%d", prefix, benchRound.Add(1))
}

func benchCluster(b *testing.B, fsync bool) *Embedded {
	b.Helper()
	e, err := StartEmbedded(EmbeddedOptions{Listen: "127.0.0.1:0", DataDir: b.TempDir(), Fsync: fsync, Logger: testLogger()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = e.Close() })
	return e
}

// BenchmarkPublishConsume measures publish→consume throughput on one
// partition of the embedded broker (persisting to disk, with and without
// fsync): a bulk producer
// with a final flush, and a direct reader that must see every record.
// Payloads: 256 zero bytes, and a final build response as the services
// publish it (YAML, about 1 KiB), which compresses like real traffic.
func BenchmarkPublishConsume(b *testing.B) {
	response := benchResponse(b)
	for _, fsync := range []bool{false, true} {
		b.Run("fsync="+strconv.FormatBool(fsync), func(b *testing.B) {
			b.Run("payload=zeros256", func(b *testing.B) { benchPublishConsume(b, fsync, make([]byte, 256)) })
			b.Run("payload=response", func(b *testing.B) { benchPublishConsume(b, fsync, response) })
		})
	}
}

// benchResponse is a package build's final response.
func benchResponse(b *testing.B) []byte {
	root := "/var/tmp/CB/projects/Debian/cb-hello@bookworm.x86_64"
	resp := &message.Response{
		SchemaVersion: message.SchemaVersion, RequestID: "9d340462-3f21-4a2d-8647-5896bb207eae",
		Identity: "CBRun:10.0.0.5:5279:projects/Debian/cb-hello", Project: "projects/Debian/cb-hello",
		ResponseCode: message.PackageBuildSucceeded, Message: "Package build finished",
		Package: &message.PackageResult{
			PrepareLogFile: root + ".prepare.log", LogFile: root + ".build.log", SolverFile: root + ".solver.json",
			BinaryPackages: []string{
				root + ".binaries/projects/Debian/bookworm/amd64/cb-hello-dbgsym_1.0.0-1_amd64.deb",
				root + ".binaries/projects/Debian/bookworm/amd64/cb-hello_1.0.0-1_amd64.deb",
				root + ".binaries/projects/Debian/bookworm/source/cb-hello_1.0.0-1.dsc",
				root + ".binaries/projects/Debian/bookworm/source/cb-hello_1.0.0-1.tar.xz",
			},
		},
	}
	data, err := message.Encode(resp)
	if err != nil {
		b.Fatal(err)
	}
	return data
}

func benchPublishConsume(b *testing.B, fsync bool, value []byte) {
	e := benchCluster(b, fsync)
	ctx := context.Background()
	cl, err := New(Options{Brokers: e.Addrs(), Logger: testLogger()})
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	var msgs int
	var spent time.Duration

	for b.Loop() {
		b.StopTimer()
		topic := benchTopic("throughput")
		if err := cl.EnsureTopics(ctx, 1, 0, topic); err != nil {
			b.Fatal(err)
		}
		con, err := NewConsumer(Options{Brokers: e.Addrs(), Logger: testLogger()}, ConsumerConfig{Topics: []string{topic}})
		if err != nil {
			b.Fatal(err)
		}
		const n = 20000
		b.StartTimer()
		start := time.Now()
		for range n {
			cl.PublishAsync(ctx, topic, value, nil)
		}
		if err := cl.Flush(ctx); err != nil {
			b.Fatal(err)
		}
		got := 0
		for got < n {
			recs, err := con.Poll(ctx)
			if err != nil {
				b.Fatal(err)
			}
			got += len(recs)
		}
		spent += time.Since(start)
		msgs += n
		b.StopTimer()
		con.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(msgs)/spent.Seconds(), "msgs/s")
}

// BenchmarkRequestResponse measures the round trip a client sees: publish a
// request on one topic, a responder consumes it and publishes the answer on
// another, the client waits for it.
func BenchmarkRequestResponse(b *testing.B) {
	for _, fsync := range []bool{false, true} {
		b.Run("fsync="+strconv.FormatBool(fsync), func(b *testing.B) { benchRequestResponse(b, fsync) })
	}
}

func benchRequestResponse(b *testing.B, fsync bool) {
	e := benchCluster(b, fsync)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	opts := Options{Brokers: e.Addrs(), Logger: testLogger()}
	reqTopic, respTopic := benchTopic("rt-request"), benchTopic("rt-response")
	cl, err := New(opts)
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	if err := cl.EnsureTopics(ctx, 1, 0, reqTopic, respTopic); err != nil {
		b.Fatal(err)
	}

	// The responder works like a runner: a group member that acks each
	// request after answering it.
	responder, err := NewConsumer(opts, ConsumerConfig{Group: "responders", Topics: []string{reqTopic}})
	if err != nil {
		b.Fatal(err)
	}
	defer responder.Close()
	go func() {
		for ctx.Err() == nil {
			recs, err := responder.Poll(ctx)
			if err != nil {
				continue
			}
			for _, r := range recs {
				if err := cl.Publish(ctx, respTopic, r.Value); err != nil {
					return
				}
			}
			_ = responder.Ack(ctx, recs...)
		}
	}()
	client, err := NewConsumer(opts, ConsumerConfig{Topics: []string{respTopic}})
	if err != nil {
		b.Fatal(err)
	}
	defer client.Close()

	var lat []time.Duration
	seq := 0
	roundTrip := func() time.Duration {
		seq++
		want := strconv.Itoa(seq)
		start := time.Now()
		if err := cl.Publish(ctx, reqTopic, []byte(want)); err != nil {
			b.Fatal(err)
		}
		for {
			recs, err := client.Poll(ctx)
			if err != nil {
				b.Fatal(err)
			}
			for _, r := range recs {
				if string(r.Value) == want {
					return time.Since(start)
				}
			}
		}
	}
	// Warm up: connections, group join, fetch sessions.
	for range 20 {
		roundTrip()
	}
	for b.Loop() {
		lat = append(lat, roundTrip())
	}
	slices.Sort(lat)
	pct := func(p float64) float64 {
		return float64(lat[min(len(lat)-1, int(float64(len(lat))*p))].Microseconds()) / 1000
	}
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
}
