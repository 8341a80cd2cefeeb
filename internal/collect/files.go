package collect

import (
	"errors"
	"io"
	"io/fs"
	"net/http"
	"os"
	"strings"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/cloud-builder/cb/internal/metrics"
	"github.com/cloud-builder/cb/internal/upload"
)

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+upload.Path, s.handleUpload)
	mux.HandleFunc("GET /api/v1/status", s.handleStatus)
	mux.Handle("GET /metrics", promhttp.HandlerFor(metrics.Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", s.handleHealth)
	mux.Handle("GET /", http.FileServer(publicFS{root: s.cfg.RepoRoot}))
	if s.cfg.Mount != nil {
		s.cfg.Mount(mux)
	}
	return mux
}

func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	if _, err := os.Stat(s.cfg.RepoRoot); err != nil {
		http.Error(w, "unhealthy: repo root: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	if s.ctx.Err() != nil {
		http.Error(w, "unhealthy: shutting down", http.StatusServiceUnavailable)
		return
	}
	io.WriteString(w, "ok\n")
}

// publicFS serves the repo root read-only: nothing whose name starts with
// a dot (the bookkeeping, temporary metadata, half-moved files) and nothing
// a symlink would reach outside the root (os.Root refuses that).
type publicFS struct{ root string }

func (p publicFS) Open(name string) (http.File, error) {
	name = strings.TrimPrefix(name, "/")
	if name == "" {
		name = "."
	}
	for _, el := range strings.Split(name, "/") {
		if strings.HasPrefix(el, ".") && el != "." {
			return nil, fs.ErrNotExist
		}
	}
	if !fs.ValidPath(name) {
		return nil, fs.ErrNotExist
	}
	root, err := os.OpenRoot(p.root)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	f, err := root.Open(name)
	if err != nil {
		// Whether a path is missing, unreadable or a symlink out of the
		// root is nobody's business: all are "not found".
		return nil, fs.ErrNotExist
	}
	return publicFile{f}, nil
}

// publicFile hides dot entries from directory listings (http.FileServer
// uses ReadDir when a file has it, Readdir otherwise).
type publicFile struct{ *os.File }

func (f publicFile) ReadDir(n int) ([]fs.DirEntry, error) {
	return visible(n, f.File.ReadDir, fs.DirEntry.Name)
}

func (f publicFile) Readdir(n int) ([]fs.FileInfo, error) {
	return visible(n, f.File.Readdir, fs.FileInfo.Name)
}

// visible filters dot names out of a directory read. With n > 0 it keeps
// reading until something visible turns up, so a batch of only hidden
// entries does not end the listing early.
func visible[T any](n int, read func(int) ([]T, error), name func(T) string) ([]T, error) {
	var out []T
	for {
		batch, err := read(n)
		for _, e := range batch {
			if !strings.HasPrefix(name(e), ".") {
				out = append(out, e)
			}
		}
		if err != nil || n <= 0 || len(out) > 0 {
			if len(out) > 0 && errors.Is(err, io.EOF) {
				err = nil
			}
			return out, err
		}
	}
}
