package artifact_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"testing"

	"github.com/cloud-builder/cb/internal/artifact"
	"github.com/cloud-builder/cb/internal/tlstest"
)

// TestTLSClientCertificates: with TLS and a client CA, a certificate of
// that CA authenticates without a token, one of another CA does not, and
// the token still works.
func TestTLSClientCertificates(t *testing.T) {
	root, tg, _ := newRunner(t)
	dir := t.TempDir()
	ca, other := tlstest.NewCA(t, dir, "cb-clients"), tlstest.NewCA(t, dir, "someone-else")
	srv := ca.Server(t, dir, "runner")
	good := ca.Client(t, dir, "client").Pair
	bad := other.Client(t, dir, "intruder").Pair
	caFile := ca.File

	ctx, cancel := context.WithCancel(context.Background())
	addrc := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() {
		done <- artifact.ListenAndServe(ctx, artifact.Config{Root: root, Token: token, ClientCA: caFile, TLSCert: srv.CertFile, TLSKey: srv.KeyFile,
			Listen: "127.0.0.1:0"}, func(a net.Addr) { addrc <- a })
	}()
	var addr net.Addr
	select {
	case addr = <-addrc:
	case err := <-done:
		t.Fatal(err)
	}
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("shutdown: %v", err)
		}
	}()
	pool := ca.Pool()
	u := artifact.TargetURL("https://"+addr.String(), tg) + "build.log"
	for _, tc := range []struct {
		name  string
		certs []tls.Certificate
		token string
		want  int
	}{
		{"client certificate", []tls.Certificate{good}, "", http.StatusOK},
		{"token", nil, token, http.StatusOK},
		{"nothing", nil, "", http.StatusUnauthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cl := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: tc.certs}}}
			req, _ := http.NewRequest(http.MethodGet, u, nil)
			if tc.token != "" {
				req.Header.Set("Authorization", "Bearer "+tc.token)
			}
			resp, err := cl.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.want)
			}
		})
	}
	// A certificate of a foreign CA, presented no matter what the server
	// asks for, fails the handshake (or is at least not accepted).
	cl := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &bad, nil }}}}
	if resp, err := cl.Get(u); err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("foreign client certificate accepted: %d", resp.StatusCode)
		}
	}
	// Plain HTTP does not reach the endpoint either.
	if resp, err := http.Get("http://" + addr.String() + "/healthz"); err == nil {
		defer resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Fatal("plain HTTP served")
		}
	}
}

func TestListenAndServeRefusesNoAuth(t *testing.T) {
	err := artifact.ListenAndServe(context.Background(), artifact.Config{Root: t.TempDir(), Listen: "127.0.0.1:0"}, nil)
	if !errors.Is(err, artifact.ErrNoAuth) {
		t.Fatalf("err = %v", err)
	}
}
