package cli

import (
	"context"
	"strings"
	"testing"
)

// On macOS (or any system but Linux) the server commands refuse to start
// with exit code 2, and cb-ctl's remote commands still run.
func TestServerCommandsRunOnLinuxOnly(t *testing.T) {
	old := goos
	goos = "darwin"
	t.Cleanup(func() { goos = old })
	env, _, _, _ := ctlTestEnv(t, "", "")
	for name, c := range commands {
		if c.Client {
			continue
		}
		stderr := &lockedBuffer{}
		e := *env
		e.Stderr = stderr
		if code := Run(context.Background(), &e, []string{"cb-" + name, "--help"}); code != ExitUsage {
			t.Errorf("cb-%s on darwin: exit %d, want %d", name, code, ExitUsage)
		}
		if !strings.Contains(stderr.String(), "runs on Linux only") {
			t.Errorf("cb-%s on darwin: stderr %q", name, stderr)
		}
	}
	for _, local := range []string{"--build-package-local", "--build-image-local", "--build-dependencies-local"} {
		stderr := &lockedBuffer{}
		e := *env
		e.Stderr = stderr
		if code := Run(context.Background(), &e, []string{"cb-ctl", local, "--dist=bookworm"}); code != ExitUsage || !strings.Contains(stderr.String(), "runs on Linux only") {
			t.Errorf("cb-ctl %s on darwin: exit %d, stderr %q", local, code, stderr)
		}
	}
	// A remote command gets past the check: with no broker listening it
	// fails to connect, not with the Linux-only refusal.
	stderr := &lockedBuffer{}
	e := *env
	e.Stderr = stderr
	Run(context.Background(), &e, []string{"cb-ctl", "--help"})
	if strings.Contains(stderr.String(), "Linux only") {
		t.Errorf("cb-ctl --help refused on darwin: %q", stderr)
	}
	if !commands["ctl"].Client {
		t.Error("cb-ctl is not a client command")
	}
}
