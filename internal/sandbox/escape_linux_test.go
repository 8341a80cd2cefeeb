package sandbox

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cloud-builder/cb/internal/cgroup"
)

// escapeAttacks are the attacks of testdata/hostile, each of which must be
// blocked.
var escapeAttacks = []string{
	"chroot-escape", "mknod-disk", "mount-host", "ptrace-outside", "read-token",
	"connect-services", "fork-bomb", "memory-hog", "fill-disk", "daemon",
	"proc-root-write", "unshare-caps",
}

// buildHostile compiles testdata/hostile as a static binary.
func buildHostile(t *testing.T, dst string) {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	cmd := exec.Command(goTool, "build", "-o", dst, ".")
	cmd.Dir = filepath.Join("testdata", "hostile")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the hostile program: %v\n%s", err, out)
	}
}

// listen starts a TCP listener standing in for the broker or collector and
// counts the connections it accepts.
func listen(t *testing.T, addr string) (string, *atomic.Int64) {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	var n atomic.Int64
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			c.Close()
		}
	}()
	return l.Addr().String(), &n
}

// hostAddr is a non-loopback address of this host, or "".
func hostAddr() string {
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if ip, ok := a.(*net.IPNet); ok && !ip.IP.IsLoopback() && ip.IP.To4() != nil {
			return ip.IP.String()
		}
	}
	return ""
}

// TestEscapeSuite runs a hostile program in a rootless sandbox: every
// escape it tries must be blocked, and none may leave a trace on the host.
func TestEscapeSuite(t *testing.T) {
	needRoot(t)
	if cgroup.Version() == 0 {
		t.Fatal("the escape suite needs cgroups for the fork bomb and the memory hog")
	}
	noNewMounts(t)
	lower := miniRoot(t)
	buildHostile(t, filepath.Join(lower, "usr", "bin", "hostile"))
	for _, d := range []string{"tmp", "var/tmp"} {
		if err := os.MkdirAll(filepath.Join(lower, d), 0o1777); err != nil {
			t.Fatal(err)
		}
	}
	if err := ShiftOwner(lower, DefaultIDs); err != nil {
		t.Fatal(err)
	}

	host := t.TempDir()
	marker := filepath.Join(host, "host-marker")
	token := filepath.Join(host, "runner.token")
	for _, f := range []string{marker, token} {
		if err := os.WriteFile(f, []byte("secret\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	broker, brokerConns := listen(t, "127.0.0.1:0")
	targets := []string{broker}
	conns := []*atomic.Int64{brokerConns}
	if ip := hostAddr(); ip != "" {
		collector, collectorConns := listen(t, net.JoinHostPort(ip, "0"))
		targets = append(targets, collector)
		conns = append(conns, collectorConns)
	}
	var st syscall.Stat_t
	if err := syscall.Stat("/", &st); err != nil {
		t.Fatal(err)
	}
	daemon := fmt.Sprintf("cb-hostile-daemon-%d", time.Now().UnixNano())

	s := overlaySpec(t, lower, "hostile",
		"-marker", marker, "-token", token, "-connect", strings.Join(targets, ","),
		"-disk", fmt.Sprintf("%d:%d", unixMajor(st.Dev), unixMinor(st.Dev)),
		"-daemon", daemon, "-memory", fmt.Sprint(1<<30), "-write", fmt.Sprint(1<<30), "-hostdir", host)
	s.Limits = cgroup.Limits{Memory: 256 << 20, Pids: 64}
	s.MaxWrite = 64 << 20
	s.PrivateTmp = true
	s.Timeout = 3 * time.Minute
	code, out, err := run(t, s)
	t.Logf("hostile build: exit %d, err %v\n%s", code, err, out)
	if err != nil {
		t.Fatalf("the sandbox did not survive the hostile build: %v", err)
	}

	verdicts := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		f := strings.SplitN(sc.Text(), " ", 4)
		if len(f) >= 3 && f[0] == "ATTACK" {
			verdicts[f[1]] = strings.TrimSuffix(f[2], ":")
		}
	}
	blocked := 0
	for _, a := range escapeAttacks {
		switch verdicts[a] {
		case "BLOCKED":
			blocked++
		case "":
			t.Errorf("attack %s did not report", a)
		default:
			t.Errorf("attack %s: %s", a, verdicts[a])
		}
	}

	// What only the host can see.
	if data, _ := os.ReadFile(marker); !bytes.Equal(data, []byte("secret\n")) {
		t.Errorf("host marker changed: %q", data)
	}
	for _, f := range []string{"pwned-1", "pwned-self"} {
		if _, err := os.Stat(filepath.Join(host, f)); err == nil {
			t.Errorf("the build wrote %s into a host directory", f)
			blocked--
		}
	}
	for i, n := range conns {
		if n.Load() != 0 {
			t.Errorf("%s accepted %d connections from the build", targets[i], n.Load())
			blocked--
		}
	}
	if p := procsWith(t, daemon); len(p) > 0 {
		t.Errorf("the daemon outlived the build: pids %v", p)
		blocked--
	}
	t.Logf("escape suite: %d of %d attacks blocked", blocked, len(escapeAttacks))
	if blocked != len(escapeAttacks) {
		t.Errorf("escape suite: only %d of %d attacks blocked", blocked, len(escapeAttacks))
	}
}

// TestEscapeSuiteDetects runs some attacks in a sandbox with HostRoot,
// which is no security boundary: they must be reported as escapes, or the
// suite could not tell a broken sandbox from a working one.
func TestEscapeSuiteDetects(t *testing.T) {
	needRoot(t)
	noNewMounts(t)
	lower := miniRoot(t)
	buildHostile(t, filepath.Join(lower, "usr", "bin", "hostile"))
	if err := os.MkdirAll(filepath.Join(lower, "tmp"), 0o1777); err != nil {
		t.Fatal(err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat("/", &st); err != nil {
		t.Fatal(err)
	}
	s := overlaySpec(t, lower, "hostile", "-disk", fmt.Sprintf("%d:%d", unixMajor(st.Dev), unixMinor(st.Dev)),
		"mknod-disk", "mount-host", "unshare-caps")
	s.HostRoot = true
	code, out, err := run(t, s)
	if err != nil || code != 0 {
		t.Fatalf("code %d err %v out %s", code, err, out)
	}
	for _, a := range []string{"mknod-disk", "mount-host", "unshare-caps"} {
		if !strings.Contains(out, "ATTACK "+a+" ESCAPED") {
			t.Errorf("attack %s not detected as an escape with HostRoot:\n%s", a, out)
		}
	}
}

func unixMajor(dev uint64) uint64 { return (dev >> 8) & 0xfff }
func unixMinor(dev uint64) uint64 { return (dev & 0xff) | ((dev >> 12) & 0xfff00) }
