package ctl_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cloud-builder/cb/internal/artifact"
	"github.com/cloud-builder/cb/internal/config"
	"github.com/cloud-builder/cb/internal/ctl"
	"github.com/cloud-builder/cb/internal/info"
)

// writeCert writes a PEM certificate and key signed by parent (self-signed
// CA when parent is nil) and returns the files, certificate and key.
func writeCert(t *testing.T, dir, name string, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, usage []x509.ExtKeyUsage) (string, string, *x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: usage,
		KeyUsage: x509.KeyUsageDigitalSignature, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
	if parent == nil {
		tmpl.IsCA, tmpl.BasicConstraintsValid, tmpl.KeyUsage = true, true, x509.KeyUsageCertSign
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	writeFile(t, certFile, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
	writeFile(t, keyFile, string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})))
	cert, _ := x509.ParseCertificate(der)
	return certFile, keyFile, cert, key
}

// TestClientCertificates: a runner serving HTTPS with a client CA and no
// token; cb-ctl configured with cbctl.yml's artifacts client certificate
// and CA fetches the log.
func TestClientCertificates(t *testing.T) {
	dir := t.TempDir()
	caFile, _, ca, caKey := writeCert(t, dir, "ca", nil, nil, nil)
	srvCert, srvKey, _, _ := writeCert(t, dir, "runner", ca, caKey, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth})
	cliCert, cliKey, _, _ := writeCert(t, dir, "client", ca, caKey, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth})

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
