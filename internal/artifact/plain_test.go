package artifact_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/cloud-builder/cb/internal/artifact"
	"github.com/cloud-builder/cb/internal/bearer/bearertest"
)

// serve runs ListenAndServe on listen until it listens (returning the
// address and a stop function) or fails (returning the error).
func serve(t *testing.T, cfg artifact.Config) (net.Addr, error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	addrc := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() { done <- artifact.ListenAndServe(ctx, cfg, func(a net.Addr) { addrc <- a }) }()
	select {
	case a := <-addrc:
		t.Cleanup(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("shutdown: %v", err)
			}
		})
		return a, nil
	case err := <-done:
		cancel()
		return nil, err
	case <-time.After(time.Minute):
		cancel()
		t.Fatal("ListenAndServe neither listened nor failed")
		return nil, nil
	}
}

// The endpoint serves plain HTTP on loopback, by default; elsewhere only
// when allow_plain_http says so.
func TestPlainHTTPOnlyOnLoopback(t *testing.T) {
	if artifact.DefaultListen != "127.0.0.1:8081" {
		t.Errorf("DefaultListen = %q, want loopback", artifact.DefaultListen)
	}
	// A free non-loopback address of this machine.
	free := bearertest.Listen(t)
	public := free.Addr().String()
	free.Close()
	host, _, _ := net.SplitHostPort(public)

	cfg := artifact.Config{Root: t.TempDir(), Token: "tok"}
	for _, listen := range []string{net.JoinHostPort(host, "0"), ":0", "0.0.0.0:0"} {
		cfg.Listen = listen
		_, err := serve(t, cfg)
		if !errors.Is(err, artifact.ErrPlainHTTP) {
			t.Fatalf("listen %s: %v, want ErrPlainHTTP", listen, err)
		}
		if !strings.Contains(err.Error(), "allow_plain_http") {
			t.Errorf("refusal %q does not name the setting", err)
		}
	}
	for _, listen := range []string{"127.0.0.1:0", "[::1]:0", "localhost:0"} {
		cfg.Listen = listen
		a, err := serve(t, cfg)
		if err != nil {
			if strings.Contains(listen, "::1") {
				continue // no IPv6 loopback here
			}
			t.Fatalf("listen %s: %v", listen, err)
		}
		if !a.(*net.TCPAddr).IP.IsLoopback() {
			t.Errorf("listen %s: bound %s", listen, a)
		}
	}
	cfg.Listen, cfg.AllowPlainHTTP = net.JoinHostPort(host, "0"), true
	if _, err := serve(t, cfg); err != nil {
		t.Fatalf("listen %s with allow_plain_http: %v", cfg.Listen, err)
	}
}
