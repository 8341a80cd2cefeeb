package artifact

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"
)

// DefaultListen is where the endpoint listens unless configured: loopback
// only. Serving other machines takes an explicit address, and TLS or
// AllowPlainHTTP.
const DefaultListen = "127.0.0.1:8081"

// ErrPlainHTTP is returned by ListenAndServe for plain HTTP on an address
// that is not loopback without AllowPlainHTTP: its clients would send
// their token in clear.
var ErrPlainHTTP = errors.New("artifact endpoint: refusing to serve plain HTTP on an address that is not loopback")

// ListenAndServe serves the endpoint on cfg.Listen (DefaultListen when
// empty) until ctx is done, then shuts down gracefully. With
// TLSCert/TLSKey it serves HTTPS; with ClientCA it verifies client
// certificates (optional per request, so token clients keep working).
// Plain HTTP is served on loopback only, unless cfg.AllowPlainHTTP.
// ready, when not nil, gets the listening address.
func ListenAndServe(ctx context.Context, cfg Config, ready func(net.Addr)) error {
	if cfg.Token == "" && cfg.ClientCA == "" {
		return ErrNoAuth
	}
	tlsCfg, err := serverTLS(cfg)
	if err != nil {
		return err
	}
	if cfg.Listen == "" {
		cfg.Listen = DefaultListen
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("artifact endpoint: listen %s: %w", cfg.Listen, err)
	}
	// Checked on the bound address, so a host name that resolves to
	// loopback counts as loopback and ":8081" (every interface) does not.
	if tlsCfg == nil && !cfg.AllowPlainHTTP && !loopback(ln.Addr()) {
		ln.Close()
		return fmt.Errorf("%w: %s (configure tls_cert and tls_key, or set artifacts.allow_plain_http: true)", ErrPlainHTTP, cfg.Listen)
	}
	if tlsCfg != nil {
		ln = tls.NewListener(ln, tlsCfg)
	}
	if ready != nil {
		ready(ln.Addr())
	}
	// No WriteTimeout: followed logs stream for as long as a build runs.
	srv := &http.Server{Handler: New(cfg), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("artifact endpoint: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err = srv.Shutdown(sctx)
	if errors.Is(err, context.DeadlineExceeded) {
		// Followed logs do not end on their own; cut them.
		err = srv.Close()
	}
	if e := <-errc; e != nil && !errors.Is(e, http.ErrServerClosed) {
		err = errors.Join(err, e)
	}
	return err
}

func loopback(a net.Addr) bool {
	ta, ok := a.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}

func serverTLS(cfg Config) (*tls.Config, error) {
	if (cfg.TLSCert == "") != (cfg.TLSKey == "") {
		return nil, errors.New("artifact endpoint: tls_cert and tls_key go together")
	}
	if cfg.TLSCert == "" {
		if cfg.ClientCA != "" {
			return nil, errors.New("artifact endpoint: client_ca needs tls_cert and tls_key")
		}
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
	if err != nil {
		return nil, fmt.Errorf("artifact endpoint: load certificate: %w", err)
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	if cfg.ClientCA != "" {
		pool, err := loadPool(cfg.ClientCA)
		if err != nil {
			return nil, fmt.Errorf("artifact endpoint: %w", err)
		}
		c.ClientCAs = pool
		c.ClientAuth = tls.VerifyClientCertIfGiven
	}
	return c, nil
}

func loadPool(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("CA file %s: no PEM certificates", file)
	}
	return pool, nil
}
