package buildroot

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/cloud-builder/cb/internal/cgroup"
)

// TestExecIsolateKillsDaemons runs a "tool" that starts a daemon in a new
// process group of its own (setsid) and exits, as a maintainer script might: with Isolate the daemon
// must not outlive the tool, nor a tool killed by its context.
func TestExecIsolateKillsDaemons(t *testing.T) {
	if os.Geteuid() != 0 || cgroup.Version() == 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("needs root and cgroups under CI")
		}
		t.Skip("needs root and cgroups")
	}
	// pids of the test's own daemon, found by its unique argument
	daemons := func(token string) []string {
		out, _ := exec.Command("pgrep", "-f", "sleep "+token).Output()
		return strings.Fields(string(out))
	}
	for _, tc := range []struct {
		name, script string
		timeout      time.Duration
	}{
		{"tool exits", "setsid sleep %s </dev/null >/dev/null 2>&1 & sleep 0.2; exit 0", time.Minute},
		{"tool killed", "setsid sleep %s </dev/null >/dev/null 2>&1 & sleep 600", 2 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			token := fmt.Sprintf("1000.%d", time.Now().UnixNano()%1e9)
			ctx, cancel := context.WithTimeout(context.Background(), tc.timeout)
			defer cancel()
			var log bytes.Buffer
			err := Exec(ctx, &log, ExecOptions{PrivateMounts: true, Isolate: true}, "sh", "-c", fmt.Sprintf(tc.script, token))
			if tc.timeout < time.Minute && !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("err %v, want the deadline", err)
			}
			if tc.timeout == time.Minute && err != nil {
				t.Errorf("err %v", err)
			}
			if pids := daemons(token); len(pids) > 0 {
				t.Errorf("the daemon outlived the tool: %v", pids)
				for _, p := range pids {
					_ = exec.Command("kill", "-9", p).Run()
				}
			}
			if groups, _ := cgroup.Owned(os.Getpid()); len(groups) > 0 {
				t.Errorf("cgroups left: %v", groups)
			}
			if !strings.Contains(log.String(), "$ sh -c") {
				t.Errorf("command not logged: %q", log.String())
			}
		})
	}
}

// TestExecRepositoriesOnly gives a tool a network of its own whose only
// way out is the repository proxy: a URL below the repository works
// through it, another URL is refused, and a direct connection, bypassing
// the proxy, finds no network at all.
func TestExecRepositoriesOnly(t *testing.T) {
	if os.Geteuid() != 0 || cgroup.Version() == 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("needs root and cgroups under CI")
		}
		t.Skip("needs root and cgroups")
	}
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("python3 missing")
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "served %s", r.URL.Path)
	}))
	defer srv.Close()
	script := `
import urllib.request as u, sys
base = sys.argv[1]
def get(url, proxies=None):
    opener = u.build_opener(u.ProxyHandler(proxies)) if proxies is not None else u.build_opener()
    try:
        return opener.open(url, timeout=10).read().decode()
    except Exception as e:
        return "failed: %s" % e
print("allowed:", get(base + "/debian/dists/bookworm/Release"))
print("other:", get(base + "/secrets"))
print("direct:", get(base + "/debian/x", proxies={}))
`
	var log bytes.Buffer
	err := Exec(context.Background(), &log, ExecOptions{PrivateMounts: true, Isolate: true, Repositories: []string{srv.URL + "/debian"}},
		"python3", "-c", script, srv.URL)
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	out := log.String()
	for _, want := range []string{
		"allowed: served /debian/dists/bookworm/Release",
		"other: failed: HTTP Error 403",
		"direct: failed: <urlopen error [Errno 111] Connection refused>",
		"network: refused GET " + srv.URL + "/secrets",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}
