package e2e

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// escapeAttacks are the attacks of internal/sandbox/testdata/hostile.
var escapeAttacks = []string{
	"chroot-escape", "mknod-disk", "mount-host", "ptrace-outside", "read-token",
	"connect-services", "fork-bomb", "memory-hog", "fill-disk", "daemon",
	"proc-root-write", "unshare-caps",
}

// TestEscapeSuite builds e2e/testdata/projects/Debian/cb-hostile, whose
// debian/rules runs the escape suite program during the build, through
// cb prepare and cb run with a runner's sandbox limits. Every attack must
// be blocked, and the host must show no trace of any.
func TestEscapeSuite(t *testing.T) {
	needRoot(t, "mmdebstrap", "dpkg-buildpackage")
	pkg := filepath.Join(t.TempDir(), "cb-hostile")
	copyTree(t, filepath.Join(repoRoot, "e2e/testdata/projects/Debian/cb-hostile"), pkg)
	build := exec.Command("go", "build", "-o", filepath.Join(pkg, "hostile"), ".")
	build.Dir = filepath.Join(repoRoot, "internal/sandbox/testdata/hostile")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the hostile program: %v\n%s", err, out)
	}

	// What the build must not reach: a host file, a runner token, the
	// broker and the collector, a host directory.
	host := t.TempDir()
	marker := filepath.Join(host, "host-marker")
	token := filepath.Join(host, "artifacts.token")
	for _, f := range []string{marker, token} {
		if err := os.WriteFile(f, []byte("secret\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var conns atomic.Int64
	var addrs []string
	for _, a := range []string{"127.0.0.1:0", net.JoinHostPort(hostIP(), "0")} {
		l, err := net.Listen("tcp", a)
		if err != nil {
			continue
		}
		t.Cleanup(func() { l.Close() })
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				conns.Add(1)
				c.Close()
			}
		}()
		addrs = append(addrs, l.Addr().String())
	}
	var st syscall.Stat_t
	if err := syscall.Stat("/", &st); err != nil {
		t.Fatal(err)
	}
	daemon := fmt.Sprintf("cb-hostile-daemon-%d", time.Now().UnixNano())
	args := fmt.Sprintf("-marker %s -token %s -connect %s -disk %d:%d -daemon %s -memory %d -write %d -hostdir %s\n",
		marker, token, strings.Join(addrs, ","), (st.Dev>>8)&0xfff, (st.Dev&0xff)|((st.Dev>>12)&0xfff00), daemon, 1<<30, 1<<30, host)
	if err := os.WriteFile(filepath.Join(pkg, "hostile.args"), []byte(args), 0o644); err != nil {
		t.Fatal(err)
	}

	// The runner's limits, low enough for the hog and the bomb to hit.
	cfg := filepath.Join(t.TempDir(), "runner.yml")
	if err := os.WriteFile(cfg, []byte(`sandbox:
  memory: 268435456
  pids: 256
  max_write: 67108864
  log_idle: 5m
`), 0o644); err != nil {
		t.Fatal(err)
	}
	// The runner root of TestLocalBuild: cb-hostile has cb-hello's
	// description and build dependencies, so its cached root is reused.
	runnerRoot := "/var/cache/cb-e2e/local-runner"
	root := filepath.Join(runnerRoot, "projects/local/cb-hostile@bookworm.x86_64")
	env := []string{"CB_RUNNER_ROOT=" + runnerRoot, "CB_BROKER_CONFIG=/nonexistent"}
	if _, stderr, err := run(t, env, "cb", "prepare", "--local", "--runner-config", cfg, "--root", root,
		"--package", pkg, "--profile", "bookworm.x86_64"); err != nil {
		t.Fatalf("prepare: %v\n%s", err, tail(stderr, 3000))
	}
	start := time.Now()
	_, stderr, err := run(t, env, "cb", "run", "--local", "--runner-config", cfg, "--root", root)
	t.Logf("hostile build ended after %s: %v", time.Since(start).Round(time.Second), err)
	log := readFile(root + ".build.log")
	if !strings.Contains(log, "ATTACK ") {
		t.Fatalf("the hostile build did not run its attacks: %v\n%s\n%s", err, tail(stderr, 2000), tail(log, 4000))
	}

	verdicts := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(log))
	for sc.Scan() {
		line := sc.Text()
		if i := strings.Index(line, "ATTACK "); i >= 0 {
			f := strings.SplitN(line[i:], " ", 4)
			if len(f) >= 3 {
				verdicts[f[1]] = strings.TrimSuffix(f[2], ":")
			}
		}
	}
	if verdicts["fill-disk"] == "" && strings.Contains(log, "writable layer size limit reached") {
		// the sandbox ended the build for the filler before it could say so
		verdicts["fill-disk"] = "BLOCKED"
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
	if data, _ := os.ReadFile(marker); string(data) != "secret\n" {
		t.Errorf("host marker changed: %q", data)
	}
	for _, f := range []string{"pwned-1", "pwned-self"} {
		if _, err := os.Stat(filepath.Join(host, f)); err == nil {
			t.Errorf("the build wrote %s into a host directory", f)
			blocked--
		}
	}
	if n := conns.Load(); n != 0 {
		t.Errorf("the broker and collector stand-ins accepted %d connections from the build", n)
		blocked--
	}
	if out, _ := exec.Command("pgrep", "-f", daemon).Output(); len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("the daemon outlived the build: pids %s", out)
		blocked--
	}
	t.Logf("escape suite through a real build: %d of %d attacks blocked", blocked, len(escapeAttacks))
	if blocked != len(escapeAttacks) {
		t.Errorf("escape suite: only %d of %d attacks blocked\n%s", blocked, len(escapeAttacks), tail(log, 6000))
	}
	if m := mounts(t, root); len(m) > 0 {
		t.Errorf("mounts left: %v", m)
	}
}

// hostIP is a non-loopback address of this host (the collector's side of
// the network), or 127.0.0.2.
func hostIP() string {
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if ip, ok := a.(*net.IPNet); ok && !ip.IP.IsLoopback() && ip.IP.To4() != nil {
			return ip.IP.String()
		}
	}
	return "127.0.0.2"
}
