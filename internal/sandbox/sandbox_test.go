package sandbox

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// envTestParent makes the test binary act as a sandbox caller that the
// tests can kill with SIGKILL; it carries the Spec as JSON.
const envTestParent = "CB_SANDBOX_TEST_PARENT"

func TestMain(m *testing.M) {
	Init()
	if raw := os.Getenv(envTestParent); raw != "" {
		var s Spec
		if err := json.Unmarshal([]byte(raw), &s); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		s.Stdout, s.Stderr = os.Stdout, os.Stderr
		code, err := Run(context.Background(), s)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
		os.Exit(code)
	}
	os.Exit(m.Run())
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("sandbox tests need root; CI runs as root")
	}
	t.Skip("sandbox tests need root")
}

// miniRoot makes a tiny root filesystem from host binaries and the shared
// libraries they need, so the tests exercise real programs without
// depending on a bootstrapped distribution.
func miniRoot(t *testing.T) string {
	t.Helper()
	root := filepath.Join(t.TempDir(), "lower")
	files := map[string]bool{}
	for _, b := range []string{"sh", "sleep", "cat", "touch", "ls", "kill"} {
		p, err := exec.LookPath(b)
		if err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s missing: %v", b, err)
			}
			t.Skipf("%s missing: %v", b, err)
		}
		files[p] = true
		out, err := exec.Command("ldd", p).Output()
		if err != nil {
			t.Fatalf("ldd %s: %v", p, err)
		}
		for _, f := range strings.Fields(string(out)) {
			if strings.HasPrefix(f, "/") {
				files[f] = true
			}
		}
	}
	for f := range files {
		real, err := filepath.EvalSymlinks(f)
		if err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(real)
		if err != nil {
			t.Fatal(err)
		}
		dst := filepath.Join(root, f)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, data, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// overlaySpec returns a spec with a fresh upper layer over lower.
func overlaySpec(t *testing.T, lower string, argv ...string) Spec {
	t.Helper()
	d := t.TempDir()
	s := Spec{
		Lower: lower, Upper: filepath.Join(d, "upper"), Work: filepath.Join(d, "work"),
		Root: filepath.Join(d, "merged"), Dir: "/", Argv: argv,
		Env:       []string{"PATH=/usr/bin:/bin", "HOME=/root"},
		KillGrace: time.Second,
	}
	for _, p := range []string{s.Upper, s.Work, s.Root} {
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// The upper layer's top directory is the root directory of the
	// merged view; root inside the sandbox must own it to write there.
	if err := os.Lchown(s.Upper, int(DefaultIDs.UID), int(DefaultIDs.GID)); err != nil {
		t.Fatal(err)
	}
	return s
}

func mounts(t *testing.T) []string {
	t.Helper()
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		f := strings.Fields(l)
		if len(f) > 4 {
			out = append(out, f[4])
		}
	}
	return out
}

// noNewMounts fails the test if a mount below the test's temporary
// directories is left on the host. Other mounts may come and go while the
// test runs (the machine is shared), so only the test's own paths count.
func noNewMounts(t *testing.T) {
	t.Helper()
	prefix := filepath.Join(os.TempDir(), t.Name())
	check := func(when string) {
		for _, m := range mounts(t) {
			if strings.HasPrefix(m, prefix) {
				t.Errorf("mount %s %s", m, when)
			}
		}
	}
	check("exists before the test")
	t.Cleanup(func() { check("left behind on the host") })
}

func run(t *testing.T, s Spec) (int, string, error) {
	t.Helper()
	var out bytes.Buffer
	s.Stdout, s.Stderr = &out, &out
	code, err := Run(context.Background(), s)
	return code, out.String(), err
}

func TestRunIsolation(t *testing.T) {
	needRoot(t)
	noNewMounts(t)
	lower := miniRoot(t)

	t.Run("own pid namespace", func(t *testing.T) {
		code, out, err := run(t, overlaySpec(t, lower, "sh", "-c", "echo $PPID; cat /proc/1/cmdline; echo; ls /proc"))
		if err != nil || code != 0 {
			t.Fatalf("code %d err %v out %s", code, err, out)
		}
		lines := strings.Split(out, "\n")
		if lines[0] != "1" {
			t.Errorf("parent of the command is pid %q, want 1 (the sandbox init)", lines[0])
		}
		if !strings.HasPrefix(lines[1], initName) {
			t.Errorf("pid 1 is %q, want %s", lines[1], initName)
		}
		// a private /proc lists only the sandbox's processes
		var pids []string
		for _, l := range lines[2:] {
			if l != "" && strings.Trim(l, "0123456789") == "" {
				pids = append(pids, l)
			}
		}
		if len(pids) == 0 || len(pids) > 4 {
			t.Errorf("/proc inside lists pids %v, want only the sandbox's own", pids)
		}
	})

	t.Run("mounts inside", func(t *testing.T) {
		code, out, err := run(t, overlaySpec(t, lower, "cat", "/proc/self/mountinfo"))
		if err != nil || code != 0 {
			t.Fatalf("code %d err %v out %s", code, err, out)
		}
		for _, want := range []string{" / / ", " /proc ", " /sys ro,", " /dev ", " /dev/pts ", " /dev/null "} {
			if !strings.Contains(out, want) {
				t.Errorf("mountinfo inside lacks %q:\n%s", want, out)
			}
		}
		if !strings.Contains(out, " - overlay ") {
			t.Errorf("root is not an overlay:\n%s", out)
		}
	})

	t.Run("overlay writes land in upper", func(t *testing.T) {
		if err := os.WriteFile(filepath.Join(lower, "a"), []byte("lower\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := ShiftOwner(lower, DefaultIDs); err != nil {
			t.Fatal(err)
		}
		s := overlaySpec(t, lower, "sh", "-c", "cat /a /b && echo new > /c && echo changed > /a")
		if err := os.WriteFile(filepath.Join(s.Upper, "b"), []byte("upper\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		code, out, err := run(t, s)
		if err != nil || code != 0 {
			t.Fatalf("code %d err %v out %s", code, err, out)
		}
		if out != "lower\nupper\n" {
			t.Errorf("merged view read %q", out)
		}
		for path, want := range map[string]string{
			filepath.Join(s.Upper, "c"): "new\n",
			filepath.Join(s.Upper, "a"): "changed\n",
			filepath.Join(lower, "a"):   "lower\n",
		} {
			got, err := os.ReadFile(path)
			if err != nil || string(got) != want {
				t.Errorf("%s = %q (%v), want %q", path, got, err, want)
			}
		}
		if _, err := os.Stat(filepath.Join(lower, "c")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("write reached the lower layer: %v", err)
		}
	})

	t.Run("plain root dir", func(t *testing.T) {
		s := Spec{Root: lower, Argv: []string{"cat", "/a"}, Env: []string{"PATH=/usr/bin:/bin"}}
		code, out, err := run(t, s)
		if err != nil || code != 0 || out != "lower\n" {
			t.Fatalf("code %d err %v out %q", code, err, out)
		}
	})
}

func TestRunNetwork(t *testing.T) {
	needRoot(t)
	noNewMounts(t)
	lower := miniRoot(t)
	ifaces := func(out string) []string {
		var names []string
		for _, l := range strings.Split(out, "\n") {
			if name, _, ok := strings.Cut(l, ":"); ok && !strings.Contains(name, "|") {
				names = append(names, strings.TrimSpace(name))
			}
		}
		return names
	}
	for _, tc := range []struct {
		network bool
		onlyLo  bool
	}{{false, true}, {true, false}} {
		t.Run(fmt.Sprintf("network=%v", tc.network), func(t *testing.T) {
			s := overlaySpec(t, lower, "cat", "/proc/net/dev")
			s.Network = tc.network
			code, out, err := run(t, s)
			if err != nil || code != 0 {
				t.Fatalf("code %d err %v out %s", code, err, out)
			}
			names := ifaces(out)
			onlyLo := len(names) == 1 && names[0] == "lo"
			if onlyLo != tc.onlyLo {
				t.Errorf("interfaces %v, want only lo: %v", names, tc.onlyLo)
			}
		})
	}
}

func TestRunExitStatus(t *testing.T) {
	needRoot(t)
	noNewMounts(t)
	lower := miniRoot(t)
	for _, tc := range []struct {
		name string
		argv []string
		code int
	}{
		{"missing command", []string{"no-such-command", "arg"}, -1},
		{"exit 7", []string{"sh", "-c", "exit 7"}, 7},
		{"killed", []string{"sh", "-c", "kill -9 $$"}, 128 + 9},
		{"orphans are reaped", []string{"sh", "-c", "sleep 1000 & exit 3"}, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, err := run(t, overlaySpec(t, lower, tc.argv...))
			if tc.code == -1 {
				// a missing command is a setup error, not an exit status
				if err == nil || !strings.Contains(err.Error(), "not found") {
					t.Fatalf("code %d err %v, want command not found", code, err)
				}
				return
			}
			if err != nil || code != tc.code {
				t.Fatalf("code %d err %v out %s, want %d", code, err, out, tc.code)
			}
		})
	}
	t.Run("bad root", func(t *testing.T) {
		s := overlaySpec(t, lower, "sh", "-c", "true")
		s.Root = filepath.Join(t.TempDir(), "missing")
		code, _, err := run(t, s)
		if err == nil || code != -1 || !strings.Contains(err.Error(), "mount overlay") {
			t.Fatalf("code %d err %v, want overlay mount error", code, err)
		}
	})
}

// procsWith lists host pids whose command line contains token.
func procsWith(t *testing.T, token string) []string {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var pids []string
	for _, e := range ents {
		if strings.Trim(e.Name(), "0123456789") != "" {
			continue
		}
		cmd, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && bytes.Contains(cmd, []byte(token)) {
			pids = append(pids, e.Name())
		}
	}
	return pids
}

func ppid(t *testing.T, pid string) string {
	t.Helper()
	f, err := os.Open(filepath.Join("/proc", pid, "status"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "PPid:"); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("no PPid for %s", pid)
	return ""
}

func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// uniqueSleep is a sleep whose command line can be found in /proc.
func uniqueSleep() string { return fmt.Sprintf("1000.%d", time.Now().UnixNano()%1e9) }

func TestRunTimeout(t *testing.T) {
	needRoot(t)
	noNewMounts(t)
	lower := miniRoot(t)
	for _, tc := range []struct {
		name   string
		script string
	}{
		{"sleep ends on SIGTERM", "exec sleep %s"},
		{"SIGTERM ignored so SIGKILL after grace", "trap '' TERM; sleep %s; echo survived"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			token := uniqueSleep()
			s := overlaySpec(t, lower, "sh", "-c", fmt.Sprintf(tc.script, token))
			s.Timeout = 300 * time.Millisecond
			s.KillGrace = 700 * time.Millisecond
			start := time.Now()
			code, out, err := run(t, s)
			took := time.Since(start)
			if !errors.Is(err, ErrTimeout) {
				t.Fatalf("code %d err %v out %s, want timeout", code, err, out)
			}
			if took > s.Timeout+s.KillGrace+5*time.Second {
				t.Errorf("took %s to stop", took)
			}
			if strings.Contains(out, "survived") {
				t.Errorf("command outlived the timeout: %s", out)
			}
			if p := procsWith(t, token); len(p) > 0 {
				t.Errorf("processes left: %v", p)
			}
		})
	}
	t.Run("abandoned work gets no grace", func(t *testing.T) {
		// A TERM trap would print and the grace would hold Run for 30s;
		// abandoned work is killed at once instead.
		ctx, cancel := context.WithCancelCause(context.Background())
		s := overlaySpec(t, lower, "sh", "-c", fmt.Sprintf("trap 'echo got TERM' TERM; echo ready; sleep %s & wait; sleep %[1]s", uniqueSleep()))
		s.KillGrace = 30 * time.Second
		out := &readyWriter{ready: make(chan struct{})}
		s.Stdout, s.Stderr = out, out
		go func() {
			<-out.ready // the trap is set
			cancel(fmt.Errorf("fenced: %w", ErrAbandoned))
		}()
		start := time.Now()
		_, err := Run(ctx, s)
		if !errors.Is(err, ErrAbandoned) {
			t.Fatalf("err %v, want the abandoned cause", err)
		}
		if took := time.Since(start); took >= s.KillGrace {
			t.Errorf("took %s: the grace was waited for", took)
		}
		if strings.Contains(out.String(), "got TERM") {
			t.Errorf("abandoned work got SIGTERM instead of SIGKILL: %s", out.String())
		}
	})
	t.Run("context cancel", func(t *testing.T) {
		ctx, cancel := context.WithCancelCause(context.Background())
		s := overlaySpec(t, lower, "sleep", uniqueSleep())
		time.AfterFunc(200*time.Millisecond, func() { cancel(errors.New("shutdown")) })
		_, err := Run(ctx, s)
		if err == nil || !strings.Contains(err.Error(), "shutdown") {
			t.Fatalf("err %v, want the cancel cause", err)
		}
	})
}

// TestKillCaller kills the process that called Run with SIGKILL and checks
// that the kernel took the sandbox's processes and mounts with it.
func TestKillCaller(t *testing.T) {
	needRoot(t)
	noNewMounts(t)
	lower := miniRoot(t)
	token := uniqueSleep()
	s := overlaySpec(t, lower, "sh", "-c", "touch /ready; sleep "+token+"; echo survived > /survived")
	raw, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	parent := exec.Command(os.Args[0], "-test.run=^$")
	parent.Env = append(os.Environ(), envTestParent+"="+string(raw))
	parent.Stdout, parent.Stderr = io.Discard, io.Discard
	if err := parent.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "sandbox to start", 10*time.Second, func() bool {
		_, err := os.Stat(filepath.Join(s.Upper, "ready"))
		return err == nil
	})
	var sleepPid string
	waitFor(t, "sleep to start", 5*time.Second, func() bool {
		p := procsWith(t, token)
		for _, pid := range p {
			if c, _ := os.ReadFile("/proc/" + pid + "/comm"); strings.TrimSpace(string(c)) == "sleep" {
				sleepPid = pid
			}
		}
		return sleepPid != ""
	})
	shPid := ppid(t, sleepPid)
	initPid := ppid(t, shPid)
	if c, _ := os.ReadFile("/proc/" + initPid + "/cmdline"); !bytes.HasPrefix(c, []byte(initName)) {
		t.Fatalf("grandparent of sleep is %q, want the sandbox init", c)
	}
	mi, err := os.ReadFile("/proc/" + initPid + "/mountinfo")
	if err != nil || !bytes.Contains(mi, []byte(" - overlay ")) {
		t.Fatalf("sandbox mount namespace has no overlay (%v):\n%s", err, mi)
	}

	if err := parent.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = parent.Wait()
	waitFor(t, "sandbox processes to die", 10*time.Second, func() bool {
		for _, pid := range []string{initPid, shPid, sleepPid} {
			if _, err := os.Stat("/proc/" + pid); err == nil {
				return false
			}
		}
		return len(procsWith(t, token)) == 0
	})
	for _, m := range mounts(t) {
		if strings.HasPrefix(m, filepath.Dir(s.Root)) || strings.HasPrefix(m, lower) {
			t.Errorf("mount left on the host: %s", m)
		}
	}
	if _, err := os.Stat(filepath.Join(s.Upper, "survived")); err == nil {
		t.Error("command ran on after its caller was killed")
	}
}

// BenchmarkRun measures the fixed cost of a sandbox: re-exec, namespaces,
// overlay, /proc, /dev and the command's own start.
func BenchmarkRun(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	lower := b.TempDir()
	for _, p := range []string{"usr/bin", "lib/x86_64-linux-gnu", "lib64"} {
		if err := os.MkdirAll(filepath.Join(lower, p), 0o755); err != nil {
			b.Fatal(err)
		}
	}
	truePath, err := exec.LookPath("true")
	if err != nil {
		b.Skip(err)
	}
	out, _ := exec.Command("ldd", truePath).Output()
	files := []string{truePath}
	for _, f := range strings.Fields(string(out)) {
		if strings.HasPrefix(f, "/") {
			files = append(files, f)
		}
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			b.Fatal(err)
		}
		dst := filepath.Join(lower, f)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(dst, data, 0o755); err != nil {
			b.Fatal(err)
		}
	}
	d := b.TempDir()
	s := Spec{Lower: lower, Upper: filepath.Join(d, "u"), Work: filepath.Join(d, "w"), Root: filepath.Join(d, "m"),
		Argv: []string{truePath}, Env: []string{"PATH=/usr/bin"}}
	for _, p := range []string{s.Upper, s.Work, s.Root} {
		if err := os.MkdirAll(p, 0o755); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if code, err := Run(context.Background(), s); err != nil || code != 0 {
			b.Fatalf("code %d err %v", code, err)
		}
	}
}

// readyWriter collects output and closes ready at the first "ready" line.
type readyWriter struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	ready chan struct{}
	once  sync.Once
}

func (w *readyWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if strings.Contains(w.buf.String(), "ready\n") {
		w.once.Do(func() { close(w.ready) })
	}
	return len(p), nil
}

func (w *readyWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}
