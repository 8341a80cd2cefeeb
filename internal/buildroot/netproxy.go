package buildroot

import (
	"context"
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
type repoProxy struct {
	allowed   []string
	transport *http.Transport
	srv       *http.Server
	wg        sync.WaitGroup
	log       io.Writer // safe for concurrent use
}

func newRepoProxy(allowed []string, log io.Writer) *repoProxy {
	return &repoProxy{
		allowed: allowed,
		log:     log,
		// Proxy nil: the runner's own proxy settings do not apply to
		// what a tool inside may reach.
		transport: &http.Transport{Proxy: nil, DialContext: (&net.Dialer{Timeout: 30 * time.Second}).DialContext,
			ResponseHeaderTimeout: 5 * time.Minute, IdleConnTimeout: time.Minute},
	}
}

func (p *repoProxy) refuse(w http.ResponseWriter, what string) {
	fmt.Fprintf(p.log, "network: refused %s (not below a repository of the description)\n", what)
	http.Error(w, "cloud-builder: "+what+" is not a repository of this buildroot", http.StatusForbidden)
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

func (p *repoProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodConnect {
		p.connect(w, r)
		return
	}
	if r.URL.Scheme != "http" || !allowedURL(r.URL.String(), p.allowed) {
		p.refuse(w, r.Method+" "+r.URL.String())
		return
	}
	out := r.Clone(r.Context())
	out.RequestURI = ""
	for _, h := range []string{"Proxy-Connection", "Proxy-Authorization", "Connection", "Keep-Alive", "Te", "Trailer", "Upgrade"} {
		out.Header.Del(h)
	}
	resp, err := p.transport.RoundTrip(out)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	for k, vs := range resp.Header {
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, resp.Body)
}

// connect tunnels TLS to an allowed repository host; the path is not
// visible inside the tunnel, so https repositories are allowed per host.
func (p *repoProxy) connect(w http.ResponseWriter, r *http.Request) {
	if !p.allowedHost(r.Host) {
		p.refuse(w, "CONNECT "+r.Host)
		return
	}
	dst, err := net.DialTimeout("tcp", r.Host, 30*time.Second)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		dst.Close()
		http.Error(w, "no hijacking", http.StatusInternalServerError)
		return
	}
	src, _, err := hj.Hijack()
	if err != nil {
		dst.Close()
		return
	}
	_, _ = io.WriteString(src, "HTTP/1.1 200 Connection established\r\n\r\n")
	p.wg.Add(2)
	go func() { defer p.wg.Done(); _, _ = io.Copy(dst, src); dst.Close() }()
	go func() { defer p.wg.Done(); _, _ = io.Copy(src, dst); src.Close() }()
}

// serve starts the proxy on ln (which lives in the tool's namespace).
func (p *repoProxy) serve(ln net.Listener) {
	p.srv = &http.Server{Handler: p, ReadHeaderTimeout: time.Minute}
	p.wg.Add(1)
	go func() { defer p.wg.Done(); _ = p.srv.Serve(ln) }()
}

func (p *repoProxy) close() {
	if p.srv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = p.srv.Shutdown(ctx)
		cancel()
		_ = p.srv.Close()
	}
	p.transport.CloseIdleConnections()
	p.wg.Wait()
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
