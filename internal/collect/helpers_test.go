package collect_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cloud-builder/cb/internal/collect"
	"github.com/cloud-builder/cb/internal/repo/repotest"
	"github.com/cloud-builder/cb/internal/upload"
)

const testToken = "test-token-0123456789abcdef0123456789"

type testServer struct {
	*collect.Server
	cfg  collect.Config
	http *httptest.Server
}

// newServer starts a collector behind an httptest server. mutate may
// adjust the config before New.
func newServer(t *testing.T, mutate func(*collect.Config)) *testServer {
	t.Helper()
	repotest.RequireTools(t, "gpg", "gpgconf")
	base := t.TempDir()
	cfg := collect.Config{
		RepoRoot:       filepath.Join(base, "repo"),
		StateDir:       filepath.Join(base, "state"),
		Token:          testToken,
		UpdateInterval: time.Hour,
		Logger:         slog.New(slog.DiscardHandler),
	}
	if testing.Verbose() {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	if mutate != nil {
		mutate(&cfg)
	}
	s, err := collect.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(s.Handler())
	t.Cleanup(func() {
		hs.Close()
		if err := s.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return &testServer{Server: s, cfg: cfg, http: hs}
}

func (ts *testServer) client() *collect.Client {
	return &collect.Client{URL: ts.http.URL, Token: testToken, Attempts: 3, Backoff: 10 * time.Millisecond,
		Logger: slog.New(slog.DiscardHandler)}
}

func ctxT(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// get fetches url and returns the body; it fails the test on anything but
// want.
func get(t *testing.T, url string, want int) []byte {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != want {
		t.Fatalf("GET %s: %d, want %d: %s", url, resp.StatusCode, want, body)
	}
	return body
}

// debUpload builds a deb and describes its upload into Debian/<dist>.
func debUpload(t *testing.T, name, version, debArch, dir, dist string) upload.Upload {
	t.Helper()
	p := repotest.Deb(t, t.TempDir(), name, version, debArch)
	return upload.Upload{
		RequestID: name + "-" + version + "-" + dir, Project: "projects/Debian/" + name, Name: name,
		RepoPath: "projects/Debian/" + dist, Arch: "x86_64", RepoType: "deb",
		Files: []upload.File{{Path: p, Name: dir + "/" + filepath.Base(p)}},
	}
}

func rpmUpload(t *testing.T, name, version string) upload.Upload {
	t.Helper()
	p := repotest.RPM(t, t.TempDir(), name, version)
	return upload.Upload{
		RequestID: name + "-" + version, Project: "projects/MS/" + name, Name: name,
		RepoPath: "projects/MS/TW", Arch: "x86_64", RepoType: "rpm",
		Files: []upload.File{{Path: p, Name: "noarch/" + filepath.Base(p)}},
	}
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

// stagingEmpty reports whether no upload is staged.
func stagingEmpty(t *testing.T, ts *testServer) bool {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(ts.cfg.StateDir, "staging"))
	if err != nil {
		t.Fatal(err)
	}
	return len(entries) == 0
}
