package proc

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestQuote(t *testing.T) {
	for _, tt := range []struct {
		argv []string
		want string
	}{
		{[]string{"cb", "job", "--journal", "/var/tmp/CB/journal/x.yml"}, "cb job --journal /var/tmp/CB/journal/x.yml"},
		{[]string{""}, "''"},
		{[]string{"a b"}, "'a b'"},
		{[]string{"it's"}, `'it'\''s'`},
		{[]string{"$HOME", "`id`", "a;b", "x\ny", "~", "*", "#c"}, `'$HOME' '` + "`id`" + `' 'a;b' 'x` + "\n" + `y' '~' '*' '#c'`},
		{[]string{"--build-timeout=4h0m0s", "user@host:1,2", "50%+"}, "--build-timeout=4h0m0s user@host:1,2 50%+"},
	} {
		if got := Quote(tt.argv); got != tt.want {
			t.Errorf("Quote(%q) = %q, want %q", tt.argv, got, tt.want)
		}
	}
}

// The quoted words must mean to a shell exactly the argv they came from.
func TestQuoteRoundTripsThroughShell(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	argv := []string{"", "plain", "two words", "it's", `back\slash`, "$(id)", "`id`", "a\nb", "*", "-n", `"q"`}
	out, err := exec.Command(sh, "-c", `for a in `+Quote(argv)+`; do printf '%s\0' "$a"; done`).Output()
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00")
	if strings.Join(got, "|") != strings.Join(argv, "|") {
		t.Errorf("shell saw %q, want %q", got, argv)
	}
}

func TestGroupKillsGrandchildrenOnCancel(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "grandchild.pid")
	ctx, cancel := context.WithCancel(context.Background())
	cmd := Command(ctx, 0, "sh", "-c", `sleep 60 & echo $! > `+pidFile+`; wait`)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var grandchild int
	for i := 0; i < 100 && grandchild == 0; i++ {
		if b, err := os.ReadFile(pidFile); err == nil && strings.HasSuffix(string(b), "\n") {
			grandchild, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if grandchild == 0 {
		t.Fatal("grandchild did not start")
	}
	cancel()
	start := time.Now()
	_ = cmd.Wait()
	if time.Since(start) > 5*time.Second {
		t.Errorf("wait took %v after cancel", time.Since(start))
	}
	for i := 0; i < 100; i++ {
		if err := syscall.Kill(grandchild, 0); errors.Is(err, syscall.ESRCH) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Errorf("grandchild %d survived the cancel of its group", grandchild)
}

func TestGroupGraceSendsTermFirst(t *testing.T) {
	dir := t.TempDir()
	mark := filepath.Join(dir, "term")
	ready := filepath.Join(dir, "ready")
	ctx, cancel := context.WithCancel(context.Background())
	cmd := Command(ctx, 5*time.Second, "sh", "-c", `trap 'touch `+mark+`; exit 0' TERM; touch `+ready+`; while :; do sleep 0.05; done`)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 200; i++ {
		if _, err := os.Stat(ready); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	_ = cmd.Wait()
	if _, err := os.Stat(mark); err != nil {
		t.Errorf("the TERM trap did not run: %v", err)
	}
}

func TestKillGroupRefusesSpecialPids(t *testing.T) {
	for _, pid := range []int{-1, 0, 1} {
		if err := KillGroup(pid, syscall.Signal(0)); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("KillGroup(%d) = %v, want ESRCH", pid, err)
		}
	}
}

func TestSleep(t *testing.T) {
	if !Sleep(context.Background(), time.Millisecond) {
		t.Error("Sleep without cancel reported an early end")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if Sleep(ctx, time.Hour) {
		t.Error("Sleep on a done context reported the full time")
	}
}

func TestHostArch(t *testing.T) {
	a := HostArch()
	if a == "" || strings.ContainsAny(a, " /\x00") {
		t.Fatalf("HostArch() = %q", a)
	}
	if out, err := exec.Command("uname", "-m").Output(); err == nil {
		if want := strings.TrimSpace(string(out)); want != a {
			t.Errorf("HostArch() = %q, uname -m says %q", a, want)
		}
	}
}
