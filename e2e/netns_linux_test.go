package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// testNet is a private network of namespaces on this machine: a hub
// namespace with a bridge, and member namespaces joined to the bridge by
// veth pairs. Every address lives in a namespace the test created; the
// test process itself reaches the hub through sockets it opens from a
// thread that entered the hub namespace.
type testNet struct {
	t       *testing.T
	prefix  string
	hub     string
	hubAddr string // the bridge's address in the hub
	members []string
	hubNS   *nsThread
}

const netPrefixLen = "/24"

func ipCmd(t *testing.T, args ...string) {
	t.Helper()
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// newTestNet creates the hub and n member namespaces, addressed
// 10.77.0.1 (hub) and 10.77.0.11, .12, … (members).
func newTestNet(t *testing.T, n int) *testNet {
	t.Helper()
	if _, err := exec.LookPath("ip"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("ip (iproute2) is missing under CI")
		}
		t.Skip("ip (iproute2) is not installed")
	}
	// Short and unique: interface names have 15 bytes.
	prefix := "cbf" + strconv.Itoa(os.Getpid()%100000)
	tn := &testNet{t: t, prefix: prefix, hub: prefix + "-hub", hubAddr: "10.77.0.1"}
	t.Cleanup(tn.remove)
	ipCmd(t, "netns", "add", tn.hub)
	ipCmd(t, "-n", tn.hub, "link", "set", "lo", "up")
	ipCmd(t, "-n", tn.hub, "link", "add", "br0", "type", "bridge")
	ipCmd(t, "-n", tn.hub, "addr", "add", tn.hubAddr+netPrefixLen, "dev", "br0")
	ipCmd(t, "-n", tn.hub, "link", "set", "br0", "up")
	for i := 1; i <= n; i++ {
		ns := fmt.Sprintf("%s-r%d", prefix, i)
		tn.members = append(tn.members, ns)
		ipCmd(t, "netns", "add", ns)
		ipCmd(t, "-n", ns, "link", "set", "lo", "up")
		ipCmd(t, "-n", tn.hub, "link", "add", tn.hubEnd(i), "type", "veth", "peer", "name", "eth0", "netns", ns)
		ipCmd(t, "-n", tn.hub, "link", "set", tn.hubEnd(i), "master", "br0", "up")
		ipCmd(t, "-n", ns, "addr", "add", tn.memberAddr(i)+netPrefixLen, "dev", "eth0")
		ipCmd(t, "-n", ns, "link", "set", "eth0", "up")
	}
	var err error
	if tn.hubNS, err = enterNS(tn.hub); err != nil {
		t.Fatal(err)
	}
	return tn
}

func (tn *testNet) hubEnd(i int) string     { return fmt.Sprintf("v%d", i) }
func (tn *testNet) memberAddr(i int) string { return fmt.Sprintf("10.77.0.%d", 10+i) }
func (tn *testNet) member(i int) string     { return tn.members[i-1] }
func (tn *testNet) hubHostPort(port int) string {
	return net.JoinHostPort(tn.hubAddr, strconv.Itoa(port))
}

// cut takes member i off the network; heal brings it back.
func (tn *testNet) cut(i int)  { ipCmd(tn.t, "-n", tn.hub, "link", "set", tn.hubEnd(i), "down") }
func (tn *testNet) heal(i int) { ipCmd(tn.t, "-n", tn.hub, "link", "set", tn.hubEnd(i), "up") }

// remove kills what still runs in the namespaces and deletes them.
func (tn *testNet) remove() {
	if tn.hubNS != nil {
		tn.hubNS.close()
	}
	for _, ns := range append([]string{tn.hub}, tn.members...) {
		out, _ := exec.Command("ip", "netns", "pids", ns).Output()
		for _, f := range strings.Fields(string(out)) {
			// This process has a thread in the hub: not a leftover.
			if pid, err := strconv.Atoi(f); err == nil && pid > 1 && pid != os.Getpid() {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		_ = exec.Command("ip", "netns", "del", ns).Run()
	}
}

// nsThread is an OS thread that entered a network namespace; sockets
// created on it belong to that namespace for their whole life, whichever
// thread uses them later.
type nsThread struct {
	reqs chan func()
	done chan struct{}
}

func enterNS(name string) (*nsThread, error) {
	f, err := os.Open("/var/run/netns/" + name)
	if err != nil {
		return nil, err
	}
	th := &nsThread{reqs: make(chan func()), done: make(chan struct{})}
	ready := make(chan error, 1)
	go func() {
		defer f.Close()
		// Never unlocked: the thread, in the foreign namespace, ends
		// with this goroutine instead of going back to the pool.
		runtime.LockOSThread()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			ready <- fmt.Errorf("setns %s: %w", name, err)
			return
		}
		ready <- nil
		for {
			select {
			case fn := <-th.reqs:
				fn()
			case <-th.done:
				return
			}
		}
	}()
	return th, <-ready
}

func (th *nsThread) do(fn func()) {
	finished := make(chan struct{})
	th.reqs <- func() { fn(); close(finished) }
	<-finished
}

func (th *nsThread) close() {
	select {
	case <-th.done:
	default:
		close(th.done)
	}
}

// dial opens a TCP connection from inside the namespace.
func (th *nsThread) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	var err error
	th.do(func() {
		d := net.Dialer{Timeout: 10 * time.Second}
		c, err = d.DialContext(ctx, network, addr)
	})
	return c, err
}

// listen opens a TCP listener inside the namespace.
func (th *nsThread) listen(addr string) (net.Listener, error) {
	var ln net.Listener
	var err error
	th.do(func() { ln, err = net.Listen("tcp", addr) })
	return ln, err
}
