package collect

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cloud-builder/cb/internal/broker"
	"github.com/cloud-builder/cb/internal/repo"
)

// Config wires a collector.
type Config struct {
	RepoRoot string // served tree; REPO_ROOT of SPEC §6
	StateDir string // private state: GNUPGHOME, staging, source checkout; never below RepoRoot
	Listen   string // host:port, 127.0.0.1:8080 when empty

	// Token authenticates uploads (Authorization: Bearer). TokenFile is
	// read when Token is empty. With neither and no ClientCA, a token is
	// generated into <StateDir>/upload.token on first start.
	Token     string
	TokenFile string

	GPGKeyID  string // signing key; the first (or a generated) key in GnupgHome when empty
	GnupgHome string // <StateDir>/gnupg when empty
	SignRPMs  bool   // also sign every uploaded rpm with the key (rpmsign --addsign)

	TLSCert  string // serve HTTPS with this certificate and key
	TLSKey   string
	ClientCA string // accept client certificates signed by this CA as upload credentials

	Project        string        // git URL of the sources repository, for cleanup
	Branch         string        // its branch; the remote's default when empty
	UpdateInterval time.Duration // cleanup period, 30s when zero

	MaxUploadSize int64 // bytes per upload, 8 GiB when zero
	Logger        *slog.Logger
	// Published, if set, is called after a repository's metadata was
	// published, with the repository path (projects/MS/TW), its type
	// and how long publishing took. cb up prints it.
	Published func(repoPath, repoType string, d time.Duration)
	// Events, when set, receives a "package binaries published" response
	// on cb-response after every published upload (cb-depsolver reads the
	// repository's index then). A failed event is logged, never fails the
	// upload: the depsolver also reacts to the build's final response.
	Events   broker.Publisher
	ThisHost string // host part of the events' identity; hostname when empty

	// Mount adds routes of other components (the web UI) to the
	// collector's server, beside the repositories. Their patterns must not
	// overlap the collector's own (/, /api/v1/status, the upload path,
	// /healthz, /metrics).
	Mount func(*http.ServeMux)
}

const (
	defaultListen        = "127.0.0.1:8080"
	defaultInterval      = 30 * time.Second
	defaultMaxUploadSize = 8 << 30
	tokenFileName        = "upload.token"
)

// Server is the collector: upload endpoint, publisher, cleanup loop and
// read-only file server of the repo root.
type Server struct {
	cfg      Config
	logger   *slog.Logger
	signer   *repo.Signer
	pub      *repo.Publisher
	token    string
	tokenSum [32]byte
	locks    repoLocks
	handler  http.Handler
	tls      *tls.Config
	source   *checkout

	status statusBook

	// ctx bounds publishing: an upload's metadata update finishes even
	// when its client goes away, but not past shutdown.
	ctx    context.Context
	cancel context.CancelCauseFunc

	lockFile  *os.File
	closeOnce sync.Once
	closeErr  error
}

// New checks cfg, opens (or creates) the signing key, exports the public
// key to the repo root and reads the repositories' state. Call Run, or
// Close when only Handler is used.
func New(cfg Config) (s *Server, err error) {
	if cfg.RepoRoot == "" || cfg.StateDir == "" {
		return nil, errors.New("new collector: repo root and state dir are required")
	}
	if cfg.RepoRoot, err = filepath.Abs(cfg.RepoRoot); err != nil {
		return nil, fmt.Errorf("new collector: %w", err)
	}
	if cfg.StateDir, err = filepath.Abs(cfg.StateDir); err != nil {
		return nil, fmt.Errorf("new collector: %w", err)
	}
	if rel, err := filepath.Rel(cfg.RepoRoot, cfg.StateDir); err == nil && rel != ".." && !strings.HasPrefix(rel, "../") {
		return nil, fmt.Errorf("new collector: state dir %s is inside the served repo root %s", cfg.StateDir, cfg.RepoRoot)
	}
	if cfg.Listen == "" {
		cfg.Listen = defaultListen
	}
	if cfg.UpdateInterval <= 0 {
		cfg.UpdateInterval = defaultInterval
	}
	if cfg.MaxUploadSize <= 0 {
		cfg.MaxUploadSize = defaultMaxUploadSize
	}
	if cfg.GnupgHome == "" {
		cfg.GnupgHome = filepath.Join(cfg.StateDir, "gnupg")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default().With("component", "collect")
	}
	logger := cfg.Logger
	for _, d := range []string{cfg.RepoRoot, cfg.StateDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("new collector: %w", err)
		}
	}
	s = &Server{cfg: cfg, logger: logger}
	s.ctx, s.cancel = context.WithCancelCause(context.Background())
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	if err := s.lockState(); err != nil {
		return nil, err
	}
	// Leftovers of transfers cut by a crash are never published.
	staging := filepath.Join(cfg.StateDir, "staging")
	if err := os.RemoveAll(staging); err != nil {
		return nil, fmt.Errorf("new collector: clear staging: %w", err)
	}
	if err := os.MkdirAll(staging, 0o700); err != nil {
		return nil, fmt.Errorf("new collector: %w", err)
	}
	if err := s.loadToken(); err != nil {
		return nil, err
	}
	if cfg.TLSCert != "" || cfg.TLSKey != "" || cfg.ClientCA != "" {
		if s.tls, err = tlsConfig(cfg); err != nil {
			return nil, err
		}
	}
	ctx, cancel := context.WithTimeout(s.ctx, 2*time.Minute)
	defer cancel()
	if s.signer, err = repo.NewSigner(ctx, cfg.GnupgHome, cfg.GPGKeyID, logger); err != nil {
		return nil, fmt.Errorf("new collector: %w", err)
	}
	if err := s.signer.ExportPublicKey(ctx, cfg.RepoRoot); err != nil {
		return nil, fmt.Errorf("new collector: %w", err)
	}
	s.pub = &repo.Publisher{Signer: s.signer, Logger: logger}
	if cfg.Project != "" {
		s.source = &checkout{url: cfg.Project, branch: cfg.Branch, dir: filepath.Join(cfg.StateDir, "source")}
	}
	if err := s.status.load(cfg.RepoRoot); err != nil {
		return nil, fmt.Errorf("new collector: %w", err)
	}
	s.handler = s.routes()
	return s, nil
}

// lockState makes sure one collector owns the state dir: two would race
// on staging and on repository locks that only exist in memory.
func (s *Server) lockState() error {
	f, err := os.OpenFile(filepath.Join(s.cfg.StateDir, "lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("new collector: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return fmt.Errorf("new collector: state dir %s is in use by another collector: %w", s.cfg.StateDir, err)
	}
	s.lockFile = f
	return nil
}

func (s *Server) loadToken() error {
	tok := strings.TrimSpace(s.cfg.Token)
	if tok == "" && s.cfg.TokenFile != "" {
		b, err := os.ReadFile(s.cfg.TokenFile)
		if err != nil {
			return fmt.Errorf("new collector: read token file: %w", err)
		}
		if tok = strings.TrimSpace(string(b)); tok == "" {
			return fmt.Errorf("new collector: token file %s is empty", s.cfg.TokenFile)
		}
	}
	if tok == "" && s.cfg.ClientCA == "" {
		p := filepath.Join(s.cfg.StateDir, tokenFileName)
		if b, err := os.ReadFile(p); err == nil && len(strings.TrimSpace(string(b))) >= 32 {
			tok = strings.TrimSpace(string(b))
		} else {
			buf := make([]byte, 32)
			if _, err := rand.Read(buf); err != nil {
				return fmt.Errorf("new collector: generate token: %w", err)
			}
			tok = hex.EncodeToString(buf)
			if err := os.WriteFile(p, []byte(tok+"\n"), 0o600); err != nil {
				return fmt.Errorf("new collector: write token: %w", err)
			}
			s.logger.Info("generated upload token", "file", p)
		}
	}
	s.token = tok
	if tok != "" {
		s.tokenSum = sha256.Sum256([]byte(tok))
	}
	return nil
}

func tlsConfig(cfg Config) (*tls.Config, error) {
	if cfg.TLSCert == "" || cfg.TLSKey == "" {
		return nil, errors.New("new collector: TLS needs both a certificate and a key")
	}
	cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
	if err != nil {
		return nil, fmt.Errorf("new collector: load TLS certificate: %w", err)
	}
	tc := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if cfg.ClientCA != "" {
		pem, err := os.ReadFile(cfg.ClientCA)
		if err != nil {
			return nil, fmt.Errorf("new collector: read client CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("new collector: no certificate in client CA %s", cfg.ClientCA)
		}
		tc.ClientCAs = pool
		// Readers of the repositories need no certificate; uploaders
		// either present one or a token.
		tc.ClientAuth = tls.VerifyClientCertIfGiven
	}
	return tc, nil
}

// Token is the upload token in use ("" when only client certificates are
// accepted), for runners started in the same process.
func (s *Server) Token() string { return s.token }

// SigningKey is the fingerprint of the repository signing key.
func (s *Server) SigningKey() string { return s.signer.Fingerprint() }

// Handler serves the repo root, the upload endpoint, status, health and
// metrics.
func (s *Server) Handler() http.Handler { return s.handler }

// Run listens on cfg.Listen and serves until ctx is done.
func (s *Server) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		s.Close()
		return fmt.Errorf("collector: listen %s: %w", s.cfg.Listen, err)
	}
	return s.Serve(ctx, ln)
}

// Serve serves on ln until ctx is done: first it repairs repositories a
// crash left with pending metadata, then publishes on every upload and
// cleans up every UpdateInterval. It closes the server before returning.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	defer s.Close()
	if s.tls != nil {
		ln = tls.NewListener(ln, s.tls)
	}
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(s.logger.Handler(), slog.LevelWarn),
	}
	s.logger.Info("collector serving", "addr", ln.Addr().String(), "repo_root", s.cfg.RepoRoot,
		"tls", s.tls != nil, "signing_key", s.signer.Fingerprint())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.maintain(ctx)
	}()
	var err error
	select {
	case err = <-errc:
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err = srv.Shutdown(sctx)
		cancel()
		if e := <-errc; e != nil && !errors.Is(e, http.ErrServerClosed) {
			err = errors.Join(err, e)
		}
	}
	s.cancel(fmt.Errorf("collector stopped: %w", context.Canceled))
	wg.Wait()
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	s.logger.Info("collector stopped", "addr", ln.Addr().String())
	return err
}

// maintain runs the recovery pass at start and the cleanup pass every
// UpdateInterval, each repository under its lock.
func (s *Server) maintain(ctx context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(s.ctx, cancel)
	defer stop()
	t := time.NewTicker(s.cfg.UpdateInterval)
	defer t.Stop()
	for {
		if err := s.Cleanup(ctx); err != nil && ctx.Err() == nil {
			s.logger.Error("cleanup failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Close stops publishing, the gpg-agent and releases the state dir. It is
// safe to call more than once.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.cancel(fmt.Errorf("collector closed: %w", context.Canceled))
		var errs []error
		if s.signer != nil {
			errs = append(errs, s.signer.Close())
		}
		if s.lockFile != nil {
			errs = append(errs, s.lockFile.Close())
		}
		s.closeErr = errors.Join(errs...)
	})
	return s.closeErr
}

// repoLocks serialises all changes to one repository: installs, removals
// and metadata updates. Different repositories proceed in parallel.
type repoLocks struct {
	mu sync.Mutex
	m  map[string]*repoLock
}

// repoLock is one repository's lock plus two counters that let uploads
// arriving together share one metadata update: every install takes a new
// generation, and a metadata update covers every generation installed
// before it started.
type repoLock struct {
	ch        chan struct{}
	installed uint64 // generation of the latest install
	published uint64 // latest generation known to be in the metadata
}

func (l *repoLocks) lock(ctx context.Context, path string) (*repoLock, func(), error) {
	l.mu.Lock()
	if l.m == nil {
		l.m = map[string]*repoLock{}
	}
	rl, ok := l.m[path]
	if !ok {
		rl = &repoLock{ch: make(chan struct{}, 1)}
		l.m[path] = rl
	}
	l.mu.Unlock()
	select {
	case rl.ch <- struct{}{}:
		return rl, func() { <-rl.ch }, nil
	case <-ctx.Done():
		return nil, nil, fmt.Errorf("lock repository %s: %w", path, context.Cause(ctx))
	}
}
