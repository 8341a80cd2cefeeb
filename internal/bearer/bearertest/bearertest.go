// Package bearertest gives tests a server address that is not loopback,
// to aim token clients at, and counts what reaches it.
package bearertest

import (
	"net"
	"os"
	"sync/atomic"
	"testing"
)

// Listener is a TCP listener on a non-loopback address of this machine
// that counts the connections it accepts.
type Listener struct {
	net.Listener
	accepted atomic.Int64
}

// Accepted is how many connections reached the listener.
func (l *Listener) Accepted() int64 { return l.accepted.Load() }

func (l *Listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.accepted.Add(1)
	}
	return c, err
}

// Listen listens on the first non-loopback IP address of this machine,
// port chosen by the kernel; serve it with http.Serve or httptest. A
// machine without one fails the test under CI=true and skips it
// elsewhere.
func Listen(t testing.TB) *Listener {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok || ipn.IP.IsLoopback() || ipn.IP.IsLinkLocalUnicast() || ipn.IP.IsMulticast() {
			continue
		}
		ln, err := net.Listen("tcp", net.JoinHostPort(ipn.IP.String(), "0"))
		if err != nil {
			continue
		}
		l := &Listener{Listener: ln}
		t.Cleanup(func() { ln.Close() })
		return l
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("no non-loopback address to listen on")
	}
	t.Skip("no non-loopback address to listen on")
	return nil
}

// URL is the plain HTTP URL of the listener.
func (l *Listener) URL() string { return "http://" + l.Addr().String() }
