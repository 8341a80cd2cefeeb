package collect_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/cloud-builder/cb/internal/collect"
	"github.com/cloud-builder/cb/internal/repo/repotest"
	"github.com/cloud-builder/cb/internal/tlstest"
)

// Over TLS with a client CA, a runner's certificate replaces the token;
// readers need no certificate. Also runs the server through Serve and a
// clean shutdown.
func TestClientCertificateUpload(t *testing.T) {
	repotest.RequireTools(t, "gpg", "dpkg-deb")
	dir := t.TempDir()
	ca := tlstest.NewCA(t, dir, "ca")
	srv, cli := ca.Server(t, dir, "srv"), ca.Client(t, dir, "runner")
	s, err := collect.New(collect.Config{
		RepoRoot: filepath.Join(dir, "repo"), StateDir: filepath.Join(dir, "state"),
		TLSCert: srv.CertFile, TLSKey: srv.KeyFile, ClientCA: ca.File,
		UpdateInterval: time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	if s.Token() != "" {
		t.Fatal("a token was generated although client certificates are configured")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- s.Serve(ctx, ln) }()
	defer func() {
		cancel()
		select {
		case err := <-served:
			if err != nil {
				t.Errorf("serve: %v", err)
			}
		case <-time.After(time.Minute):
			t.Error("server did not shut down")
		}
	}()
	roots, pair := ca.Pool(), cli.Pair
	url := "https://" + ln.Addr().String()
	withCert := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{pair}}}}
	anonymous := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}

	u := debUpload(t, "hello", "1.0", "amd64", "x86_64", "bookworm")
	c := &collect.Client{URL: url, HTTPClient: anonymous, Attempts: 1}
	var refused *collect.Error
	if err := c.Upload(ctxT(t), u); !errors.As(err, &refused) || refused.Status != 401 {
		t.Fatalf("upload without certificate or token: %v, want 401", err)
	}
	c.HTTPClient = withCert
	if err := c.Upload(ctxT(t), u); err != nil {
		t.Fatalf("upload with client certificate: %v", err)
	}
	resp, err := anonymous.Get(url + "/projects/Debian/bookworm/dists/bookworm/InRelease")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("anonymous read: %d", resp.StatusCode)
	}
}
