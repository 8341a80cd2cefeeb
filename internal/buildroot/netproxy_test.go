package buildroot

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// startProxy serves a repository proxy for allowed on the loopback and
// returns its address and the log of its refusals.
func startProxy(t *testing.T, allowed ...string) (string, *syncWriter) {
	t.Helper()
	log := &syncWriter{w: &strings.Builder{}}
	p := newRepoProxy(allowed, log)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.serve(ln)
	t.Cleanup(p.close)
	return ln.Addr().String(), log
}

func dialProxy(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	return c, bufio.NewReader(c)
}

func readBody(t *testing.T, br *bufio.Reader, method string) (*http.Response, string) {
	t.Helper()
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return resp, string(b)
}

// TestRepoProxyPipelined: requests pipelined on one connection are
// fetched at once and answered in their order, a refused one among them
// in its place; the connection carries them all, also a chunked response
// and a HEAD.
func TestRepoProxyPipelined(t *testing.T) {
	const together = 3
	var mu sync.Mutex
	arrived := 0
	all := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/debian/pool/") {
			// The first requests wait for each other: a proxy that
			// fetches one after the other answers 500.
			mu.Lock()
			arrived++
			if arrived == together {
				close(all)
			}
			mu.Unlock()
			select {
			case <-all:
			case <-time.After(10 * time.Second):
				http.Error(w, "requests came one after the other", http.StatusInternalServerError)
				return
			}
		}
		if r.URL.Path == "/debian/chunked" {
			fmt.Fprint(w, "first,")
			w.(http.Flusher).Flush()
			fmt.Fprint(w, "second")
			return
		}
		w.Header().Set("X-Path", r.URL.Path)
		fmt.Fprintf(w, "served %s", r.URL.Path)
	}))
	defer srv.Close()
	addr, log := startProxy(t, srv.URL+"/debian")
	c, br := dialProxy(t, addr)

	type want struct{ method, path, body string }
	var reqs strings.Builder
	var wants []want
	add := func(method, path string, code int, body string) {
		fmt.Fprintf(&reqs, "%s %s%s HTTP/1.1\r\nHost: %s\r\n\r\n", method, srv.URL, path, strings.TrimPrefix(srv.URL, "http://"))
		wants = append(wants, want{method, path, fmt.Sprintf("%d %s", code, body)})
	}
	for i := range together + 2 {
		p := fmt.Sprintf("/debian/pool/p%d.deb", i)
		add("GET", p, 200, "served "+p)
		if i == 1 {
			add("GET", "/secrets", 403, "cloud-builder: GET "+srv.URL+"/secrets is not a repository of this buildroot\n")
		}
	}
	add("GET", "/debian/chunked", 200, "first,second")
	add("HEAD", "/debian/dists/bookworm/Release", 200, "")
	add("GET", "/debian/dists/bookworm/InRelease", 200, "served /debian/dists/bookworm/InRelease")
	if _, err := io.WriteString(c, reqs.String()); err != nil {
		t.Fatal(err)
	}
	for _, w := range wants {
		resp, body := readBody(t, br, w.method)
		if got := fmt.Sprintf("%d %s", resp.StatusCode, body); got != w.body {
			t.Errorf("%s %s: got %q, want %q", w.method, w.path, got, w.body)
		}
		if w.method == "HEAD" && resp.Header.Get("X-Path") != w.path {
			t.Errorf("HEAD %s: headers %v", w.path, resp.Header)
		}
	}
	log.mu.Lock()
	logged := log.w.(*strings.Builder).String()
	log.mu.Unlock()
	if !strings.Contains(logged, "network: refused GET "+srv.URL+"/secrets") {
		t.Errorf("refusal not logged: %q", logged)
	}
}

// TestRepoProxyHTTP10: an HTTP/1.0 client gets a response of unknown
// length to the end of the connection, not chunked.
func TestRepoProxyHTTP10(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "first,")
		w.(http.Flusher).Flush()
		fmt.Fprint(w, "second")
	}))
	defer srv.Close()
	addr, _ := startProxy(t, srv.URL+"/debian")
	c, br := dialProxy(t, addr)
	if _, err := io.WriteString(c, "GET "+srv.URL+"/debian/x HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, body := readBody(t, br, "GET")
	if resp.StatusCode != 200 || body != "first,second" || len(resp.TransferEncoding) != 0 || !resp.Close {
		t.Errorf("got %d %q, transfer encoding %q, close %v", resp.StatusCode, body, resp.TransferEncoding, resp.Close)
	}
}

// TestRepoProxyRefuses: what may not reach a repository gets an answer
// and, where the connection cannot go on, its end.
func TestRepoProxyRefuses(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "served")
	}))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	addr, _ := startProxy(t, srv.URL+"/debian")
	for _, tc := range []struct {
		name, req string
		code      int
	}{
		{"post", "POST " + srv.URL + "/debian/x HTTP/1.1\r\nHost: " + host + "\r\nContent-Length: 2\r\n\r\nhi", http.StatusMethodNotAllowed},
		{"body", "GET " + srv.URL + "/debian/x HTTP/1.1\r\nHost: " + host + "\r\nContent-Length: 2\r\n\r\nhi", http.StatusBadRequest},
		{"connect elsewhere", "CONNECT 127.0.0.1:1 HTTP/1.1\r\nHost: 127.0.0.1:1\r\n\r\n", http.StatusForbidden},
		{"garbage", "NOT HTTP\r\n\r\n", http.StatusBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, br := dialProxy(t, addr)
			// a request after it is never read
			if _, err := io.WriteString(c, tc.req+"GET "+srv.URL+"/debian/y HTTP/1.1\r\nHost: "+host+"\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			method := strings.Fields(tc.req)[0]
			resp, _ := readBody(t, br, method)
			if resp.StatusCode != tc.code || !resp.Close {
				t.Errorf("got %d (close %v), want %d and the connection's end", resp.StatusCode, resp.Close, tc.code)
			}
			if n, err := br.Read(make([]byte, 1)); err != io.EOF {
				t.Errorf("connection goes on after a refusal: %d bytes, %v", n, err)
			}
		})
	}
}

// TestRepoProxyConnect: https repositories are reached through a tunnel
// to their host, after the responses pipelined before the CONNECT.
func TestRepoProxyConnect(t *testing.T) {
	tlsSrv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "tls %s", r.URL.Path)
	}))
	defer tlsSrv.Close()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "plain")
	}))
	defer srv.Close()
	addr, _ := startProxy(t, tlsSrv.URL+"/debian", srv.URL+"/debian")
	c, br := dialProxy(t, addr)
	host := strings.TrimPrefix(tlsSrv.URL, "https://")
	req := "GET " + srv.URL + "/debian/a HTTP/1.1\r\nHost: x\r\n\r\nCONNECT " + host + " HTTP/1.1\r\nHost: " + host + "\r\n\r\n"
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	if resp, body := readBody(t, br, "GET"); resp.StatusCode != 200 || body != "plain" {
		t.Fatalf("before the tunnel: %d %q", resp.StatusCode, body)
	}
	resp, err := http.ReadResponse(br, &http.Request{Method: "CONNECT"})
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("CONNECT: %v %v", resp, err)
	}
	if br.Buffered() != 0 {
		t.Fatalf("%d bytes after the tunnel's answer", br.Buffered())
	}
	tc := tls.Client(c, &tls.Config{RootCAs: tlsSrv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs, ServerName: "example.com"})
	if _, err := io.WriteString(tc, "GET /debian/b HTTP/1.1\r\nHost: "+host+"\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	if resp, body := readBody(t, bufio.NewReader(tc), "GET"); resp.StatusCode != 200 || body != "tls /debian/b" {
		t.Errorf("through the tunnel: %d %q", resp.StatusCode, body)
	}
}
