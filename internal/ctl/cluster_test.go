package ctl_test

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/cloud-builder/cb/internal/artifact"
	"github.com/cloud-builder/cb/internal/broker"
	"github.com/cloud-builder/cb/internal/ctl"
	"github.com/cloud-builder/cb/internal/info"
	"github.com/cloud-builder/cb/internal/message"
	"github.com/cloud-builder/cb/internal/target"
)

const testToken = "artifact-token"

// cluster is an embedded broker plus runners that answer info requests
// and serve artifacts from their own runner roots.
type cluster struct {
	t    testing.TB
	opts broker.Options
}

func newCluster(t testing.TB) *cluster {
	t.Helper()
	e, err := broker.StartEmbedded(broker.EmbeddedOptions{Listen: "127.0.0.1:0", DataDir: t.TempDir(), Partitions: 1, Topics: []string{"suse"}, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return &cluster{t: t, opts: broker.Options{Brokers: e.Addrs(), Logger: quietLogger()}}
}

func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
}

type runner struct {
	name string
	root string
	srv  *httptest.Server
}

// startRunner starts cb-info and the artifact endpoint of a runner named
// name. wrap, when not nil, wraps the artifact handler (fault injection).
func (c *cluster) startRunner(name string, respondAlways bool, wrap func(http.Handler) http.Handler) *runner {
	return c.startRunnerOn(nil, name, respondAlways, wrap)
}

// startRunnerOn is startRunner with the artifact endpoint on ln; nil
// means a loopback listener.
func (c *cluster) startRunnerOn(ln net.Listener, name string, respondAlways bool, wrap func(http.Handler) http.Handler) *runner {
	t := c.t
	t.Helper()
	r := &runner{name: name, root: t.TempDir()}
	var h http.Handler = artifact.New(artifact.Config{Root: r.root, Token: testToken, PollInterval: 20 * time.Millisecond, EndGrace: 300 * time.Millisecond})
	if wrap != nil {
		h = wrap(h)
	}
	r.srv = httptest.NewUnstartedServer(h)
	if ln != nil {
		r.srv.Listener.Close()
		r.srv.Listener = ln
	}
	r.srv.Start()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	cfg := info.Config{Broker: c.opts, Root: r.root, ThisHost: name, RespondAlways: respondAlways, ArtifactURL: r.srv.URL, Since: time.Now(), Logger: quietLogger()}
	go func() { done <- info.Run(ctx, cfg) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("info.Run of %s: %v", name, err)
		}
		r.srv.Close()
	})
	return r
}

func (r *runner) target(t testing.TB, q ctl.Query) target.Target {
	t.Helper()
	var tg target.Target
	var err error
	if q.Image != nil {
		tg, err = target.New(r.root, q.Project, q.Image.Selection, q.Image.Arch)
	} else {
		tg, err = target.New(r.root, q.Project, q.Package.Dist, q.Package.Arch)
	}
	if err != nil {
		t.Fatal(err)
	}
	return tg
}

// built writes the state of a finished build of q on r, finished at when,
// with the given binaries (path below the binaries dir -> content).
func (r *runner) built(t testing.TB, q ctl.Query, when time.Time, bins map[string]string) target.Target {
	t.Helper()
	tg := r.target(t, q)
	var paths []string
	for rel, content := range bins {
		p := filepath.Join(tg.Binaries(), rel)
		writeFile(t, p, content)
		paths = append(paths, p)
	}
	writeFile(t, tg.PrepareLog(), "prepare on "+r.name+"\n")
	writeFile(t, tg.BuildLog(), "build on "+r.name+"\n")
	writeFile(t, tg.SolverFile(), `{"solver":"`+r.name+`"}`+"\n")
	res := &message.Response{SchemaVersion: message.SchemaVersion, Identity: "CBRun:" + r.name + ":1:" + q.Project, RequestID: "req",
		ResponseCode: message.PackageBuildSucceeded, Project: q.Project, Package: &message.PackageResult{BinaryPackages: paths, LogFile: tg.BuildLog()}}
	data, err := message.Encode(res)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, tg.ResultFile(), string(data))
	if err := os.Chtimes(tg.ResultFile(), when, when); err != nil {
		t.Fatal(err)
	}
	return tg
}

// running marks q as being built on r by this test process.
func (r *runner) running(t *testing.T, q ctl.Query) target.Target {
	t.Helper()
	tg := r.target(t, q)
	writeFile(t, tg.PIDFile(), strconv.Itoa(os.Getpid()))
	return tg
}

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// client returns a cb-ctl client on the cluster writing to buffers.
func (c *cluster) client(runnerCount int, timeout time.Duration) (*ctl.Client, *syncBuffer, *syncBuffer) {
	stdout, stderr := &syncBuffer{}, &syncBuffer{}
	return &ctl.Client{
		Broker: c.opts, Stdout: stdout, Stderr: stderr, Timeout: timeout, RunnerCount: runnerCount,
		ArtifactToken: testToken, Logger: quietLogger(),
	}, stdout, stderr
}

// syncBuffer is a bytes.Buffer safe for a writer and a polling reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

var xclock = ctl.Query{Project: "projects/MS/xclock", Package: &message.PackageTarget{Arch: "x86_64", Dist: "TW"}}
