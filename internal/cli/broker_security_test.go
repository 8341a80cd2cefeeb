package cli

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cloud-builder/cb/internal/broker"
	"github.com/cloud-builder/cb/internal/config"
	"github.com/cloud-builder/cb/internal/tlstest"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestBrokerCommandRequiresCredentials runs `cb broker` the way a single
// machine that wants credentials does: broker.sasl in the runner config
// (the account every service presents) and a TLS certificate. Clients
// without the account, or with a wrong password, are refused; the right
// account is served, and so is the broker's own health check.
func TestBrokerCommandRequiresCredentials(t *testing.T) {
	dir := t.TempDir()
	ca := tlstest.NewCA(t, dir, "ca")
	srv := ca.Server(t, dir, "broker")
	brokerYML, runnerYML := filepath.Join(dir, "broker.yml"), filepath.Join(dir, "runner.yml")
	addr, metricsAddr := freeAddr(t), freeAddr(t)
	write := func(p, s string) {
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(brokerYML, fmt.Sprintf("broker:\n  host: %s\n  tls:\n    ssl_cafile: %s\n", addr, ca.File))
	write(runnerYML, "broker:\n  sasl:\n    mechanism: SCRAM-SHA-256\n    username: cb\n    password: s3cret\n")

	var stderr lockedBuffer
	env := &Env{Stdout: io.Discard, Stderr: &stderr, Getenv: func(k string) string {
		return map[string]string{config.EnvBrokerConfig: brokerYML, config.EnvRunnerConfig: runnerYML}[k]
	}}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan int, 1)
	go func() {
		done <- Run(ctx, env, []string{"cb", "broker", "--listen", addr, "--data-dir", filepath.Join(dir, "data"),
			"--tls-cert", srv.CertFile, "--tls-key", srv.KeyFile, "--metrics-listen", metricsAddr})
	}()

	tc, err := broker.TLSConfig(ca.File, "", "")
	if err != nil {
		t.Fatal(err)
	}
	ping := func(o broker.Options, d time.Duration) error {
		o.Brokers, o.Logger = []string{addr}, slog.New(slog.DiscardHandler)
		cl, err := broker.New(o)
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		ctx, cancel := context.WithTimeout(ctx, d)
		defer cancel()
		return cl.Publish(ctx, "cb-response", []byte("hello"))
	}
	right := &broker.SASL{Mechanism: "SCRAM-SHA-256", User: "cb", Password: "s3cret"}
	var up error
	for end := time.Now().Add(20 * time.Second); time.Now().Before(end); {
		if up = ping(broker.Options{TLS: tc, SASL: right}, 2*time.Second); up == nil {
			break
		}
	}
	if up != nil {
		t.Fatalf("the right account is not served: %v\n%s", up, stderr.String())
	}
	for name, o := range map[string]broker.Options{
		"no credentials": {TLS: tc},
		"wrong password": {TLS: tc, SASL: &broker.SASL{Mechanism: "SCRAM-SHA-256", User: "cb", Password: "guess"}},
		"plain text":     {SASL: right},
	} {
		if err := ping(o, 2*time.Second); err == nil {
			t.Errorf("%s: served", name)
		}
	}
	// The health check's own client authenticates over TLS.
	resp, err := http.Get("http://" + metricsAddr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("healthz: %s %s", resp.Status, body)
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
}

func TestBrokerCommandSecurityChecks(t *testing.T) {
	dir := t.TempDir()
	runnerYML := filepath.Join(dir, "runner.yml")
	if err := os.WriteFile(runnerYML, []byte("broker:\n  sasl:\n    mechanism: PLAIN\n    username: cb\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--tls-cert", "/x.pem"}, "--tls-cert and --tls-key go together"},
		{[]string{"--max-request-bytes", "10"}, "--max-request-bytes 10"},
		{[]string{"--tls-cert", "/nonexistent.pem", "--tls-key", "/nonexistent.key"}, "broker certificate"},
		{[]string{"--runner-config", runnerYML}, "username and password are required"},
	} {
		var stderr lockedBuffer
		env := brokerTestEnv(t, io.Discard, &stderr)
		args := append([]string{"cb", "broker", "--check-config", "--data-dir", dir, "--runner-config", "/nonexistent.yml"}, tt.args...)
		if code := Run(t.Context(), env, args); code == ExitOK || !strings.Contains(stderr.String(), tt.want) {
			t.Errorf("%v: exit %d, want an error with %q:\n%s", tt.args, code, tt.want, stderr.String())
		}
	}
}

func TestIsLoopback(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:9092": true, "[::1]:9092": true, "localhost:9092": true,
		"0.0.0.0:9092": false, ":9092": false, "10.0.0.1:9092": false, "broker.example.net:9092": false,
	} {
		if got := isLoopback(addr); got != want {
			t.Errorf("isLoopback(%q) = %v", addr, got)
		}
	}
}

// TestBrokerListensOnLoopbackByDefault: cb broker and cb up bind the
// broker to 127.0.0.1 unless told otherwise.
func TestBrokerListensOnLoopbackByDefault(t *testing.T) {
	for _, cmd := range []struct{ name, flag string }{{"broker", "listen"}, {"up", "broker-listen"}} {
		var out lockedBuffer
		env := brokerTestEnv(t, &out, &out)
		if code := Run(t.Context(), env, []string{"cb", cmd.name, "--help"}); code != ExitOK {
			t.Fatalf("cb %s --help: exit %d\n%s", cmd.name, code, out.String())
		}
		var def string
		lines := strings.Split(out.String(), "\n")
		for i, l := range lines {
			if strings.HasPrefix(strings.TrimSpace(l), "-"+cmd.flag+" ") && i+1 < len(lines) {
				def = l + lines[i+1]
			}
		}
		if !strings.Contains(def, `(default "127.0.0.1:9092")`) || !isLoopback(config.DefaultBrokerHost) {
			t.Errorf("cb %s --%s: %q, want the loopback default", cmd.name, cmd.flag, def)
		}
	}
}
