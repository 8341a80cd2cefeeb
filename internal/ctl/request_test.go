package ctl_test

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/cloud-builder/cb/internal/broker"
	"github.com/cloud-builder/cb/internal/ctl"
	"github.com/cloud-builder/cb/internal/message"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

func golden(t *testing.T, name, got string) {
	t.Helper()
	p := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(p, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("%v (run with -update to create)", err)
	}
	if got != string(want) {
		t.Fatalf("output differs from %s:\n%s\nwant:\n%s", p, got, want)
	}
}

// readRequests returns the build requests published to topic.
func readRequests(t *testing.T, opts broker.Options, topic string, n int) []*message.BuildRequest {
	t.Helper()
	cons, err := broker.NewConsumer(opts, broker.ConsumerConfig{Topics: []string{topic}, Start: broker.Earliest})
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out []*message.BuildRequest
	for len(out) < n {
		recs, err := cons.Poll(ctx)
		if err != nil {
			t.Fatalf("read %s: %v", topic, err)
		}
		for _, r := range recs {
			req, err := message.DecodeBuildRequest(r.Value)
			if err != nil {
				t.Fatalf("runner would reject the request: %v", err)
			}
			out = append(out, req)
		}
	}
	return out
}

func TestSendGolden(t *testing.T) {
	c := newCluster(t)
	for _, tc := range []struct {
		name string
		q    ctl.Query
	}{
		{"build_package", xclock},
		{"build_image", ctl.Query{Project: "projects/images/leap/test-image-disk", Image: &message.ImageTarget{Arch: "x86_64", Selection: "standard"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cl, stdout, _ := c.client(0, 5*time.Second)
			cl.NewID = func() string { return "d86697ee-e999-11f1-8883-02fc00000001" }
			req, err := cl.BuildRequest(tc.q, "suse")
			if err != nil {
				t.Fatal(err)
			}
			if err := cl.Send(testCtx(t), req); err != nil {
				t.Fatal(err)
			}
			golden(t, tc.name, stdout.String())
		})
	}
	got := readRequests(t, c.opts, "suse", 2)
	if got[0].Action != message.ActionPackageRebuild || got[0].Package == nil || got[0].Project != "projects/MS/xclock" {
		t.Fatalf("package request on the wire: %+v", got[0])
	}
	if got[1].Action != message.ActionImageRebuild || got[1].Image == nil || got[1].Image.Selection != "standard" {
		t.Fatalf("image request on the wire: %+v", got[1])
	}
}

func TestBuildRequestValidation(t *testing.T) {
	for _, tc := range []struct {
		name, projectPath, pkg, arch, dist, selection, group string
	}{
		{"escaping project path", "../../etc", "xclock", "x86_64", "TW", "", "suse"},
		{"absolute project path", "/etc", "xclock", "x86_64", "TW", "", "suse"},
		{"bad name", "MS", "x clock", "x86_64", "TW", "", "suse"},
		{"missing arch", "MS", "xclock", "", "TW", "", "suse"},
		{"dist and selection", "MS", "xclock", "x86_64", "TW", "std", "suse"},
		{"neither dist nor selection", "MS", "xclock", "x86_64", "", "", "suse"},
		{"bad dist", "MS", "xclock", "x86_64", "T/W", "", "suse"},
		{"bad runner group", "MS", "xclock", "x86_64", "TW", "", "su se"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := ctl.Project(tc.projectPath, tc.pkg)
			if err == nil {
				var q ctl.Query
				q, err = ctl.NewQuery(p, tc.arch, tc.dist, tc.selection)
				if err == nil {
					_, err = (&ctl.Client{}).BuildRequest(q, tc.group)
				}
			}
			if err == nil {
				t.Fatal("accepted")
			}
		})
	}
	for _, tc := range []struct{ pp, want string }{
		{"MS", "projects/MS/xclock"},
		{"projects/MS", "projects/MS/xclock"},
		{"MS/sub/", "projects/MS/sub/xclock"},
		{"", "projects/xclock"},
	} {
		if got, err := ctl.Project(tc.pp, "xclock"); err != nil || got != tc.want {
			t.Errorf("Project(%q) = %q, %v; want %q", tc.pp, got, err, tc.want)
		}
	}
}

// fakeRunner stands in for a runner group: it answers every build request
// on topic with the given response codes, in order, pausing before the last
// one for lastDelay.
func fakeRunner(t *testing.T, c *cluster, topic string, lastDelay time.Duration, codes ...message.ResponseCode) {
	t.Helper()
	cons, err := broker.NewConsumer(c.opts, broker.ConsumerConfig{Group: "runners-" + topic, Topics: []string{topic}, Start: broker.Earliest})
	if err != nil {
		t.Fatal(err)
	}
	pub, err := broker.New(c.opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done; cons.Close(); pub.Close() })
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			recs, _ := cons.Poll(ctx)
			for _, r := range recs {
				req, err := message.DecodeBuildRequest(r.Value)
				if err != nil {
					continue
				}
				for i, code := range codes {
					if i == len(codes)-1 && lastDelay > 0 {
						select {
						case <-ctx.Done():
							return
						case <-time.After(lastDelay):
						}
					}
					resp := &message.Response{SchemaVersion: 0.2, Identity: "CBScheduler:fake:1:" + req.Project, RequestID: req.RequestID,
						ResponseCode: code, Message: "step " + code, Project: req.Project}
					data, _ := message.Encode(resp)
					pub.Publish(ctx, message.TopicResponse, data)
				}
				cons.Ack(ctx, r)
			}
		}
	}()
}

func TestSendAndWait(t *testing.T) {
	for _, tc := range []struct {
		name    string
		codes   []message.ResponseCode
		wantErr error
		stages  []string
	}{
		{"success", []message.ResponseCode{message.PackageRequestAccepted, message.BuildRootSetupSucceeded, message.PackageBuildSucceeded}, nil,
			[]string{"accepted", "buildroot", "build"}},
		{"build failure", []message.ResponseCode{message.PackageRequestAccepted, message.BuildRootSetupSucceeded, message.PackageBuildFailed}, ctl.ErrBuildFailed,
			[]string{"accepted", "buildroot", "build"}},
		{"rejected", []message.ResponseCode{message.ProjectDoesNotExist}, ctl.ErrBuildFailed, []string{"rejected"}},
		{"sync failure", []message.ResponseCode{message.PackageRequestAccepted, message.PackageBinariesSyncFailed}, ctl.ErrBuildFailed, []string{"accepted", "sync"}},
		{"silence", nil, ctl.ErrTimeout, nil},
		{"silence after acceptance, nothing running", []message.ResponseCode{message.PackageRequestAccepted}, ctl.ErrTimeout, []string{"accepted"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCluster(t)
			fakeRunner(t, c, "suse", 0, tc.codes...)
			cl, stdout, stderr := c.client(0, 1500*time.Millisecond)
			req, err := cl.BuildRequest(xclock, "suse")
			if err != nil {
				t.Fatal(err)
			}
			final, err := cl.SendAndWait(testCtx(t), req)
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			var stages []string
			for _, l := range strings.Split(strings.TrimSpace(stderr.String()), "\n") {
				if f := strings.Fields(l); len(f) > 2 {
					stages = append(stages, f[1])
				}
			}
			if !reflect.DeepEqual(stages, tc.stages) {
				t.Fatalf("stages %v, want %v\n%s", stages, tc.stages, stderr)
			}
			// stdout: the request, then the final response.
			dec := json.NewDecoder(strings.NewReader(stdout.String()))
			var first, second map[string]any
			if err := dec.Decode(&first); err != nil || first["request_id"] != req.RequestID || first["action"] != message.ActionPackageRebuild {
				t.Fatalf("first object %v (%v)", first, err)
			}
			if final != nil {
				if err := dec.Decode(&second); err != nil || second["response_code"] != tc.codes[len(tc.codes)-1] {
					t.Fatalf("second object %v (%v)", second, err)
				}
			}
		})
	}
}

// TestWaitLongBuild: a build that stays silent for longer than the
// timeout is still waited for while a runner reports it running.
func TestWaitLongBuild(t *testing.T) {
	c := newCluster(t)
	a := c.startRunner("runner-a", false, nil)
	a.running(t, xclock)
	fakeRunner(t, c, "suse", 4*time.Second, message.PackageRequestAccepted, message.PackageBuildSucceeded)
	cl, _, stderr := c.client(1, 1500*time.Millisecond)
	req, err := cl.BuildRequest(xclock, "suse")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.SendAndWait(testCtx(t), req); err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	if !strings.Contains(stderr.String(), " running ") {
		t.Fatalf("no running line:\n%s", stderr)
	}
}

func TestBrokerUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cl := &ctl.Client{Broker: broker.Options{Brokers: []string{addr}, Logger: quietLogger()}, Stdout: &syncBuffer{}, Stderr: &syncBuffer{}, Timeout: time.Second}
	err = cl.BuildInfo(testCtx(t), xclock)
	if err == nil || !strings.Contains(err.Error(), "broker unreachable") {
		t.Fatalf("err = %v", err)
	}
	if strings.Contains(err.Error(), "\n") {
		t.Fatalf("error is not one line: %q", err)
	}
}
