package buildroot

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// repoProxy is the only way out of a buildroot tool's network namespace:
// an HTTP proxy, listening on the namespace's loopback, that forwards
// requests for URLs at or below the profile's repositories (and CONNECT
// to their hosts) and refuses everything else. The tool finds it through
// http_proxy, which apt, debootstrap's wget, zypper and kiwi honour.
//
// apt sends its requests pipelined on one connection. The proxy fetches
// up to pipelineDepth of them at once and answers in order: each fetch
// pays the repository's round trip, so answering one request after the
// other would cost one round trip per package (about 50 ms each, 10 s
// and more for a base of a few hundred packages). A fetch whose turn has
// not come waits with its body unread in its own connection, so memory
// does not grow with what is in flight.
type repoProxy struct {
	allowed   []string
	transport *http.Transport
	log       io.Writer // safe for concurrent use

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	ln     net.Listener
	conns  map[net.Conn]struct{}
}

// pipelineDepth is how many requests of one connection are fetched at
// once; apt pipelines 10 by default.
const pipelineDepth = 10

func newRepoProxy(allowed []string, log io.Writer) *repoProxy {
	ctx, cancel := context.WithCancel(context.Background())
	return &repoProxy{
		allowed: allowed,
		log:     log,
		ctx:     ctx,
		cancel:  cancel,
		conns:   map[net.Conn]struct{}{},
		// Proxy nil: the runner's own proxy settings do not apply to
		// what a tool inside may reach. No compression of its own: the
		// tool gets the repository's bytes as they are.
		transport: &http.Transport{Proxy: nil, DialContext: (&net.Dialer{Timeout: 30 * time.Second}).DialContext,
			ResponseHeaderTimeout: 5 * time.Minute, IdleConnTimeout: time.Minute,
			DisableCompression: true, MaxIdleConnsPerHost: pipelineDepth},
	}
}

func (p *repoProxy) allowedHost(hostport string) bool {
	for _, a := range p.allowed {
		u, err := url.Parse(a)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") {
			continue
		}
		port := u.Port()
		if port == "" {
			port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
		}
		if strings.EqualFold(net.JoinHostPort(u.Hostname(), port), hostport) {
			return true
		}
	}
	return false
}

// serve starts the proxy on ln (which lives in the tool's namespace).
func (p *repoProxy) serve(ln net.Listener) {
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if !p.track(c) {
				c.Close()
				return
			}
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				defer p.untrack(c)
				p.serveConn(c)
			}()
		}
	}()
}

func (p *repoProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ctx.Err() != nil {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *repoProxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	c.Close()
}

// close stops the proxy: the tool has ended, so whatever it left open
// is closed and every fetch in flight cancelled.
func (p *repoProxy) close() {
	p.mu.Lock()
	p.cancel()
	if p.ln != nil {
		p.ln.Close()
	}
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
	p.transport.CloseIdleConnections()
}

// exchange is one request of a connection and, once ready is closed, the
// response to write for it.
type exchange struct {
	req   *http.Request
	ready chan struct{}
	resp  *http.Response
	// last: the connection ends after this response.
	last bool
}

// serveConn reads the requests of one client connection, starts fetching
// each (at most pipelineDepth at once) and writes the responses in the
// order of the requests.
func (p *repoProxy) serveConn(c net.Conn) {
	ctx, cancel := context.WithCancel(p.ctx)
	defer cancel()
	br := bufio.NewReader(c)
	queue := make(chan *exchange, pipelineDepth-1)
	written := make(chan error, 1)
	go func() { written <- p.writeResponses(c, queue, cancel) }()
	var connect *http.Request
	for {
		// No read deadline: the proxy lives as long as its tool, and
		// close ends every connection.
		req, err := http.ReadRequest(br)
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !errors.Is(err, io.ErrUnexpectedEOF) {
				queue <- readyExchange(nil, textResponse(http.StatusBadRequest, "cloud-builder: bad request: "+err.Error()), true)
			}
			break
		}
		if req.Method == http.MethodConnect {
			// Earlier responses go first; then the connection is a tunnel.
			connect = req
			break
		}
		ex := p.start(ctx, req)
		last := ex.last
		queue <- ex
		if last {
			break
		}
	}
	close(queue)
	if err := <-written; err != nil || connect == nil {
		return
	}
	p.connect(c, br, connect)
}

// start begins fetching req, or answers it at once when it may not be
// forwarded.
func (p *repoProxy) start(ctx context.Context, req *http.Request) *exchange {
	last := req.Close
	if req.Method != http.MethodGet && req.Method != http.MethodHead {
		// A repository is only read. A body of the request would also have
		// to be read before the next request: end the connection instead.
		p.logRefusal(req.Method + " " + req.URL.String())
		return readyExchange(req, textResponse(http.StatusMethodNotAllowed, "cloud-builder: only GET and HEAD reach a repository"), true)
	}
	if req.ContentLength != 0 || len(req.TransferEncoding) > 0 {
		// Its body would be read while the next request is: refused, and
		// the connection ends.
		return readyExchange(req, textResponse(http.StatusBadRequest, "cloud-builder: a request body is not forwarded"), true)
	}
	if req.URL.Scheme != "http" || !allowedURL(req.URL.String(), p.allowed) {
		return readyExchange(req, p.refusal(req.Method+" "+req.URL.String()), last)
	}
	ex := &exchange{req: req, ready: make(chan struct{}), last: last}
	out := req.Clone(ctx)
	out.RequestURI = ""
	out.Body = nil
	for _, h := range hopHeaders {
		out.Header.Del(h)
	}
	go func() {
		defer close(ex.ready)
		resp, err := p.transport.RoundTrip(out)
		if err != nil {
			ex.resp = textResponse(http.StatusBadGateway, err.Error())
			return
		}
		ex.resp = resp
	}()
	return ex
}

var hopHeaders = []string{"Proxy-Connection", "Proxy-Authorization", "Connection", "Keep-Alive", "Te", "Trailer", "Upgrade"}

// writeResponses writes the response of every exchange of queue in
// order. After an error it cancels the fetches in flight and still waits
// for the rest, closing their bodies.
func (p *repoProxy) writeResponses(c net.Conn, queue <-chan *exchange, cancel context.CancelFunc) error {
	bw := bufio.NewWriter(c)
	var failed error
	for ex := range queue {
		select {
		case <-ex.ready:
		case <-p.ctx.Done():
			failed = p.ctx.Err()
			<-ex.ready
		}
		resp := ex.resp
		if failed == nil {
			var last bool
			last, failed = writeResponse(bw, ex.req, resp, ex.last)
			if failed == nil {
				failed = bw.Flush()
			}
			if failed == nil && last {
				failed = io.EOF
			}
		}
		resp.Body.Close()
		if failed != nil {
			// The client cannot read what follows: stop its reads and
			// the fetches for it.
			c.Close()
			cancel()
		}
	}
	if failed == io.EOF {
		c.Close()
	}
	return failed
}

// writeResponse writes resp to the client as HTTP/1.1 and reports
// whether the connection ends after it: when last says so, or when an
// HTTP/1.0 client must read a body of unknown length to the end.
func writeResponse(w io.Writer, req *http.Request, resp *http.Response, last bool) (bool, error) {
	out := &http.Response{
		StatusCode:    resp.StatusCode,
		Status:        resp.Status,
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        http.Header{},
		Body:          resp.Body,
		ContentLength: resp.ContentLength,
		Request:       req,
		Close:         last,
	}
	if resp.Header != nil {
		out.Header = resp.Header.Clone()
	}
	for _, h := range hopHeaders {
		out.Header.Del(h)
	}
	if out.ContentLength < 0 && bodyAllowed(resp.StatusCode) && (req == nil || req.Method != http.MethodHead) {
		if req != nil && req.ProtoAtLeast(1, 1) {
			// Length unknown (chunked or until close upstream): chunked
			// to the client, so the connection carries the next response.
			out.TransferEncoding = []string{"chunked"}
		} else {
			// An HTTP/1.0 client reads it until the connection ends.
			out.Close = true
		}
	}
	return out.Close, out.Write(w)
}

func readyExchange(req *http.Request, resp *http.Response, last bool) *exchange {
	ex := &exchange{req: req, ready: make(chan struct{}), resp: resp, last: last}
	close(ex.ready)
	return ex
}

func textResponse(code int, text string) *http.Response {
	body := text + "\n"
	return &http.Response{
		StatusCode:    code,
		Status:        fmt.Sprintf("%d %s", code, http.StatusText(code)),
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        http.Header{"Content-Type": {"text/plain; charset=utf-8"}},
		Body:          io.NopCloser(strings.NewReader(body)),
		ContentLength: int64(len(body)),
	}
}

func (p *repoProxy) logRefusal(what string) {
	fmt.Fprintf(p.log, "network: refused %s (not below a repository of the description)\n", what)
}

func (p *repoProxy) refusal(what string) *http.Response {
	p.logRefusal(what)
	return textResponse(http.StatusForbidden, "cloud-builder: "+what+" is not a repository of this buildroot")
}

// connect tunnels TLS to an allowed repository host; the path is not
// visible inside the tunnel, so https repositories are allowed per host.
// br holds what the client sent after its CONNECT request.
func (p *repoProxy) connect(c net.Conn, br *bufio.Reader, req *http.Request) {
	refuse := func(resp *http.Response) {
		_, _ = writeResponse(c, req, resp, true)
	}
	if !p.allowedHost(req.Host) {
		refuse(p.refusal("CONNECT " + req.Host))
		return
	}
	d := net.Dialer{Timeout: 30 * time.Second}
	dst, err := d.DialContext(p.ctx, "tcp", req.Host)
	if err != nil {
		refuse(textResponse(http.StatusBadGateway, err.Error()))
		return
	}
	defer dst.Close()
	if _, err := io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		return
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = io.Copy(dst, br)
		if tc, ok := dst.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
	}()
	_, _ = io.Copy(c, dst)
	c.Close()
	<-done
}

// bodyAllowed reports whether a response with the status has a body
// (RFC 9110: not 1xx, 204 or 304).
func bodyAllowed(code int) bool {
	return code >= 200 && code != http.StatusNoContent && code != http.StatusNotModified
}

// RepositoryURLs are the URLs a tool building a root for p may reach: its
// repositories and the signing keys it fetches over HTTP(S).
func RepositoryURLs(p *Profile) []string {
	out := []string{}
	for _, r := range p.Repositories {
		out = append(out, r.Path)
		for _, k := range r.SigningKeys {
			if strings.HasPrefix(k, "http://") || strings.HasPrefix(k, "https://") {
				out = append(out, k)
			}
		}
	}
	return out
}
