package cli

import (
	"bytes"
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/cloud-builder/cb/internal/config"
)

// lockedBuffer is an io.Writer safe for the command's logger and the test.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func brokerTestEnv(t *testing.T, stdout, stderr io.Writer) *Env {
	cfg := filepath.Join(t.TempDir(), "cloud_builder_broker.yml")
	if err := os.WriteFile(cfg, []byte("runner:\n  group: suse\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return &Env{Stdout: stdout, Stderr: stderr, Getenv: func(k string) string {
		if k == config.EnvBrokerConfig {
			return cfg
		}
		return ""
	}}
}

func TestBrokerCommandServesUntilCanceled(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	dataDir := filepath.Join(t.TempDir(), "data")

	var stderr lockedBuffer
	env := brokerTestEnv(t, io.Discard, &stderr)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan int, 1)
	go func() {
		done <- Run(ctx, env, []string{"cb", "broker", "--listen", addr, "--data-dir", dataDir, "--partitions", "2", "--runner-group", "fedora,debian"})
	}()

	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	var topics kadm.TopicDetails
	deadline := time.Now().Add(15 * time.Second)
	for {
		tctx, tcancel := context.WithTimeout(ctx, time.Second)
		topics, err = adm.ListTopics(tctx)
		tcancel()
		if err == nil && len(topics) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("broker did not come up on %s: %v\n%s", addr, err, stderr.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, want := range []string{"cb-response", "cb-info-request", "cb-info-response", "cb-build-request", "fedora", "debian", "suse"} {
		if n := len(topics[want].Partitions); n != 2 {
			t.Errorf("topic %s has %d partitions, want 2", want, n)
		}
	}
	// The topics are visible to clients a moment before the command logs
	// where it listens.
	logged := func() bool {
		return strings.Contains(stderr.String(), "embedded broker listening") && strings.Contains(stderr.String(), addr)
	}
	for end := time.Now().Add(10 * time.Second); !logged() && time.Now().Before(end); {
		time.Sleep(50 * time.Millisecond)
	}
	if !logged() {
		t.Errorf("log does not say where the broker listens:\n%s", stderr.String())
	}

	cancel()
	select {
	case code := <-done:
		if code != ExitOK {
			t.Fatalf("exit %d\n%s", code, stderr.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("broker did not stop after cancel")
	}
	if _, err := os.Stat(filepath.Join(dataDir, "meta.json")); err != nil {
		t.Errorf("no state in the data dir: %v", err)
	}
}

func TestBrokerCommandFlags(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantOut  string
	}{
		{"check config", []string{"--data-dir", "x", "--check-config"}, ExitOK, "configuration ok"},
		{"help", []string{"--help"}, ExitOK, "--runner-group"},
		{"bad group", []string{"--runner-group", "a/b"}, ExitUsage, "only letters, digits"},
		{"no partitions", []string{"--partitions", "0"}, ExitUsage, "--partitions 0"},
		{"empty data dir", []string{"--data-dir", ""}, ExitUsage, "--data-dir is empty"},
		{"bad listen", []string{"--listen", "nowhere", "--data-dir", "DATA"}, ExitUsage, "want host:port"},
		{"port out of range", []string{"--listen", "127.0.0.1:70000", "--data-dir", "DATA"}, ExitUsage, "0 to 65535"},
		{"bad log level", []string{"--log-level", "loud"}, ExitUsage, "--log-level"},
		{"extra argument", []string{"extra"}, ExitUsage, "unexpected argument"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out lockedBuffer
			env := brokerTestEnv(t, &out, &out)
			args := append([]string{"cb-broker"}, tt.args...)
			for i, a := range args {
				if a == "DATA" {
					args[i] = t.TempDir()
				}
			}
			if code := Run(t.Context(), env, args); code != tt.wantCode {
				t.Errorf("exit %d, want %d\n%s", code, tt.wantCode, out.String())
			}
			if !strings.Contains(out.String(), tt.wantOut) {
				t.Errorf("output does not contain %q:\n%s", tt.wantOut, out.String())
			}
		})
	}
}
