package ctl_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/cloud-builder/cb/internal/artifact"
	"github.com/cloud-builder/cb/internal/config"
	"github.com/cloud-builder/cb/internal/ctl"
	"github.com/cloud-builder/cb/internal/info"
	"github.com/cloud-builder/cb/internal/tlstest"
)

// TestClientCertificates: a runner serving HTTPS with a client CA and no
// token; cb-ctl configured with cbctl.yml's artifacts client certificate
// and CA fetches the log.
func TestClientCertificates(t *testing.T) {
	dir := t.TempDir()
	ca := tlstest.NewCA(t, dir, "ca")
	caFile := ca.File
	srv, cli := ca.Server(t, dir, "runner"), ca.Client(t, dir, "client")
	srvCert, srvKey, cliCert, cliKey := srv.CertFile, srv.KeyFile, cli.CertFile, cli.KeyFile

	c := newCluster(t)
	root := t.TempDir()
	r := &runner{name: "runner-tls", root: root}
	r.built(t, xclock, time.Now(), nil)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addrc := make(chan net.Addr, 1)
	errc := make(chan error, 2)
	go func() {
		errc <- artifact.ListenAndServe(ctx, artifact.Config{Root: root, ClientCA: caFile, TLSCert: srvCert, TLSKey: srvKey, Listen: "127.0.0.1:0"},
			func(a net.Addr) { addrc <- a })
	}()
	var addr net.Addr
	select {
	case addr = <-addrc:
	case err := <-errc:
		t.Fatal(err)
	}
	go func() {
		errc <- info.Run(ctx, info.Config{Broker: c.opts, Root: root, ThisHost: "runner-tls", ArtifactURL: "https://" + addr.String(),
			Since: time.Now(), Logger: quietLogger()})
	}()

	for _, tc := range []struct {
		name    string
		ep      config.Endpoint
		wantErr string
	}{
		{"client certificate", config.Endpoint{ClientCA: caFile, TLSCert: cliCert, TLSKey: cliKey}, ""},
		{"no certificate", config.Endpoint{ClientCA: caFile}, "refused the credentials"},
		{"unknown server CA", config.Endpoint{TLSCert: cliCert, TLSKey: cliKey}, "certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cl, stdout, _ := c.client(1, 5*time.Second)
			cl.ArtifactToken = ""
			var err error
			if cl.HTTP, err = ctl.HTTPClient(tc.ep); err != nil {
				t.Fatal(err)
			}
			err = cl.BuildLog(testCtx(t), xclock, false)
			if tc.wantErr == "" {
				if err != nil || stdout.String() != "prepare on runner-tls\nbuild on runner-tls\n" {
					t.Fatalf("err %v, output %q", err, stdout)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
	cancel()
	for range 2 {
		if err := <-errc; err != nil {
			t.Error(err)
		}
	}
}
