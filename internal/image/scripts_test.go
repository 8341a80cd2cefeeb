package image

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
)

// TestChrootWrapperCoversScripts keeps the wrapper's list of scripts in
// step with descriptionScripts.
func TestChrootWrapperCoversScripts(t *testing.T) {
	bin := t.TempDir()
	old := Bwrap
	Bwrap = "/bin/true" // any program: only the path is written
	t.Cleanup(func() { Bwrap = old })
	if err := installChroot(bin); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(bin, "chroot"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Count(string(data), "\n"+scriptPattern()+") script=1 ;;") != 1 || strings.Count(string(data), "\t"+scriptPattern()+") script=1 ;;") != 1 {
		t.Errorf("the chroot wrapper does not match the scripts in both call forms:\n%s", data)
	}
	alts := strings.Split(scriptPattern(), "|")
	for _, s := range descriptionScripts {
		for _, form := range []string{"image/" + s, "/image/" + s} {
			if !slices.Contains(alts, form) {
				t.Errorf("the chroot wrapper does not confine %q", form)
			}
		}
	}
}

// TestChrootWrapperConfinesScripts runs the sandbox's hostile program as
// a description's config.sh, exactly as kiwi calls it (chroot ROOT
// image/config.sh, in kiwi's namespaces), and checks every escape it
// tries is blocked: a chroot escape, a host file through /proc/1/root, a
// write to the host through /proc/1/root, a device node of the disk, a
// mount and a connection to a service on the runner. The
// same program run through the real chroot escapes, so the check can
// fail.
func TestChrootWrapperConfinesScripts(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("the script confinement test needs root, and CI=true")
		}
		t.Skip("the script confinement test needs root")
	}
	if _, err := exec.LookPath(Bwrap); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("bwrap not installed, and CI=true")
		}
		t.Skip("bwrap not installed")
	}
	root := filepath.Join(t.TempDir(), "image-root")
	for _, d := range []string{"image", "tmp", "dev", "proc"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// kiwi bind-mounts the host's /dev there; the control run needs null.
	if err := syscall.Mknod(filepath.Join(root, "dev", "null"), syscall.S_IFCHR|0o666, 1<<8|3); err != nil {
		t.Fatal(err)
	}
	buildHostile(t, filepath.Join(root, "image", "config.sh"))
	host := t.TempDir()
	marker := filepath.Join(host, "runner-secret")
	if err := os.WriteFile(marker, []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var conns atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			c.Close()
		}
	}()
	bin := filepath.Join(t.TempDir(), "bin")
	if err := installChroot(bin); err != nil {
		t.Fatal(err)
	}
	env := commandEnv(bin, t.TempDir(), t.TempDir())
	hostile := func(chroot string, attacks ...string) string {
		t.Helper()
		var out bytes.Buffer
		// As kiwi does, with its PID namespace's /proc in the image root
		// (the mount vanishes with run's mount namespace).
		argv := append([]string{"/bin/sh", "-c", `mount -t proc proc "$2/proc" && exec "$@"`, "sh", chroot, root, "image/config.sh",
			"-marker", marker, "-token", marker, "-hostdir", host, "-connect", ln.Addr().String()}, attacks...)
		code, err := run(context.Background(), runOptions{env: env, dir: root, stdout: &out, log: &out, repos: []string{}}, argv...)
		if err != nil || code != 0 {
			t.Fatalf("%s: exit %d, %v\n%s", chroot, code, err, out.String())
		}
		return out.String()
	}

	// Not ptrace-outside: PID 1 of the script's PID namespace is
	// bubblewrap's reaper, inside the same sandbox with the same
	// capabilities; no process outside is visible to attach to.
	attacks := []string{"chroot-escape", "read-token", "proc-root-write", "mknod-disk", "mount-host", "connect-services"}
	out := hostile(filepath.Join(bin, "chroot"), attacks...)
	t.Logf("confined config.sh:\n%s", out)
	for _, a := range attacks {
		if !strings.Contains(out, "ATTACK "+a+" BLOCKED") {
			t.Errorf("attack %s not blocked", a)
		}
	}
	if got := confinedScripts(bin); len(got) != 1 || !strings.HasPrefix(got[0], "image/config.sh -marker") {
		t.Errorf("confined scripts noted: %q", got)
	}
	if pwned, _ := filepath.Glob(filepath.Join(host, "pwned-*")); len(pwned) > 0 {
		t.Errorf("config.sh wrote to the host: %v", pwned)
	}
	if conns.Load() != 0 {
		t.Errorf("config.sh connected to a service of the runner %d times", conns.Load())
	}

	// The control: kiwi's own chroot would let the same script out.
	out = hostile("/usr/sbin/chroot", "chroot-escape")
	if !strings.Contains(out, "ATTACK chroot-escape ESCAPED") {
		t.Errorf("the hostile script did not escape a plain chroot; the test proves nothing:\n%s", out)
	}
}

// buildHostile compiles the sandbox's hostile program as a static binary.
func buildHostile(t *testing.T, dst string) {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	cmd := exec.Command(goTool, "build", "-o", dst, ".")
	cmd.Dir = filepath.Join("..", "sandbox", "testdata", "hostile")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the hostile program: %v\n%s", err, out)
	}
}
