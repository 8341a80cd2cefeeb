// Package artifact is the runner's HTTP endpoint for build artifacts: the
// prepare and build logs (optionally followed live while the build runs),
// the solver file and the sorted binaries of every target in the runner
// root (SPEC §5, §8.5). Clients reach it through the artifact_url that
// cb-info announces, so nobody needs shell access to a runner.
//
// The endpoint is read-only and confined to the runner root: the target in
// the URL is validated like a wire field, and every file is opened through
// an [os.Root], so neither "../" nor a symbolic link pointing out of the
// runner root reaches a file outside it. Requests are authenticated with a
// shared bearer token or, when a client CA is configured, a verified client
// certificate.
//
// URL scheme (project is the full projects/... path, profile DIST.ARCH or
// SELECTION.ARCH):
//
//	GET /v1/targets/<project>@<profile>/prepare.log[?follow=1]
//	GET /v1/targets/<project>@<profile>/build.log[?follow=1]
//	GET /v1/targets/<project>@<profile>/solver.json
//	GET /v1/targets/<project>@<profile>/binaries/            JSON listing
//	GET /v1/targets/<project>@<profile>/binaries/<relpath>
//	GET /healthz, /metrics                                     unauthenticated
package artifact

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/cloud-builder/cb/internal/metrics"
)

// Config configures the endpoint.
type Config struct {
	// Root is the runner root holding the targets.
	Root string
	// Token is the shared bearer token; "" disables token authentication.
	Token string
	// ClientCA is a PEM file of the CA that signs client certificates.
	// When set, ListenAndServe verifies presented client certificates
	// against it and a request with a verified certificate needs no token.
	ClientCA string
	// TLSCert and TLSKey make ListenAndServe serve HTTPS.
	TLSCert, TLSKey string
	// Listen is the address ListenAndServe listens on; DefaultListen
	// (loopback) when empty.
	Listen string
	// AllowPlainHTTP lets ListenAndServe serve plain HTTP on an address
	// that is not loopback (artifacts.allow_plain_http).
	AllowPlainHTTP bool
	// PollInterval is how often a followed log is checked for new bytes
	// and the build for its end. 0 means 250ms.
	PollInterval time.Duration
	// EndGrace is how long a followed log keeps waiting after the build
	// process is gone without a result file (a job that died, or one
	// that has not written its pid yet). 0 means 5s.
	EndGrace time.Duration
	Logger   *slog.Logger
}

// URL prefix of the target routes.
const targetsPrefix = "/v1/targets/"

// Artifact names below a target.
const (
	PrepareLog = "prepare.log"
	BuildLog   = "build.log"
	SolverFile = "solver.json"
	Binaries   = "binaries/"
)

// ErrNoAuth is returned by ListenAndServe when neither a token nor a client
// CA is configured: an endpoint open to everyone is never started.
var ErrNoAuth = errors.New("artifact endpoint: neither a token nor a client CA is configured")

type handler struct {
	cfg    Config
	log    *slog.Logger
	hashes *hashCache
}

// New returns the endpoint's handler, including /healthz and /metrics.
// Without a token and without a client CA it refuses every target request.
func New(cfg Config) http.Handler {
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = 250 * time.Millisecond
	}
	if cfg.EndGrace <= 0 {
		cfg.EndGrace = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	h := &handler{cfg: cfg, log: cfg.Logger, hashes: newHashCache()}
	mux := metrics.Mux(nil)
	mux.HandleFunc("GET "+targetsPrefix, h.serveTarget)
	return mux
}

// authorized checks the request's credentials. Tokens are compared as
// SHA-256 digests in constant time, so neither content nor length leaks.
func (h *handler) authorized(r *http.Request) bool {
	if h.cfg.ClientCA != "" && r.TLS != nil && len(r.TLS.VerifiedChains) > 0 {
		return true
	}
	if h.cfg.Token == "" {
		return false
	}
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return false
	}
	a, b := sha256.Sum256([]byte(got)), sha256.Sum256([]byte(h.cfg.Token))
	return subtle.ConstantTimeCompare(a[:], b[:]) == 1
}

func (h *handler) serveTarget(w http.ResponseWriter, r *http.Request) {
	if !h.authorized(r) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="cloud-builder"`)
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return
	}
	t, name, err := ParsePath(strings.TrimPrefix(r.URL.Path, targetsPrefix))
	if err != nil {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	root, err := os.OpenRoot(h.cfg.Root)
	if err != nil {
		h.log.Error("open runner root", "root", h.cfg.Root, "err", err)
		http.Error(w, "runner root unavailable", http.StatusServiceUnavailable)
		return
	}
	defer root.Close()
	log := h.log.With("target", t.Project+"@"+t.Profile, "artifact", name)
	follow := r.URL.Query().Get("follow") == "1" || r.URL.Query().Get("follow") == "true"
	switch {
	case name == PrepareLog:
		h.serveLog(w, r, root, t, t.PrepareLog(), follow, log)
	case name == BuildLog:
		h.serveLog(w, r, root, t, t.BuildLog(), follow, log)
	case name == SolverFile:
		serveFile(w, r, root, t.SolverFile(), "application/json", log)
	case name == Binaries:
		h.serveListing(w, r, root, t, log)
	case strings.HasPrefix(name, Binaries):
		rel := strings.TrimPrefix(name, Binaries)
		if err := validateRelPath(rel); err != nil {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		serveFile(w, r, root, t.Binaries()+"/"+rel, "application/octet-stream", log)
	default:
		http.Error(w, "unknown artifact "+name, http.StatusNotFound)
	}
}

// serveFile serves one regular file below root. The path is relative to
// the root; os.Root refuses anything that would leave it, including
// symbolic links pointing outside.
func serveFile(w http.ResponseWriter, r *http.Request, root *os.Root, rel, contentType string, log *slog.Logger) {
	f, fi, err := openRegular(root, rel)
	if err != nil {
		notFound(w, err, log)
		return
	}
	defer f.Close()
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("X-Content-Type-Options", "nosniff")
	http.ServeContent(w, r, "", fi.ModTime(), f)
}

// openRegular opens rel below root and refuses anything but a regular file
// (devices, fifos and directories are never served).
func openRegular(root *os.Root, rel string) (*os.File, fs.FileInfo, error) {
	f, err := root.Open(rel)
	if err != nil {
		return nil, nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, nil, errNotRegular
	}
	return f, fi, nil
}

var errNotRegular = errors.New("not a regular file")

func notFound(w http.ResponseWriter, err error, log *slog.Logger) {
	if !errors.Is(err, fs.ErrNotExist) {
		// Escapes and non-regular files are logged: they point at a
		// misconfigured or tampered runner root.
		log.Warn("artifact refused", "err", err)
	}
	http.Error(w, "not found", http.StatusNotFound)
}
