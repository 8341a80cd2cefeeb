package broker

import (
	"context"
	"errors"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.yaml.in/yaml/v3"

	"github.com/cloud-builder/cb/internal/message"
)

// request returns a build request document with fields replaced (nil value:
// removed).
func request(t *testing.T, change map[string]any) []byte {
	t.Helper()
	doc := map[string]any{
		"schema_version": 0.2,
		"request_id":     "d86697ee-e999-11f1-8883-02fc00000001",
		"runner_group":   "suse",
		"action":         "package rebuild requested",
		"project":        "projects/MS/xclock",
		"package":        map[string]any{"arch": "x86_64", "dist": "TW"},
	}
	maps.Copy(doc, change)
	for k, v := range doc {
		if v == nil {
			delete(doc, k)
		}
	}
	b, err := yaml.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

const aliasBomb = `a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
`

// TestMalformedRequestsDoNotStopTheConsumer feeds a request queue with
// hostile and broken documents. Each must be rejected with an error that
// names the offending field, acknowledged so that it never comes back, and
// the loop must go on to the valid request behind them.
func TestMalformedRequestsDoNotStopTheConsumer(t *testing.T) {
	bad := []struct {
		name    string
		doc     []byte
		wantErr string
	}{
		{"not yaml", []byte("{{{[[[ : : :"), "not YAML"},
		{"binary", []byte{0xff, 0xfe, 0x00, 0x01, 0x80}, "not YAML"},
		{"empty", []byte(""), "empty document"},
		{"list", []byte("- a\n- b\n"), "not a mapping"},
		{"scalar", []byte("just text"), "not a mapping"},
		{"schema_version string", request(t, map[string]any{"schema_version": "new"}), "schema_version: must be a number"},
		{"request_id number", request(t, map[string]any{"request_id": 12}), "request_id: must be a string"},
		{"request_id missing", request(t, map[string]any{"request_id": nil}), "request_id: required"},
		{"request_id with slash", request(t, map[string]any{"request_id": "../../x"}), "request_id: invalid name"},
		{"runner_group missing", request(t, map[string]any{"runner_group": nil}), "runner_group: required"},
		{"runner_group shell", request(t, map[string]any{"runner_group": "suse; rm -rf /"}), "runner_group: invalid name"},
		{"action unknown", request(t, map[string]any{"action": "rm -rf /"}), "action: unknown action"},
		{"action list", request(t, map[string]any{"action": []string{"a"}}), "action: must be a string"},
		{"project traversal", request(t, map[string]any{"project": "../../etc"}), "project: invalid project"},
		{"project escapes", request(t, map[string]any{"project": "projects/../../etc"}), "project: invalid project"},
		{"project absolute", request(t, map[string]any{"project": "/etc/passwd"}), "project: invalid project"},
		{"project missing", request(t, map[string]any{"project": nil}), "project: required"},
		{"package scalar", request(t, map[string]any{"package": "xclock"}), "package: must be a mapping"},
		{"package.arch list", request(t, map[string]any{"package": map[string]any{"arch": []int{1}, "dist": "TW"}}), "package.arch: must be a string"},
		{"package.dist missing", request(t, map[string]any{"package": map[string]any{"arch": "x86_64"}}), "package.dist: required"},
		{"no target", request(t, map[string]any{"package": nil}), "package: required"},
		{"package and image", request(t, map[string]any{"image": map[string]any{"arch": "x86_64", "selection": "std"}}), "image: not allowed"},
		{"5 MiB", append(request(t, nil), "\nfiller: "+strings.Repeat("x", 5<<20)+"\n"...), "exceeds 1 MiB"},
		{"alias bomb", []byte(aliasBomb), "alias"},
	}
	good := request(t, map[string]any{"request_id": "good-one"})

	// Real clusters cap records at 1 MB by default; a hostile producer on a
	// cluster configured larger must still not hurt the consumer.
	e := newCluster(t, withTopics(1, "suse"), withKfake(kfake.BrokerConfigs(map[string]string{"message.max.bytes": "16777216"})))
	ctx := testContext(t, 40*time.Second)
	producer, err := kgo.NewClient(kgo.SeedBrokers(e.Addrs()...), kgo.ProducerBatchMaxBytes(16<<20), kgo.DefaultProduceTopic("suse"))
	if err != nil {
		t.Fatal(err)
	}
	defer producer.Close()
	for _, b := range bad {
		if err := producer.ProduceSync(ctx, &kgo.Record{Value: b.doc}).FirstErr(); err != nil {
			t.Fatalf("produce %s: %v", b.name, err)
		}
	}
	if err := producer.ProduceSync(ctx, &kgo.Record{Value: good}).FirstErr(); err != nil {
		t.Fatal(err)
	}

	// The loop a runner runs: decode, on error log and ack, carry on.
	c := newConsumer(t, e, ConsumerConfig{Group: "suse", Topics: []string{"suse"}})
	var rejected []error
	var accepted *message.BuildRequest
	for accepted == nil {
		recs, err := c.Poll(ctx)
		if err != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("loop stopped after %d rejected documents: %v", len(rejected), err)
			}
			continue
		}
		for _, r := range recs {
			req, err := message.DecodeBuildRequest(r.Value)
			if err != nil {
				rejected = append(rejected, err)
			} else {
				accepted = req
			}
			if err := c.Ack(ctx, r); err != nil {
				t.Fatalf("ack: %v", err)
			}
		}
	}
	if accepted.RequestID != "good-one" {
		t.Errorf("accepted request %q", accepted.RequestID)
	}
	if len(rejected) != len(bad) {
		t.Fatalf("%d documents rejected, want %d: %v", len(rejected), len(bad), rejected)
	}
	for i, b := range bad {
		t.Run(b.name, func(t *testing.T) {
			t.Log(rejected[i])
			if !strings.Contains(rejected[i].Error(), b.wantErr) {
				t.Errorf("error %q does not contain %q", rejected[i], b.wantErr)
			}
		})
	}
	if lag, err := c.Lag(ctx); err != nil || lag != 0 {
		t.Errorf("lag after the loop = %d, %v; want 0 (everything acked)", lag, err)
	}
}
