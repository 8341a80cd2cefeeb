package ctl_test

import (
	"context"
	"encoding/json"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/cloud-builder/cb/internal/broker"
	"github.com/cloud-builder/cb/internal/ctl"
	"github.com/cloud-builder/cb/internal/message"
)

func publishResponses(t *testing.T, c *cluster, docs ...string) {
	t.Helper()
	pub, err := broker.New(c.opts)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	for _, d := range docs {
		if err := pub.Publish(context.Background(), message.TopicResponse, []byte(d)); err != nil {
			t.Fatal(err)
		}
	}
}

func response(identity, requestID, code string) string {
	return "schema_version: 0.2\nidentity: " + identity + "\nrequest_id: " + requestID +
		"\nresponse_code: " + code + "\nmessage: m\nproject: projects/MS/xclock\nzz_extension: kept\ntarget: {dist: TW, arch: x86_64}\n"
}

func TestWatch(t *testing.T) {
	c := newCluster(t)
	since := time.Now()
	publishResponses(t, c,
		response("CBScheduler:h:1:projects/MS/xclock", "r1", message.PackageRequestAccepted),
		"not: [valid",
		response("CBRun:h:2:projects/MS/xclock", "r1", message.PackageBuildSucceeded),
		response("CBRun:h:2:projects/MS/xclock", "r2", message.PackageBuildFailed),
		response("CBRunner:h:2:projects/MS/xclock", "r1", message.PackageBuildFailed),
	)
	for _, tc := range []struct {
		name string
		o    ctl.WatchOptions
		want []string // request_id/response_code of the printed objects
	}{
		// r1's second final response is a repeat: shown once.
		{"all", ctl.WatchOptions{}, []string{"r1/" + message.PackageRequestAccepted, "r1/" + message.PackageBuildSucceeded, "r2/" + message.PackageBuildFailed}},
		{"request id", ctl.WatchOptions{RequestID: "r1"}, []string{"r1/" + message.PackageRequestAccepted, "r1/" + message.PackageBuildSucceeded}},
		{"repeat of another service", ctl.WatchOptions{Service: "CBRunner"}, []string{"r1/" + message.PackageBuildFailed}},
		{"service", ctl.WatchOptions{Service: "CBRun"}, []string{"r1/" + message.PackageBuildSucceeded, "r2/" + message.PackageBuildFailed}},
		{"both", ctl.WatchOptions{Service: "CBRun", RequestID: "r2"}, []string{"r2/" + message.PackageBuildFailed}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cl, stdout, _ := c.client(0, time.Second)
			tc.o.Since = since
			start := time.Now()
			if err := cl.Watch(testCtx(t), tc.o); err != nil {
				t.Fatal(err)
			}
			if time.Since(start) < time.Second {
				t.Fatal("watch returned before its timeout")
			}
			out := stdout.String()
			dec := json.NewDecoder(strings.NewReader(out))
			var got []string
			for dec.More() {
				var m map[string]any
				if err := dec.Decode(&m); err != nil {
					t.Fatalf("%v in\n%s", err, out)
				}
				if m["zz_extension"] != "kept" {
					t.Fatalf("unknown field dropped: %v", m)
				}
				got = append(got, m["request_id"].(string)+"/"+m["response_code"].(string))
			}
			if strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Fatalf("printed %v, want %v", got, tc.want)
			}
			checkSortedIndent4(t, out)
		})
	}
}

// checkSortedIndent4 checks the text form: keys of every object in sorted
// order, nested objects indented by 4 more spaces.
func checkSortedIndent4(t *testing.T, out string) {
	t.Helper()
	keyRE := regexp.MustCompile(`^( *)"([^"]+)":`)
	last := map[int]string{}
	for _, line := range strings.Split(out, "\n") {
		if line == "{" { // a new top-level object
			last = map[int]string{}
		}
		m := keyRE.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		depth := len(m[1])
		if depth%4 != 0 {
			t.Fatalf("indent of %d spaces: %q", depth, line)
		}
		for d := range last {
			if d > depth { // a nested object ended
				delete(last, d)
			}
		}
		if prev, ok := last[depth]; ok && !sort.StringsAreSorted([]string{prev, m[2]}) {
			t.Fatalf("keys not sorted: %q after %q", m[2], prev)
		}
		last[depth] = m[2]
	}
}

func TestServiceName(t *testing.T) {
	for in, want := range map[string]string{"cb-run": "CBRun", "CBRun": "CBRun", "cb-scheduler": "CBScheduler", "cb-info": "CBInfo"} {
		if got, err := ctl.ServiceName(in); err != nil || got != want {
			t.Errorf("ServiceName(%q) = %q, %v", in, got, err)
		}
	}
	if _, err := ctl.ServiceName("cb-nothing"); err == nil {
		t.Error("unknown service accepted")
	}
}

// A watch for one request started after the request was answered shows
// its whole history (FromStart), then follows; a plain watch starts now.
func TestWatchFromStart(t *testing.T) {
	c := newCluster(t)
	publishResponses(t, c,
		response("CBScheduler:h:1:projects/MS/xclock", "old", message.PackageRequestAccepted),
		response("CBScheduler:h:1:projects/MS/xclock", "other", message.PackageRequestAccepted),
	)
	time.Sleep(50 * time.Millisecond)
	for _, tc := range []struct {
		name string
		o    ctl.WatchOptions
		want int
	}{
		{"request from start", ctl.WatchOptions{RequestID: "old", FromStart: true}, 2},
		{"plain starts now", ctl.WatchOptions{RequestID: "old"}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cl, stdout, _ := c.client(0, 2*time.Second)
			go func() {
				time.Sleep(time.Second)
				publishResponses(t, c, response("CBRun:h:2:projects/MS/xclock", "old", message.PackageBuildSucceeded))
			}()
			if err := cl.Watch(testCtx(t), tc.o); err != nil {
				t.Fatal(err)
			}
			out := stdout.String()
			if n := strings.Count(out, `"request_id": "old"`); n < tc.want {
				t.Errorf("printed %d responses of the request, want at least %d:\n%s", n, tc.want, out)
			}
			if tc.o.FromStart && !strings.Contains(out, message.PackageRequestAccepted) {
				t.Errorf("history missing:\n%s", out)
			}
			if !tc.o.FromStart && strings.Contains(out, message.PackageRequestAccepted) {
				t.Errorf("a watch from now printed history:\n%s", out)
			}
			if strings.Contains(out, `"other"`) {
				t.Errorf("filter let another request through:\n%s", out)
			}
		})
	}
}
