package depsolver

import (
	"context"
	"errors"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cloud-builder/cb/internal/artifact"
	"github.com/cloud-builder/cb/internal/bearer"
	"github.com/cloud-builder/cb/internal/message"
	"github.com/cloud-builder/cb/internal/target"
)

const solverJSON = `{"schema_version": 1, "profile": "bookworm.x86_64", "backend": "native",
 "packages": {"gcc": {"version": "12.2.0-14", "arch": "amd64"}, "make": {"version": "4.3-4.1", "arch": "amd64"}}}`

// runnerRoot writes the solver file of project@bookworm.x86_64 below a
// new runner root and returns the root and the target.
func runnerRoot(t *testing.T, project string) (string, target.Target) {
	t.Helper()
	root := t.TempDir()
	tg, err := target.New(root, project, "bookworm", "x86_64")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(tg.SolverFile()), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tg.SolverFile(), []byte(solverJSON), 0o644); err != nil {
		t.Fatal(err)
	}
	return root, tg
}

// finish sends the final success response of request id for target a,
// whose solver file is at solverFile on the runner, with artifactURL as
// the record's cb-artifact-url header.
func finish(s *Service, a *Target, id, solverFile, artifactURL string) {
	s.byRequest[id] = a.ID
	s.handleResponse(context.Background(), &message.Response{Identity: "CBRun:runner1:1:x", RequestID: id,
		ResponseCode: message.PackageBuildSucceeded, Project: a.Project, SchemaVersion: 0.2,
		Package: &message.PackageResult{SolverFile: solverFile}}, artifactURL)
}

var wantSolved = map[string]string{"gcc": "12.2.0-14", "make": "4.3-4.1"}

// Without a shared disk the depsolver reads a finished build's solver
// file from the artifact endpoint (the real one) of the runner named in
// the response's record, and a base repository change then rebuilds
// exactly the targets whose solved versions changed.
func TestSolvedFromArtifactEndpoint(t *testing.T) {
	root, tg := runnerRoot(t, "projects/T/a")
	srv := httptest.NewServer(artifact.New(artifact.Config{Root: root, Token: "secret"}))
	defer srv.Close()

	s, err := New(Config{URL: "file:///nowhere.git", Dir: t.TempDir(), CollectorURL: "file:///nowhere", ArtifactToken: "secret"})
	if err != nil {
		t.Fatal(err)
	}
	a, b := pkg("a", []string{"a"}, "gcc"), pkg("b", []string{"b"}, "gcc")
	s.eng = newTestEngine(a, b)
	// The solver file's path on the runner is not on this machine.
	finish(s, a, "req-a", tg.SolverFile(), artifact.TargetURL(srv.URL, tg))
	if got := s.eng.Status(a.ID).Solved; !maps.Equal(got, wantSolved) {
		t.Fatalf("solved versions of a: %v, want %v", got, wantSolved)
	}

	s.baseChanged("base", Names{"gcc": {"12.2.0-15"}, "make": {"4.3-4.1"}})
	st := s.eng.Status(a.ID)
	if st.State != StateQueued || !strings.Contains(st.Reason, "base repository change: gcc 12.2.0-14 -> 12.2.0-15") {
		t.Fatalf("a after a base change of gcc: %+v", st)
	}
	if st := s.eng.Status(b.ID); st.State != StateIdle {
		t.Fatalf("b has no solved versions, yet %+v", st)
	}
}

// The local read below the runner root still works and needs no header.
func TestSolvedFromRunnerRoot(t *testing.T) {
	root, tg := runnerRoot(t, "projects/T/a")
	s, err := New(Config{URL: "file:///nowhere.git", Dir: t.TempDir(), CollectorURL: "file:///nowhere", RunnerRoot: root})
	if err != nil {
		t.Fatal(err)
	}
	a := pkg("a", []string{"a"}, "gcc")
	s.eng = newTestEngine(a)
	finish(s, a, "req-a", tg.SolverFile(), "")
	if got := s.eng.Status(a.ID).Solved; !maps.Equal(got, wantSolved) {
		t.Fatalf("solved versions of a: %v, want %v", got, wantSolved)
	}
}

// Artifact URLs come from the broker: anything but the http(s) URL of the
// finished target's own artifacts is not followed, nor is a redirect, and
// the endpoint's token is required.
func TestSolvedArtifactURLRefused(t *testing.T) {
	root, tg := runnerRoot(t, "projects/T/a")
	_, other := runnerRoot(t, "projects/T/b")
	srv := httptest.NewServer(artifact.New(artifact.Config{Root: root, Token: "secret"}))
	defer srv.Close()
	var redirected bool
	redirect := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		redirected = true
		http.Redirect(w, r, srv.URL+r.URL.Path, http.StatusFound)
	}))
	defer redirect.Close()
	hostPath := strings.TrimPrefix(artifact.TargetURL(srv.URL, tg), "http://")

	for name, c := range map[string]struct{ url, token string }{
		"other target":  {artifact.TargetURL(srv.URL, other), "secret"},
		"file scheme":   {"file:///" + hostPath, "secret"},
		"ftp scheme":    {"ftp://" + hostPath, "secret"},
		"no host":       {"http:///v1/targets/projects/T/a@bookworm.x86_64/", "secret"},
		"user info":     {"http://u:p@" + hostPath, "secret"},
		"query":         {artifact.TargetURL(srv.URL, tg) + "?x=1", "secret"},
		"redirect":      {artifact.TargetURL(redirect.URL, tg), "secret"},
		"wrong token":   {artifact.TargetURL(srv.URL, tg), "guess"},
		"no header":     {"", "secret"},
		"relative path": {"/v1/targets/projects/T/a@bookworm.x86_64/", "secret"},
	} {
		t.Run(name, func(t *testing.T) {
			s, err := New(Config{URL: "file:///nowhere.git", Dir: t.TempDir(), CollectorURL: "file:///nowhere", ArtifactToken: c.token})
			if err != nil {
				t.Fatal(err)
			}
			a := pkg("a", []string{"a"}, "gcc")
			s.eng = newTestEngine(a)
			finish(s, a, "req-a", tg.SolverFile(), c.url)
			if got := s.eng.Status(a.ID).Solved; got != nil {
				t.Fatalf("solved versions read through %q: %v", c.url, got)
			}
		})
	}
	if !redirected {
		t.Fatal("the redirecting endpoint was never asked, the redirect case tested nothing")
	}
	// The same target's URL with the right token does work.
	s, _ := New(Config{URL: "file:///nowhere.git", Dir: t.TempDir(), CollectorURL: "file:///nowhere", ArtifactToken: "secret"})
	a := pkg("a", []string{"a"}, "gcc")
	s.eng = newTestEngine(a)
	finish(s, a, "req-a", tg.SolverFile(), artifact.TargetURL(srv.URL, tg))
	if got := s.eng.Status(a.ID).Solved; !maps.Equal(got, wantSolved) {
		t.Fatalf("solved versions of a: %v", got)
	}
}

// The token goes over plain HTTP to loopback only, unless allowed.
func TestSolvedPlainHTTPOffLoopback(t *testing.T) {
	_, tg := runnerRoot(t, "projects/T/a")
	s, _ := New(Config{URL: "file:///nowhere.git", Dir: t.TempDir(), CollectorURL: "file:///nowhere", ArtifactToken: "secret"})
	a := pkg("a", []string{"a"}, "gcc")
	_, err := s.fetchSolved(context.Background(), artifact.TargetURL("http://192.0.2.1:8081", tg), a.Project, a.Dist, a.Arch)
	if !errors.Is(err, bearer.ErrPlainHTTP) {
		t.Fatalf("token over plain HTTP off loopback: err %v", err)
	}
}

// A solver file beyond the cap is refused.
func TestSolvedTooLarge(t *testing.T) {
	root, tg := runnerRoot(t, "projects/T/a")
	big := `{"packages": {"x": {"version": "` + strings.Repeat("1", maxSolverBytes) + `"}}}`
	if err := os.WriteFile(tg.SolverFile(), []byte(big), 0o644); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(artifact.New(artifact.Config{Root: root, Token: "secret"}))
	defer srv.Close()
	s, _ := New(Config{URL: "file:///nowhere.git", Dir: t.TempDir(), CollectorURL: "file:///nowhere", ArtifactToken: "secret"})
	a := pkg("a", []string{"a"}, "gcc")
	s.eng = newTestEngine(a)
	_, err := s.fetchSolved(context.Background(), artifact.TargetURL(srv.URL, tg), a.Project, a.Dist, a.Arch)
	if err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("oversized solver file: err %v", err)
	}
}
