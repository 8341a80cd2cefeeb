package cgroup

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func needCgroups(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 && Version() != 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("cgroup tests need root and a cgroup hierarchy (uid %d, version %d)", os.Geteuid(), Version())
	}
	t.Skip("cgroup tests need root and a cgroup hierarchy")
}

func newGroup(t *testing.T, l Limits) *Group {
	t.Helper()
	g, err := New(fmt.Sprintf("test-%d-%s", os.Getpid(), strings.ReplaceAll(t.Name(), "/", "_")), l)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := g.Close(); err != nil {
			t.Error(err)
		}
		for _, d := range g.Dirs() {
			if _, err := os.Stat(d); !os.IsNotExist(err) {
				t.Errorf("cgroup %s left behind", d)
			}
		}
	})
	return g
}

func TestLimitsValidate(t *testing.T) {
	for _, l := range []Limits{{Memory: -1}, {Memory: 1000}, {Pids: -2}, {CPUWeight: 10001}} {
		if l.Validate() == nil {
			t.Errorf("%+v: no error", l)
		}
	}
	if err := (Limits{Memory: 1 << 30, Pids: 100, CPUWeight: 50}).Validate(); err != nil {
		t.Error(err)
	}
	if _, err := New("../escape", Limits{}); err == nil {
		t.Error("New accepted a name with a path separator")
	}
}

func TestLimitsApply(t *testing.T) {
	needCgroups(t)
	g := newGroup(t, Limits{Memory: 64 << 20, Pids: 7, CPUWeight: 50})
	want := map[string]string{"pids.max": "7"}
	if g.v2 {
		want["memory.max"] = "67108864"
		want["cpu.weight"] = "50"
	} else {
		want["memory.limit_in_bytes"] = "67108864"
		want["cpu.shares"] = "512"
	}
	for file, v := range want {
		found := false
		for _, d := range g.Dirs() {
			data, err := os.ReadFile(filepath.Join(d, file))
			if err != nil {
				continue
			}
			found = true
			if got := strings.TrimSpace(string(data)); got != v {
				t.Errorf("%s = %s, want %s", file, got, v)
			}
		}
		if !found && file != "cpu.shares" && file != "cpu.weight" {
			t.Errorf("%s not found in %v", file, g.Dirs())
		}
	}
}

// start runs a shell in the group: the process is added before it runs
// anything (it waits for its stdin).
func start(t *testing.T, g *Group, script string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("sh", "-c", "read x; "+script)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if err := g.Add(cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	fmt.Fprintln(stdin, "go")
	return cmd
}

func TestPidsLimit(t *testing.T) {
	needCgroups(t)
	g := newGroup(t, Limits{Pids: 5})
	// Ten background sleeps cannot all start under a limit of five.
	cmd := start(t, g, `n=0; for i in 1 2 3 4 5 6 7 8 9 10; do sleep 30 & done 2>/dev/null; sleep 0.2; echo $(jobs -p | wc -l)`)
	time.Sleep(500 * time.Millisecond)
	pids, err := g.Pids()
	if err != nil {
		t.Fatal(err)
	}
	if len(pids) > 5 {
		t.Errorf("%d processes in a group limited to 5", len(pids))
	}
	if err := g.Kill(context.Background()); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
}

func TestMemoryLimit(t *testing.T) {
	needCgroups(t)
	g := newGroup(t, Limits{Memory: 32 << 20})
	// A shell that doubles a string grows past 32 MiB and is OOM-killed.
	cmd := start(t, g, `x=a; while :; do x="$x$x"; done`)
	err := cmd.Wait()
	ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if err == nil || !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("memory hog ended with %v, want SIGKILL by the OOM killer", err)
	}
	if n := g.OOMKills(); n < 1 {
		t.Errorf("OOMKills = %d, want >= 1", n)
	}
}

func TestKillReachesReparentedProcesses(t *testing.T) {
	needCgroups(t)
	g := newGroup(t, Limits{})
	// The daemon double-forks out of the shell's process group and is
	// reparented; only the cgroup still knows it.
	cmd := start(t, g, `setsid sh -c 'sleep 300 & exit 0' </dev/null >/dev/null 2>&1; exit 0`)
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		pids, _ := g.Pids()
		if len(pids) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("daemon not found in the group: %v", pids)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := g.Kill(context.Background()); err != nil {
		t.Fatal(err)
	}
	if pids, _ := g.Pids(); len(pids) != 0 {
		t.Errorf("processes survive Kill: %v", pids)
	}
}

// BenchmarkNewClose is the cgroup share of a sandbox's start-up cost.
func BenchmarkNewClose(b *testing.B) {
	if os.Geteuid() != 0 || Version() == 0 {
		b.Skip("needs root and cgroups")
	}
	for i := 0; i < b.N; i++ {
		g, err := New(fmt.Sprintf("bench-%d-%d", os.Getpid(), i), Limits{Memory: 1 << 30, Pids: 1000, CPUWeight: 100})
		if err != nil {
			b.Fatal(err)
		}
		if err := g.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

// TestCloseOwned kills the groups of a maker that died without closing
// them, as the scheduler does after killing a job.
func TestCloseOwned(t *testing.T) {
	needCgroups(t)
	maker := 999999 // no such process: a job killed with SIGKILL
	g, err := New(fmt.Sprintf("sandbox-%d-1", maker), Limits{Pids: 10})
	if err != nil {
		t.Fatal(err)
	}
	other := newGroup(t, Limits{})
	cmd := start(t, g, "sleep 300")
	if err := CloseOwned(maker); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err == nil {
		t.Error("the process in the group survived")
	}
	for _, d := range g.Dirs() {
		if _, err := os.Stat(d); !os.IsNotExist(err) {
			t.Errorf("%s left behind", d)
		}
	}
	for _, d := range other.Dirs() {
		if _, err := os.Stat(d); err != nil {
			t.Errorf("a group of another maker was touched: %v", err)
		}
	}
}
