package artifact_test

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cloud-builder/cb/internal/artifact"
	"github.com/cloud-builder/cb/internal/target"
)

const token = "s3cret-token"

// newRunner returns a runner root with one finished package target and a
// running endpoint serving it.
func newRunner(t *testing.T) (root string, tg target.Target, srv *httptest.Server) {
	t.Helper()
	root = t.TempDir()
	tg, err := target.New(root, "projects/MS/xclock", "TW", "x86_64")
	if err != nil {
		t.Fatal(err)
	}
	write(t, tg.PrepareLog(), "prepare line\n")
	write(t, tg.BuildLog(), "build line\n")
	write(t, tg.SolverFile(), `{"packages":["gcc"]}`)
	write(t, tg.ResultFile(), "response_code: package build succeeded\n")
	write(t, filepath.Join(tg.Binaries(), "projects/MS/TW/x86_64/xclock-1.0-0.x86_64.rpm"), "rpm bytes")
	write(t, filepath.Join(tg.Binaries(), "projects/MS/TW/src/xclock-1.0-0.src.rpm"), "src rpm bytes")
	srv = httptest.NewServer(artifact.New(artifact.Config{Root: root, Token: token, PollInterval: 20 * time.Millisecond, EndGrace: 200 * time.Millisecond}))
	t.Cleanup(srv.Close)
	return root, tg, srv
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func get(t *testing.T, rawURL, tok string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, rawURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestAuth(t *testing.T) {
	_, tg, srv := newRunner(t)
	u := artifact.TargetURL(srv.URL, tg) + "build.log"
	for _, tc := range []struct {
		name, token string
		want        int
	}{
		{"missing", "", http.StatusUnauthorized},
		{"wrong", "s3cret-tokex", http.StatusUnauthorized},
		{"prefix", "s3cret", http.StatusUnauthorized},
		{"right", token, http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := get(t, u, tc.token)
			if code != tc.want {
				t.Fatalf("status %d, want %d (%s)", code, tc.want, body)
			}
			if code != http.StatusOK && strings.Contains(body, "build line") {
				t.Fatal("refused request got the log")
			}
			if code == http.StatusOK && body != "build line\n" {
				t.Fatalf("body %q", body)
			}
		})
	}
	// A handler without any credential configured refuses everything.
	open := httptest.NewServer(artifact.New(artifact.Config{Root: t.TempDir()}))
	defer open.Close()
	if code, _ := get(t, artifact.TargetURL(open.URL, tg)+"build.log", ""); code != http.StatusUnauthorized {
		t.Fatalf("handler without credentials: status %d", code)
	}
	// Health and metrics need no token.
	if code, _ := get(t, srv.URL+"/healthz", ""); code != http.StatusOK {
		t.Fatalf("/healthz: %d", code)
	}
}

func TestArtifacts(t *testing.T) {
	_, tg, srv := newRunner(t)
	base := artifact.TargetURL(srv.URL, tg)
	if want := srv.URL + "/v1/targets/projects/MS/xclock@TW.x86_64/"; base != want {
		t.Fatalf("TargetURL = %s, want %s", base, want)
	}
	for _, tc := range []struct{ name, want string }{
		{"prepare.log", "prepare line\n"},
		{"build.log", "build line\n"},
		{"solver.json", `{"packages":["gcc"]}`},
		{"binaries/projects/MS/TW/x86_64/xclock-1.0-0.x86_64.rpm", "rpm bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := get(t, base+tc.name, token)
			if code != http.StatusOK || body != tc.want {
				t.Fatalf("GET %s: %d %q, want %q", tc.name, code, body, tc.want)
			}
		})
	}
}

func TestListing(t *testing.T) {
	root, tg, srv := newRunner(t)
	outside := t.TempDir()
	write(t, filepath.Join(outside, "secret.rpm"), "secret")
	// Symbolic links are never listed, even relative ones inside the root.
	if err := os.Symlink(filepath.Join(outside, "secret.rpm"), filepath.Join(tg.Binaries(), "projects/MS/TW/x86_64/evil.rpm")); err != nil {
		t.Fatal(err)
	}
	_ = root
	code, body := get(t, artifact.TargetURL(srv.URL, tg)+"binaries/", token)
	if code != http.StatusOK {
		t.Fatalf("listing: %d %s", code, body)
	}
	var l artifact.Listing
	if err := json.Unmarshal([]byte(body), &l); err != nil {
		t.Fatal(err)
	}
	sum := func(s string) string { h := sha256.Sum256([]byte(s)); return hex.EncodeToString(h[:]) }
	want := []artifact.File{
		{Name: "projects/MS/TW/src/xclock-1.0-0.src.rpm", Size: 13, SHA256: sum("src rpm bytes")},
		{Name: "projects/MS/TW/x86_64/xclock-1.0-0.x86_64.rpm", Size: 9, SHA256: sum("rpm bytes")},
	}
	if len(l.Files) != len(want) {
		t.Fatalf("listing %+v, want %+v", l.Files, want)
	}
	for i := range want {
		if l.Files[i] != want[i] {
			t.Errorf("file %d = %+v, want %+v", i, l.Files[i], want[i])
		}
	}
}

// TestConfinement: nothing outside the runner root is reachable, neither by
// ../ in the URL nor through symbolic links placed in the runner root.
func TestConfinement(t *testing.T) {
	root, tg, srv := newRunner(t)
	outside := t.TempDir()
	write(t, filepath.Join(outside, "secret"), "TOP SECRET")
	write(t, filepath.Join(outside, "bin", "secret.rpm"), "TOP SECRET")

	// A second target whose every artifact is a link out of the root.
	evil, err := target.New(root, "projects/MS/evil", "TW", "x86_64")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{evil.BuildLog(), evil.PrepareLog()} {
		if err := os.Symlink(filepath.Join(outside, "secret"), p); err != nil {
			t.Fatal(err)
		}
	}
	rel, err := filepath.Rel(filepath.Dir(evil.SolverFile()), filepath.Join(outside, "secret"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(rel, evil.SolverFile()); err != nil { // relative link climbing out
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(outside, "bin"), evil.Binaries()); err != nil {
		t.Fatal(err)
	}
	base := artifact.TargetURL(srv.URL, tg)
	evilBase := artifact.TargetURL(srv.URL, evil)
	for _, u := range []string{
		evilBase + "build.log",
		evilBase + "build.log?follow=1",
		evilBase + "prepare.log",
		evilBase + "solver.json",
		evilBase + "binaries/",
		evilBase + "binaries/secret.rpm",
		base + "binaries/../../../../secret",
		base + "binaries/..%2f..%2f..%2fsecret",
		base + "binaries/%2e%2e/%2e%2e/secret",
		srv.URL + "/v1/targets/projects/../../secret@TW.x86_64/build.log",
		srv.URL + "/v1/targets/projects%2f..%2f..%2fsecret@TW.x86_64/build.log",
		srv.URL + "/v1/targets//etc/passwd@TW.x86_64/build.log",
		srv.URL + "/v1/targets/projects/MS/xclock@TW.x86_64/../../../../../../etc/passwd",
		srv.URL + "/v1/targets/projects/MS/xclock@..x86_64/build.log",
	} {
		t.Run(u[len(srv.URL):], func(t *testing.T) {
			// Without redirects: a 301 to a cleaned path must not
			// be followed into a different answer either.
			req, _ := http.NewRequest(http.MethodGet, u, nil)
			req.Header.Set("Authorization", "Bearer "+token)
			resp, err := http.DefaultTransport.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode == http.StatusOK || strings.Contains(string(b), "TOP SECRET") {
				t.Fatalf("escaped the runner root: %d %q", resp.StatusCode, b)
			}
		})
	}
}

func TestFollowLog(t *testing.T) {
	_, tg, srv := newRunner(t)
	os.Remove(tg.ResultFile())
	write(t, tg.PIDFile(), strconv.Itoa(os.Getpid()))
	write(t, tg.BuildLog(), "line 1\n")

	req, _ := http.NewRequest(http.MethodGet, artifact.TargetURL(srv.URL, tg)+"build.log?follow=1", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resp, err := http.DefaultClient.Do(req.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	next := func() string {
		if !sc.Scan() {
			t.Fatalf("stream ended early: %v", sc.Err())
		}
		return sc.Text()
	}
	if l := next(); l != "line 1" {
		t.Fatalf("first line %q", l)
	}
	// Written after the request started: must arrive while it runs.
	f, err := os.OpenFile(tg.BuildLog(), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	for i := 2; i <= 3; i++ {
		f.WriteString("line " + strconv.Itoa(i) + "\n")
		if l := next(); l != "line "+strconv.Itoa(i) {
			t.Fatalf("got %q", l)
		}
	}
	// The build ends: the tail is delivered, then the stream ends.
	f.WriteString("last line\n")
	f.Close()
	os.Remove(tg.PIDFile())
	write(t, tg.ResultFile(), "response_code: package build succeeded\n")
	if l := next(); l != "last line" {
		t.Fatalf("got %q", l)
	}
	if sc.Scan() {
		t.Fatalf("unexpected line %q", sc.Text())
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("stream did not end cleanly: %v", err)
	}
}

func TestFollowPrepareEndsWithBuildLog(t *testing.T) {
	_, tg, srv := newRunner(t)
	os.Remove(tg.ResultFile())
	os.Remove(tg.BuildLog())
	write(t, tg.PIDFile(), strconv.Itoa(os.Getpid()))
	done := make(chan string)
	go func() {
		_, body := get(t, artifact.TargetURL(srv.URL, tg)+"prepare.log?follow=1", token)
		done <- body
	}()
	time.Sleep(100 * time.Millisecond)
	write(t, tg.BuildLog(), "")
	select {
	case body := <-done:
		if body != "prepare line\n" {
			t.Fatalf("body %q", body)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("prepare log follow did not end when the build log appeared")
	}
}

func TestRunning(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "t.pid")
	if _, ok := artifact.Running(pidFile); ok {
		t.Fatal("missing pid file reported running")
	}
	write(t, pidFile, strconv.Itoa(os.Getpid())+"\n")
	if pid, ok := artifact.Running(pidFile); !ok || pid != os.Getpid() {
		t.Fatalf("own pid: %d %v", pid, ok)
	}
	write(t, pidFile, "garbage")
	if _, ok := artifact.Running(pidFile); ok {
		t.Fatal("garbage reported running")
	}
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	write(t, pidFile, strconv.Itoa(cmd.Process.Pid))
	if _, ok := artifact.Running(pidFile); ok {
		t.Fatal("exited process reported running")
	}
}

// TestFollowLogNotYetThere: following a log the running build has not
// started yet answers at once and streams the log once it appears.
func TestFollowLogNotYetThere(t *testing.T) {
	_, tg, srv := newRunner(t)
	os.Remove(tg.ResultFile())
	os.Remove(tg.BuildLog())
	write(t, tg.PIDFile(), strconv.Itoa(os.Getpid()))
	req, _ := http.NewRequest(http.MethodGet, artifact.TargetURL(srv.URL, tg)+"build.log?follow=1", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resp, err := http.DefaultClient.Do(req.WithContext(ctx)) // headers before the log exists
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	write(t, tg.BuildLog(), "late line\n")
	time.Sleep(100 * time.Millisecond)
	os.Remove(tg.PIDFile())
	write(t, tg.ResultFile(), "x")
	body, err := io.ReadAll(resp.Body)
	if err != nil || string(body) != "late line\n" {
		t.Fatalf("body %q, %v", body, err)
	}
}
