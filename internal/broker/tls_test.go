package broker

import (
	"crypto/tls"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cloud-builder/cb/internal/tlstest"
	"github.com/twmb/franz-go/pkg/kfake"
)

type pki struct {
	caFile, certFile, keyFile string // client side
	server                    *tls.Config
}

// newPKI writes a CA and a client certificate to dir and returns a server
// configuration for 127.0.0.1 that requires a client certificate of that CA.
func newPKI(t *testing.T) pki {
	t.Helper()
	dir := t.TempDir()
	ca := tlstest.NewCA(t, dir, "ca")
	srv, cli := ca.Server(t, dir, "server"), ca.Client(t, dir, "client")
	return pki{
		caFile:   ca.File,
		certFile: cli.CertFile,
		keyFile:  cli.KeyFile,
		server: &tls.Config{
			Certificates: []tls.Certificate{srv.Pair},
			ClientAuth:   tls.RequireAndVerifyClientCert,
			ClientCAs:    ca.Pool(),
			MinVersion:   tls.VersionTLS12,
		},
	}
}

func TestTLSConfig(t *testing.T) {
	p := newPKI(t)
	notPEM := filepath.Join(t.TempDir(), "x.pem")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name              string
		ca, cert, key     string
		wantErr           string
		wantRoots, wantCl bool
	}{
		{name: "system roots", wantRoots: false},
		{name: "ca only", ca: p.caFile, wantRoots: true},
		{name: "mutual", ca: p.caFile, cert: p.certFile, key: p.keyFile, wantRoots: true, wantCl: true},
		{name: "missing ca", ca: "/nonexistent/ca.pem", wantErr: "read broker CA file"},
		{name: "ca not pem", ca: notPEM, wantErr: "no PEM certificate"},
		{name: "cert without key", cert: p.certFile, wantErr: "must be set together"},
		{name: "key without cert", key: p.keyFile, wantErr: "must be set together"},
		{name: "key mismatch", cert: p.certFile, key: p.caFile, wantErr: "load broker client certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := TLSConfig(tt.ca, tt.cert, tt.key)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if (cfg.RootCAs != nil) != tt.wantRoots || (len(cfg.Certificates) > 0) != tt.wantCl {
				t.Errorf("roots %v, client certs %d", cfg.RootCAs != nil, len(cfg.Certificates))
			}
		})
	}
}

// TestSecuredCluster runs the client against a plain kfake cluster (not the
// embedded broker) that requires mutual TLS or SASL, as a managed Kafka does.
func TestSecuredCluster(t *testing.T) {
	p := newPKI(t)
	clientTLS, err := TLSConfig(p.caFile, p.certFile, p.keyFile)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		server  []kfake.Opt
		tls     *tls.Config
		sasl    *SASL
		wantErr string
	}{
		{name: "mutual tls", server: []kfake.Opt{kfake.TLS(p.server)}, tls: clientTLS},
		{name: "tls without client cert", server: []kfake.Opt{kfake.TLS(p.server)}, tls: &tls.Config{RootCAs: clientTLS.RootCAs}, wantErr: "broker unreachable"},
		{name: "plaintext to tls", server: []kfake.Opt{kfake.TLS(p.server)}, wantErr: "broker unreachable"},
		{name: "scram-sha-512", server: []kfake.Opt{kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-512", "cb", "secret")}, sasl: &SASL{"SCRAM-SHA-512", "cb", "secret"}},
		{name: "scram-sha-256", server: []kfake.Opt{kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-256", "cb", "secret")}, sasl: &SASL{"SCRAM-SHA-256", "cb", "secret"}},
		{name: "plain", server: []kfake.Opt{kfake.EnableSASL(), kfake.Superuser("PLAIN", "cb", "secret")}, sasl: &SASL{"plain", "cb", "secret"}},
		{name: "wrong password", server: []kfake.Opt{kfake.EnableSASL(), kfake.Superuser("PLAIN", "cb", "secret")}, sasl: &SASL{"PLAIN", "cb", "guess"}, wantErr: "broker unreachable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1), kfake.SeedTopics(1, "secure")}, tt.server...)...)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(c.Close)
			opts := Options{Brokers: c.ListenAddrs(), TLS: tt.tls, SASL: tt.sasl, Logger: testLogger()}
			cl, err := New(opts)
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			ctx := testContext(t, 10*time.Second)
			err = cl.Ping(ctx)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ping = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ping: %v", err)
			}
			if err := cl.Publish(ctx, "secure", []byte("hello")); err != nil {
				t.Fatalf("publish: %v", err)
			}
			con, err := NewConsumer(opts, ConsumerConfig{Group: "g", Topics: []string{"secure"}})
			if err != nil {
				t.Fatal(err)
			}
			defer con.Close()
			recs, err := con.Poll(ctx)
			if err != nil || len(recs) != 1 || string(recs[0].Value) != "hello" {
				t.Fatalf("poll = %v, %v", recs, err)
			}
			if err := con.Ack(ctx, recs...); err != nil {
				t.Fatalf("ack: %v", err)
			}
		})
	}
}
