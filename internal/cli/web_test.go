package cli

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cloud-builder/cb/internal/broker"
)

func TestWebCommandFlags(t *testing.T) {
	token := filepath.Join(t.TempDir(), "ui.token")
	if err := os.WriteFile(token, []byte("secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(t.TempDir(), "empty.token")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		args     []string
		wantCode int
		wantOut  string
	}{
		{"check config", []string{"--token-file", token, "--check-config"}, ExitOK, "configuration ok"},
		{"help", []string{"--help"}, ExitOK, "-runner-groups"},
		{"empty token", []string{"--token-file", empty, "--check-config"}, ExitFailure, "is empty"},
		{"client CA without TLS", []string{"--client-ca", token, "--check-config"}, ExitFailure, "--client-ca needs --tls-cert"},
		{"half TLS", []string{"--tls-cert", token, "--check-config"}, ExitFailure, "go together"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out lockedBuffer
			code := Run(t.Context(), brokerTestEnv(t, &out, &out), append([]string{"cb", "web"}, tc.args...))
			if code != tc.wantCode || !strings.Contains(out.String(), tc.wantOut) {
				t.Errorf("exit %d, want %d; output lacks %q:\n%s", code, tc.wantCode, tc.wantOut, out.String())
			}
		})
	}
}

// cb web serves the UI from the broker's topics until it is cancelled.
func TestWebCommandServes(t *testing.T) {
	emb, err := broker.StartEmbedded(broker.EmbeddedOptions{Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer emb.Close()
	cfg := filepath.Join(t.TempDir(), "broker.yml")
	if err := os.WriteFile(cfg, []byte("broker:\n  host: "+emb.Addrs()[0]+"\nrunner:\n  group: debian\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	var stderr lockedBuffer
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan int, 1)
	go func() {
		done <- Run(ctx, &Env{Stdout: io.Discard, Stderr: &stderr, Getenv: func(string) string { return "" }},
			[]string{"cb", "web", "--broker-config", cfg, "--listen", addr})
	}()
	var resp *http.Response
	for end := time.Now().Add(15 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if resp, err = http.Get("http://" + addr + "/api/v1/targets"); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("cb web did not serve: %v\n%s", err, stderr.String())
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/api/v1/targets: %s", resp.Status)
	}
	cancel()
	select {
	case code := <-done:
		if code != ExitOK {
			t.Fatalf("exit %d\n%s", code, stderr.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("cb web did not stop")
	}
}
