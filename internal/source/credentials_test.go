package source_test

import (
	"encoding/pem"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/cloud-builder/cb/internal/source"
	"github.com/cloud-builder/cb/internal/source/sourcetest"
)

// gitHTTPServer serves the bare repository of r over https through git's
// own smart HTTP backend, requiring basic authentication with user:token.
func gitHTTPServer(t *testing.T, r *sourcetest.Repo, user, token string) (url string, authorized *atomic.Int32) {
	t.Helper()
	backend := "/usr/lib/git-core/git-http-backend"
	if out, err := exec.Command("git", "--exec-path").Output(); err == nil {
		backend = filepath.Join(strings.TrimSpace(string(out)), "git-http-backend")
	}
	if _, err := os.Stat(backend); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("git-http-backend not found: %v", err)
		}
		t.Skipf("git-http-backend not found: %v", err)
	}
	authorized = &atomic.Int32{}
	cgiHandler := &cgi.Handler{Path: backend, Env: []string{
		"GIT_PROJECT_ROOT=" + filepath.Dir(r.Bare), "GIT_HTTP_EXPORT_ALL=1",
	}}
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		u, p, ok := req.BasicAuth()
		if !ok || u != user || p != token {
			w.Header().Set("WWW-Authenticate", `Basic realm="sources"`)
			http.Error(w, "authentication required", http.StatusUnauthorized)
			return
		}
		authorized.Add(1)
		cgiHandler.ServeHTTP(w, req)
	}))
	t.Cleanup(srv.Close)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	pemData := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(ca, pemData, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("GIT_SSL_CAINFO", ca)
	return srv.URL + "/" + filepath.Base(r.Bare), authorized
}

func TestHTTPSToken(t *testing.T) {
	const token = "s3cr3t-t0ken-value"
	for _, tc := range []struct {
		name, user, token string
		ok                bool
	}{
		{"token from the environment", "", token, true},
		{"token with a user name", "deploy", token, true},
		{"wrong token", "", "wrong-token-value", false},
		{"no token", "", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := sourcetest.New(t)
			head := r.CommitAndPush("base", map[string]string{"projects/a/file": "one"})
			wantUser := tc.user
			if wantUser == "" {
				wantUser = "x-access-token"
			}
			url, authorized := gitHTTPServer(t, r, wantUser, token)
			t.Setenv(source.EnvToken, tc.token)
			t.Setenv(source.EnvUser, tc.user)
			dir := filepath.Join(t.TempDir(), "sources")
			got, err := source.Update(t.Context(), dir, url, "main", nil)
			if !tc.ok {
				if err == nil {
					t.Fatal("clone without the right token succeeded")
				}
				if tc.token != "" && strings.Contains(err.Error(), tc.token) {
					t.Fatalf("error reveals the token: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != head || authorized.Load() == 0 {
				t.Fatalf("head %s (want %s), %d authorized requests", got, head, authorized.Load())
			}
			// The token never lands in the checkout's configuration.
			cfg, err := os.ReadFile(filepath.Join(dir, ".git/config"))
			if err != nil || strings.Contains(string(cfg), tc.token) {
				t.Fatalf(".git/config holds the token (%v):\n%s", err, cfg)
			}
			// Pull finds the token for the checkout's origin too.
			next := r.CommitAndPush("next", map[string]string{"projects/a/file": "two"})
			if err := source.Pull(t.Context(), dir, nil); err != nil {
				t.Fatal(err)
			}
			if h, _ := source.Head(t.Context(), dir); h != next {
				t.Fatalf("head after Pull = %s, want %s", h, next)
			}
		})
	}
}

func TestTokenFile(t *testing.T) {
	r := sourcetest.New(t)
	r.CommitAndPush("base", map[string]string{"f": "1"})
	url, _ := gitHTTPServer(t, r, "x-access-token", "from-a-file")
	f := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(f, []byte("from-a-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv(source.EnvToken, "")
	t.Setenv(source.EnvTokenFile, f)
	if _, err := source.Update(t.Context(), filepath.Join(t.TempDir(), "sources"), url, "", nil); err != nil {
		t.Fatal(err)
	}
}

func TestCredentialRefusals(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  map[string]string
		url  string
	}{
		{"token over plain http", map[string]string{source.EnvToken: "t"}, "http://git.example.org/sources.git"},
		{"token with a line break", map[string]string{source.EnvToken: "t\nX-Evil: 1"}, "https://git.example.org/sources.git"},
		{"ssh key path needing shell quoting", map[string]string{source.EnvSSHKey: "/keys/id; touch /tmp/pwned"}, "ssh://git@git.example.org/sources.git"},
		{"relative ssh key path", map[string]string{source.EnvSSHKey: "keys/id"}, "ssh://git@git.example.org/sources.git"},
		{"known hosts path with a space", map[string]string{source.EnvSSHKey: "/keys/id", source.EnvSSHKnownHosts: "/a b"}, "ssh://git@git.example.org/sources.git"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sourcetest.New(t) // isolates git from the machine's configuration
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			_, err := source.Update(t.Context(), filepath.Join(t.TempDir(), "sources"), tc.url, "main", nil)
			if err == nil || !strings.Contains(err.Error(), "credentials") {
				t.Fatalf("Update = %v, want a credentials error", err)
			}
		})
	}
}

// TestSSHKey checks what git hands to ssh. A stand-in ssh early in PATH
// records its arguments; a real ssh server is out of reach of a unit test.
func TestSSHKey(t *testing.T) {
	sourcetest.New(t)
	bin := t.TempDir()
	argsFile := filepath.Join(t.TempDir(), "ssh-args")
	script := "#!/bin/sh\nprintf '%s\\n' \"$@\" > " + argsFile + "\necho 'ssh: connection refused' >&2\nexit 255\n"
	if err := os.WriteFile(filepath.Join(bin, "ssh"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	t.Setenv(source.EnvSSHKey, "/etc/cb/keys/id_ed25519")
	t.Setenv(source.EnvSSHKnownHosts, "/etc/cb/keys/known_hosts")
	_, err := source.Update(t.Context(), filepath.Join(t.TempDir(), "sources"), "ssh://git@git.example.org/farm/sources.git", "main", nil)
	if err == nil {
		t.Fatal("update through a refusing ssh succeeded")
	}
	b, rerr := os.ReadFile(argsFile)
	if rerr != nil {
		t.Fatalf("ssh was not run (%v); update error: %v", rerr, err)
	}
	args := string(b)
	for _, want := range []string{"-i\n/etc/cb/keys/id_ed25519\n", "IdentitiesOnly=yes", "BatchMode=yes", "UserKnownHostsFile=/etc/cb/keys/known_hosts", "git@git.example.org"} {
		if !strings.Contains(args, want) {
			t.Errorf("ssh arguments lack %q:\n%s", want, args)
		}
	}
}
