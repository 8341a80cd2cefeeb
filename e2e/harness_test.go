// Package e2e runs the real cb binary, the embedded broker and the real
// build tools (mmdebstrap, dpkg-buildpackage, rpmbuild, createrepo_c, gpg)
// end to end. The tests need root; off root they skip on a developer box
// and fail under CI=true.
package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cloud-builder/cb/internal/broker"
	"github.com/cloud-builder/cb/internal/message"
	"github.com/cloud-builder/cb/internal/mountinfo"
	"github.com/cloud-builder/cb/internal/sandbox"
)

// bin is the directory of the cb binary and its cb-* links, built once.
var bin string

// repoRoot is the checkout this test runs in.
var repoRoot string

func TestMain(m *testing.M) {
	// The apt check runs in the build sandbox, which re-executes this
	// test binary.
	sandbox.Init()
	_, file, _, _ := runtime.Caller(0)
	repoRoot = filepath.Dir(filepath.Dir(file))
	dir, err := os.MkdirTemp("", "cb-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin = dir
	build := exec.Command("go", "build", "-o", filepath.Join(dir, "cb"), "./cmd/cb")
	build.Dir = repoRoot
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build cb:", err)
		os.Exit(1)
	}
	for _, s := range []string{"ctl", "fetch", "scheduler", "prepare", "run", "image", "info", "collect", "depsolver", "web"} {
		if err := os.Symlink("cb", filepath.Join(dir, "cb-"+s)); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// needRoot skips off root on a developer box; under CI=true it fails.
func needRoot(t *testing.T, tools ...string) {
	t.Helper()
	ci := os.Getenv("CI") == "true"
	if os.Geteuid() != 0 {
		if ci {
			t.Fatal("end-to-end tests need root under CI")
		}
		t.Skip("end-to-end tests need root")
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			if ci {
				t.Fatalf("%s is missing under CI", tool)
			}
			t.Skipf("%s is not installed", tool)
		}
	}
	if testing.Short() {
		t.Skip("end-to-end test skipped in -short mode")
	}
}

// freePort returns a loopback address that was free a moment ago.
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// proc is a cb service running as its own OS process.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  *syncBuffer
	done chan struct{}
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// start runs bin/<prog> args with env; it is stopped with SIGTERM at the
// end of the test, and its output is shown when the test failed.
func start(t *testing.T, env []string, prog string, args ...string) *proc {
	t.Helper()
	return startPath(t, env, filepath.Join(bin, prog), args...)
}

// startPath is start for a program given by its path.
func startPath(t *testing.T, env []string, prog string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(prog, args...)
	cmd.Env = append(os.Environ(), env...)
	p := &proc{name: prog, cmd: cmd, log: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.log, p.log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", prog, err)
	}
	go func() { _ = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.stop(30 * time.Second)
		if t.Failed() {
			t.Logf("---- output of %s %s ----\n%s", prog, strings.Join(args, " "), tail(p.log.String(), 8000))
		}
	})
	return p
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// stop sends SIGTERM and waits; SIGKILL to the group after grace.
func (p *proc) stop(grace time.Duration) {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}

// kill9 kills only the process itself, like a crash.
func (p *proc) kill9() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// run runs bin/<prog> and returns its stdout; it fails the test on a
// non-zero exit unless wantErr.
func run(t *testing.T, env []string, prog string, args ...string) (string, string, error) {
	t.Helper()
	cmd := exec.Command(filepath.Join(bin, prog), args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return out.String(), errb.String(), err
}

// responses collects every response on cb-response, by request id.
type responses struct {
	mu    sync.Mutex
	byID  map[string][]*message.Response
	added chan struct{}
}

func watchResponses(t *testing.T, brokerAddr string) *responses {
	t.Helper()
	c, err := broker.NewConsumer(broker.Options{Brokers: []string{brokerAddr}}, broker.ConsumerConfig{
		Topics: []string{message.TopicResponse}, Start: broker.Earliest,
	})
	if err != nil {
		t.Fatal(err)
	}
	r := &responses{byID: map[string][]*message.Response{}, added: make(chan struct{}, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			recs, err := c.Poll(ctx)
			if err != nil {
				continue
			}
			for _, rec := range recs {
				resp, err := message.DecodeResponse(rec.Value)
				if err != nil {
					continue
				}
				r.mu.Lock()
				r.byID[resp.RequestID] = append(r.byID[resp.RequestID], resp)
				r.mu.Unlock()
				select {
				case r.added <- struct{}{}:
				default:
				}
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done; c.Close() })
	return r
}

// of returns the responses for id so far.
func (r *responses) of(id string) []*message.Response {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*message.Response(nil), r.byID[id]...)
}

// finals returns the final responses for id.
func (r *responses) finals(id string) []*message.Response {
	var out []*message.Response
	for _, resp := range r.of(id) {
		if message.IsFinal(resp.ResponseCode) {
			out = append(out, resp)
		}
	}
	return out
}

// waitFinal waits for the first final response of id.
func (r *responses) waitFinal(t *testing.T, id string, timeout time.Duration) *message.Response {
	t.Helper()
	var final *message.Response
	waitFor(t, timeout, "final response of "+id, func() bool {
		if f := r.finals(id); len(f) > 0 {
			final = f[0]
			return true
		}
		return false
	})
	return final
}

func codes(rs []*message.Response) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.ResponseCode
	}
	return out
}

// mounts returns the mount points at or below dir.
func mounts(t *testing.T, dir string) []string {
	t.Helper()
	m, err := mountinfo.Below(dir)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// copyTree copies src into dst (regular files, dirs and symlinks).
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.Walk(src, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		switch {
		case fi.IsDir():
			return os.MkdirAll(target, fi.Mode().Perm()|0o700)
		case fi.Mode()&os.ModeSymlink != 0:
			l, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(l, target)
		default:
			in, err := os.Open(p)
			if err != nil {
				return err
			}
			defer in.Close()
			out, err := os.OpenFile(target, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, fi.Mode().Perm())
			if err != nil {
				return err
			}
			if _, err := io.Copy(out, in); err != nil {
				out.Close()
				return err
			}
			return out.Close()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
}

// git runs git in dir.
func git(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", append([]string{"-c", "user.name=cb-test", "-c", "user.email=cb-test@example.org", "-c", "init.defaultBranch=main"}, args...)...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}
