package collect

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cloud-builder/cb/internal/repo"
)

// RepoStatus is one repository in GET /api/v1/status.
type RepoStatus struct {
	Path       string     `json:"path"`
	Type       string     `json:"type"`
	Packages   int        `json:"packages"` // distinct package names
	Names      []string   `json:"package_names"`
	Files      int        `json:"files"`
	LastUpdate *time.Time `json:"last_update"`
	LastError  string     `json:"last_error"`
	Pending    bool       `json:"pending"` // metadata update outstanding
}

// Status is the answer of GET /api/v1/status.
type Status struct {
	SigningKey   string       `json:"signing_key"`
	Source       SourceStatus `json:"source"`
	Repositories []RepoStatus `json:"repositories"`
}

// SourceStatus is the collector's checkout of the sources repository.
type SourceStatus struct {
	URL       string     `json:"url,omitempty"`
	Commit    string     `json:"commit,omitempty"`
	LastSync  *time.Time `json:"last_sync,omitempty"`
	LastError string     `json:"last_error,omitempty"`
}

type statusBook struct {
	mu     sync.Mutex
	repos  map[string]RepoStatus
	source SourceStatus
}

// load fills the book from the repositories on disk.
func (b *statusBook) load(root string) error {
	repos, err := repo.Discover(root)
	for _, r := range repos {
		st, _ := r.ReadStatus()
		b.update(r, st)
	}
	return err
}

// update records r's current content with st; a repository that no longer
// exists leaves the book.
func (b *statusBook) update(r repo.Repository, st repo.Status) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.repos == nil {
		b.repos = map[string]RepoStatus{}
	}
	builds, err := r.Builds()
	if !r.Exists() {
		delete(b.repos, r.Path)
		return
	}
	t, _ := r.Type()
	rs := RepoStatus{Path: r.Path, Type: string(t), LastError: st.LastError, Pending: r.Dirty()}
	if err != nil && rs.LastError == "" {
		rs.LastError = err.Error()
	}
	if !st.LastUpdate.IsZero() {
		lu := st.LastUpdate
		rs.LastUpdate = &lu
	}
	names := map[string]bool{}
	files := map[string]bool{}
	for _, bd := range builds {
		names[bd.Name] = true
		for _, f := range bd.Files {
			files[f.Name] = true
		}
	}
	rs.Packages, rs.Files = len(names), len(files)
	rs.Names = make([]string, 0, len(names))
	for n := range names {
		rs.Names = append(rs.Names, n)
	}
	slices.Sort(rs.Names)
	b.repos[r.Path] = rs
}

func (b *statusBook) setSource(s SourceStatus) {
	b.mu.Lock()
	b.source = s
	b.mu.Unlock()
}

func (b *statusBook) snapshot() ([]RepoStatus, SourceStatus) {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]RepoStatus, 0, len(b.repos))
	for _, r := range b.repos {
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b RepoStatus) int { return strings.Compare(a.Path, b.Path) })
	return out, b.source
}

func (s *Server) handleStatus(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.Status())
}

// Status is what GET /api/v1/status answers: every repository, the
// signing key and the source checkout.
func (s *Server) Status() *Status {
	repos, src := s.status.snapshot()
	return &Status{SigningKey: s.signer.Fingerprint(), Source: src, Repositories: repos}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "    ")
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
}
