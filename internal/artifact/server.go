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

// ListenAndServe serves the endpoint on cfg.Listen until ctx is done, then
// shuts down gracefully. With TLSCert/TLSKey it serves HTTPS; with ClientCA
// it verifies client certificates (optional per request, so token clients
// keep working). ready, when not nil, gets the listening address.
func ListenAndServe(ctx context.Context, cfg Config, ready func(net.Addr)) error {
	if cfg.Token == "" && cfg.ClientCA == "" {
		return ErrNoAuth
	}
	tlsCfg, err := serverTLS(cfg)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("artifact endpoint: listen %s: %w", cfg.Listen, err)
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
