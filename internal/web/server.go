// Package web is the status UI of Cloud Builder: a matrix of every
// package and image target with its state, a page per target (timeline,
// live build log, binaries, why it waits), the repositories and the
// runners, each page also as JSON below /api/v1/.
//
// The data is the message stream itself: the UI reads cb-response,
// cb-heartbeat and the runner groups' request topics from their start into
// an in-memory [Model], and follows them. No database is needed; a restart
// replays what the broker retains. Pages are rendered on the server with
// html/template; one small script (static/app.js) applies live updates
// from server-sent events.
//
// Routes (all below /ui/ and /api/v1/, so they can share the collector's
// server without touching its repository URLs):
//
//	GET  /ui/                           overview matrix; ?project= &state= &group= &q= &page=
//	GET  /ui/targets/<project>@<profile> target page
//	GET  /ui/repositories, /ui/runners
//	GET  /ui/events                     server-sent events; ?target=<key>
//	GET  /ui/artifacts/<project>@<profile>/<artifact>   proxied from the runner's artifact endpoint
//	GET  /api/v1/targets, /api/v1/targets/<key>, /api/v1/repositories, /api/v1/runners
//	POST /api/v1/rebuild                {"target": "<project>@<profile>"}; always needs a credential
//
// Access: reading is open to loopback clients; others need the UI token
// (Authorization: Bearer, or the cookie the login form sets) or a verified
// client certificate. A rebuild always needs one of these.
package web

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"

	"github.com/klauspost/compress/gzhttp"

	"github.com/cloud-builder/cb/internal/collect"
	"github.com/cloud-builder/cb/internal/message"
)

//go:embed templates/*.html static/*
var assets embed.FS

// Publisher sends rebuild requests; *broker.Client satisfies it.
type Publisher interface {
	Publish(ctx context.Context, topic string, value []byte) error
}

// Config wires the UI.
type Config struct {
	Model *Model
	// Publisher sends the rebuild button's requests; nil disables it.
	Publisher Publisher
	// Token is the credential for reading from elsewhere than loopback
	// and for rebuilding. "" leaves only client certificates.
	Token string
	// Status returns the collector's repository status; nil hides the
	// repositories page's content.
	Status func(ctx context.Context) (*collect.Status, error)
	// RepoURL is the repositories' base URL for the apt/dnf snippets; ""
	// derives it from the request (the UI is then served beside them).
	RepoURL string
	// ArtifactToken authenticates the UI at the runners' artifact
	// endpoints; ArtifactTLS is its TLS client configuration (CA, client
	// certificate) for https endpoints.
	ArtifactToken string
	ArtifactTLS   *tls.Config
	// ArtifactAllowPlainHTTP lets ArtifactToken go over plain HTTP to
	// endpoints that are not loopback (allow_plain_http of the runner
	// config section the token came from).
	ArtifactAllowPlainHTTP bool
	Logger                 *slog.Logger
}

// Server serves the UI.
type Server struct {
	cfg    Config
	m      *Model
	log    *slog.Logger
	pages  map[string]*template.Template
	client *http.Client // to artifact endpoints, no overall timeout: logs are followed
	// ctx ends with Close: live streams (events, followed logs) stop.
	ctx    context.Context
	cancel context.CancelFunc
}

// New returns the UI server.
func New(cfg Config) (*Server, error) {
	if cfg.Model == nil {
		return nil, errors.New("web: no model")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, m: cfg.Model, log: cfg.Logger, pages: map[string]*template.Template{}}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	for _, p := range []string{"overview", "target", "repositories", "runners", "login"} {
		t, err := template.New(p).Funcs(funcs).ParseFS(assets, "templates/layout.html", "templates/"+p+".html")
		if err != nil {
			return nil, fmt.Errorf("web: template %s: %w", p, err)
		}
		s.pages[p] = t
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = cfg.ArtifactTLS
	tr.ResponseHeaderTimeout = 15 * time.Second
	s.client = &http.Client{Transport: tr}
	return s, nil
}

// Close ends live streams (events, followed logs), so that a server
// shutting down is not held open by browsers. Safe to call twice.
func (s *Server) Close() { s.cancel() }

// Mount registers the UI's routes on mux.
func (s *Server) Mount(mux *http.ServeMux) {
	// Pages and JSON are compressed (the overview of 2,000 targets is
	// 1 MB of HTML, 50 kB gzipped); streams (events, followed logs) are not.
	gz := func(h http.HandlerFunc) http.HandlerFunc { return gzhttp.GzipHandler(s.read(h)) }
	mux.HandleFunc("GET /ui/{$}", gz(s.overview))
	mux.HandleFunc("GET /ui/targets/{key...}", gz(s.targetPage))
	mux.HandleFunc("GET /ui/repositories", gz(s.repositories))
	mux.HandleFunc("GET /ui/runners", gz(s.runners))
	mux.HandleFunc("GET /ui/events", s.read(s.events))
	mux.HandleFunc("GET /ui/artifacts/{rest...}", s.read(s.artifact))
	mux.HandleFunc("GET /ui/login", s.loginForm)
	mux.HandleFunc("POST /ui/login", s.login)
	mux.Handle("GET /ui/static/", http.StripPrefix("/ui/", http.FileServerFS(assets)))
	mux.HandleFunc("GET /api/v1/targets", gz(s.overview))
	mux.HandleFunc("GET /api/v1/targets/{key...}", gz(s.targetPage))
	mux.HandleFunc("GET /api/v1/repositories", gz(s.repositories))
	mux.HandleFunc("GET /api/v1/runners", gz(s.runners))
	mux.HandleFunc("POST /api/v1/rebuild", s.rebuild)
}

// Handler is a complete handler for a server of its own: the UI plus
// a redirect from / and /healthz.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	s.Mount(mux)
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/ui/", http.StatusFound) })
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })
	return mux
}

// --- access ---

const tokenCookie = "cb_ui_token"

// credential reports whether r carries a verified client certificate or
// the UI token (header or cookie). Tokens are compared as digests in
// constant time.
func (s *Server) credential(r *http.Request) bool {
	if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 {
		return true
	}
	if s.cfg.Token == "" {
		return false
	}
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		c, err := r.Cookie(tokenCookie)
		if err != nil {
			return false
		}
		got = c.Value
	}
	a, b := sha256.Sum256([]byte(got)), sha256.Sum256([]byte(s.cfg.Token))
	return subtle.ConstantTimeCompare(a[:], b[:]) == 1
}

// loopback reports whether the client connects from this machine.
func loopback(r *http.Request) bool {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func (s *Server) read(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if loopback(r) || s.credential(r) {
			h(w, r)
			return
		}
		if isAPI(r) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="cloud-builder"`)
			writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "unauthorized: a token or client certificate is needed from " + r.RemoteAddr})
			return
		}
		w.WriteHeader(http.StatusUnauthorized)
		s.render(w, r, "login", map[string]any{"Next": r.URL.RequestURI()})
	}
}

func (s *Server) loginForm(w http.ResponseWriter, r *http.Request) {
	s.render(w, r, "login", map[string]any{"Next": safeNext(r.URL.Query().Get("next"))})
}

func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 4096)
	tok := r.PostFormValue("token")
	a, b := sha256.Sum256([]byte(tok)), sha256.Sum256([]byte(s.cfg.Token))
	if s.cfg.Token == "" || subtle.ConstantTimeCompare(a[:], b[:]) != 1 {
		w.WriteHeader(http.StatusUnauthorized)
		s.render(w, r, "login", map[string]any{"Next": safeNext(r.PostFormValue("next")), "Error": "wrong token"})
		return
	}
	http.SetCookie(w, &http.Cookie{Name: tokenCookie, Value: tok, Path: "/", HttpOnly: true, Secure: r.TLS != nil,
		SameSite: http.SameSiteStrictMode, MaxAge: 30 * 24 * 3600})
	http.Redirect(w, r, safeNext(r.PostFormValue("next")), http.StatusSeeOther)
}

// safeNext keeps a redirect target on this site.
func safeNext(n string) string {
	if !strings.HasPrefix(n, "/") || strings.HasPrefix(n, "//") || strings.ContainsAny(n, "\\\r\n") {
		return "/ui/"
	}
	return n
}

func isAPI(r *http.Request) bool { return strings.HasPrefix(r.URL.Path, "/api/") }

// --- rendering ---

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "    ")
	_ = enc.Encode(v)
}

func (s *Server) render(w http.ResponseWriter, r *http.Request, page string, data any) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Content-Security-Policy", "default-src 'self'; style-src 'self' 'unsafe-inline'")
	name := "layout"
	if r.URL.Query().Get("fragment") == "live" && page == "target" {
		name = "live"
	}
	if err := s.pages[page].ExecuteTemplate(w, name, data); err != nil {
		s.log.Warn("render page", "page", page, "err", err)
	}
}

var funcs = template.FuncMap{
	"ago": func(now, t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return short(now.Sub(t)) + " ago"
	},
	"short": short,
	"dur": func(c Cell, now time.Time) string {
		t := Target{State: c.State, Started: c.Started, Finished: c.Finished}
		if d := t.Duration(now); d > 0 {
			return short(d)
		}
		return ""
	},
	"tdur": func(t *Target, now time.Time) string {
		if d := t.Duration(now); d > 0 {
			return short(d)
		}
		return ""
	},
	"unix":        unixMilli,
	"stamp":       func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05Z") },
	"targetURL":   targetURL,
	"artifactURL": func(key, name string) string { return "/ui/artifacts/" + escapeKey(key) + "/" + name },
	"query": func(f Filter, page int) template.URL {
		return template.URL(f.query(page))
	},
	"eq2":  func(a, b any) bool { return fmt.Sprint(a) == fmt.Sprint(b) },
	"rows": matrixRows,
	"base": path.Base,
	"repoID": func(p string) string {
		return "cloud-builder-" + strings.ReplaceAll(strings.TrimPrefix(p, "projects/"), "/", "-")
	},
	"add": func(a, b int) int { return a + b },
}

// short renders a duration the way a person reads it at a glance.
func short(d time.Duration) string {
	switch {
	case d < time.Second:
		return "0s"
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

// escapeKey escapes every path element of a target key for a URL.
func escapeKey(key string) string {
	parts := strings.Split(key, "/")
	for i, p := range parts {
		parts[i] = url.PathEscape(p)
	}
	return strings.Join(parts, "/")
}

func targetURL(key string) string { return "/ui/targets/" + escapeKey(key) }

// parseKey validates <project>@<profile> like a wire field.
func parseKey(key string) (project, profile string, err error) {
	project, profile, ok := strings.Cut(key, "@")
	if !ok {
		return "", "", errors.New("want <project>@<profile>")
	}
	if err := message.ValidateProject(project); err != nil {
		return "", "", err
	}
	i := strings.LastIndexByte(profile, '.')
	if i <= 0 {
		return "", "", fmt.Errorf("profile %q: want DIST.ARCH or SELECTION.ARCH", profile)
	}
	for _, n := range []string{profile[:i], profile[i+1:]} {
		if err := message.ValidateName(n); err != nil {
			return "", "", fmt.Errorf("profile %q: %w", profile, err)
		}
	}
	return project, profile, nil
}

func queryEscape(s string) string { return url.QueryEscape(s) }
