package buildroot

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/cloud-builder/cb/internal/cgroup"
)

// TestExecIsolateKillsDaemons runs a "tool" that starts a daemon in a new
// session and exits, as a maintainer script might: with Isolate the daemon
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
