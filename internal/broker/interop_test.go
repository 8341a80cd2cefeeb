package broker

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
)

// debianPython is the interpreter of the distribution's python3-kafka
// package, the client library of the original services.
const debianPython = "/usr/bin/python3"

// TestKafkaPythonPeer checks wire compatibility with the original services:
// a kafka-python producer and group consumer (Produce v7, Fetch v4,
// JoinGroup v2 era) exchange records with this package's client through the
// embedded broker. The answers are large and repetitive, so the producer
// compresses them (gzip; with snappy, Debian's python3-kafka, which has no
// snappy codec, would fail); they carry a header, as extensions do.
func TestKafkaPythonPeer(t *testing.T) {
	if err := exec.Command(debianPython, "-c", "import kafka").Run(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("python3-kafka is required in CI: %v", err)
		}
		t.Skipf("python3-kafka not installed: %v", err)
	}
	e := newCluster(t, withTopics(2, "py-requests", "go-responses"))
	ctx := testContext(t, 50*time.Second)
	const n = 20

	// The Go side answers like a runner: group member, publish, then ack.
	cl := newClient(t, e)
	con := newConsumer(t, e, ConsumerConfig{Group: "go-runners", Topics: []string{"py-requests"}})
	go func() {
		for ctx.Err() == nil {
			recs, err := con.Poll(ctx)
			if err != nil {
				continue
			}
			for _, r := range recs {
				answer := "re:" + string(r.Value) + " " + strings.Repeat("binary_packages: [] ", 400)
				if err := cl.PublishHeaders(ctx, "go-responses", []byte(answer), []Header{{Key: "cb-test", Value: "v1"}}); err != nil {
					return
				}
			}
			_ = con.Ack(ctx, recs...)
		}
	}()

	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, debianPython, "testdata/kafka_python_peer.py",
		strings.Join(e.Addrs(), ","), "py-requests", "go-responses", fmt.Sprint(n))
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("kafka-python peer: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	for i := range n {
		if !strings.Contains(stdout.String(), fmt.Sprintf("got re:py-%d headers cb-test=v1\n", i)) {
			t.Errorf("python peer did not get the answer to py-%d", i)
		}
	}

	// The Python group's manual commits reached the broker.
	offs, err := kadm.NewClient(cl.cl).FetchOffsets(ctx, "py-readers")
	if err != nil {
		t.Fatal(err)
	}
	var committed int64
	offs.Each(func(o kadm.OffsetResponse) {
		if o.Topic == "go-responses" {
			committed += o.At
		}
	})
	if committed != n {
		t.Errorf("python group committed %d records, want %d", committed, n)
	}
}
