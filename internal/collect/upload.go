package collect

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/cloud-builder/cb/internal/message"
	"github.com/cloud-builder/cb/internal/metrics"
	"github.com/cloud-builder/cb/internal/repo"
	"github.com/cloud-builder/cb/internal/upload"
)

// errForbidden marks an upload whose ticket names another upload.
var errForbidden = errors.New("upload forbidden")

// authenticate accepts a verified client certificate, the plain upload
// token, or an upload ticket minted with it. It returns the ticket's
// claims, or nil for a client certificate or the plain token: those are
// the runner group's secret itself, whose holder could mint a ticket for
// any repository anyway. The token is compared as a SHA-256 sum in
// constant time, so neither its content nor its length leaks through
// timing.
func (s *Server) authenticate(r *http.Request) (*upload.Claims, error) {
	if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 {
		return nil, nil
	}
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if s.token == "" || !ok {
		return nil, errors.New("upload: missing or wrong token")
	}
	if strings.HasPrefix(tok, upload.TicketPrefix) {
		c, err := upload.VerifyTicket([]byte(s.token), tok, time.Now())
		if err != nil {
			return nil, fmt.Errorf("upload: %w", err)
		}
		return &c, nil
	}
	sum := sha256.Sum256([]byte(tok))
	if subtle.ConstantTimeCompare(sum[:], s.tokenSum[:]) != 1 {
		return nil, errors.New("upload: missing or wrong token")
	}
	return nil, nil
}

// credential names what an authenticated upload came with, for the log.
func credential(r *http.Request, ticket *upload.Claims) string {
	switch {
	case ticket != nil:
		return "ticket"
	case r.TLS != nil && len(r.TLS.VerifiedChains) > 0:
		return "client certificate"
	}
	return "token"
}

func (s *Server) handleUpload(w http.ResponseWriter, r *http.Request) {
	ticket, err := s.authenticate(r)
	if err != nil {
		metrics.Uploads.WithLabelValues("unauthorized").Inc()
		w.Header().Set("WWW-Authenticate", `Bearer realm="cb-collect"`)
		s.logger.Warn("upload refused: not authenticated", "remote", r.RemoteAddr, "err", err)
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": err.Error()})
		return
	}
	body := &errReader{r: http.MaxBytesReader(w, r.Body, s.cfg.MaxUploadSize+maxManifestSize+1<<20)}
	st, err := s.receive(r.Context(), body, ticket)
	if err != nil {
		code := http.StatusBadRequest
		var tooBig *http.MaxBytesError
		if errors.As(body.err, &tooBig) {
			code = http.StatusRequestEntityTooLarge
		}
		label := "rejected"
		if errors.Is(err, errForbidden) {
			code, label = http.StatusForbidden, "forbidden"
		}
		metrics.Uploads.WithLabelValues(label).Inc()
		s.logger.Warn("upload refused", "remote", r.RemoteAddr, "err", err)
		writeJSON(w, code, map[string]string{"error": err.Error()})
		return
	}
	defer os.RemoveAll(st.dir)
	logger := s.logger.With("request_id", st.m.RequestID, "repository", st.m.RepoPath, "package", st.m.Name, "arch", st.m.Arch,
		"credential", credential(r, ticket))
	err = s.signRPMs(s.ctx, st)
	changed := false
	if err == nil {
		changed, err = s.publish(s.ctx, logger, st)
	}
	if err != nil {
		code := http.StatusInternalServerError
		if errors.Is(err, repo.ErrTypeMismatch) || errors.Is(err, repo.ErrFileConflict) {
			code = http.StatusConflict
		}
		metrics.Uploads.WithLabelValues("failed").Inc()
		logger.Error("upload not published", "err", err)
		writeJSON(w, code, map[string]string{"error": err.Error()})
		return
	}
	res := Result{Status: "published", Repository: st.m.RepoPath, Files: len(st.m.Files)}
	if !changed {
		res.Status = "unchanged"
	}
	metrics.Uploads.WithLabelValues(res.Status).Inc()
	s.publishEvent(logger, st.m, res.Status)
	writeJSON(w, http.StatusOK, res)
}

// publishEvent tells cb-response that the build's binaries are published.
func (s *Server) publishEvent(logger *slog.Logger, m *Manifest, status string) {
	if s.cfg.Events == nil {
		return
	}
	host := s.cfg.ThisHost
	if host == "" {
		host, _ = os.Hostname()
	}
	resp := &message.Response{
		Identity:      message.Identity(message.ServiceCollect, host, m.Name),
		Message:       fmt.Sprintf("Binaries %s in %s (%d files, %s)", status, m.RepoPath, len(m.Files), m.Arch),
		Project:       m.Project,
		RequestID:     m.RequestID,
		ResponseCode:  message.BinariesPublished,
		SchemaVersion: message.SchemaVersion,
		Target:        &message.Target{Arch: m.Arch, Dist: path.Base(m.RepoPath)},
	}
	b, err := message.Encode(resp)
	if err == nil {
		ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
		err = s.cfg.Events.Publish(ctx, message.TopicResponse, b)
		cancel()
	}
	if err != nil {
		logger.Warn("publish event not sent", "err", err)
	}
}

// errReader remembers the body's read error, which the tar reader may
// hide behind its own.
type errReader struct {
	r   io.Reader
	err error
}

func (e *errReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && !errors.Is(err, io.EOF) {
		e.err = err
	}
	return n, err
}

// staged is an upload whose every file was received and verified.
type staged struct {
	m       *Manifest
	dir     string
	files   map[string]string    // repo-relative name -> staged path
	changed map[string]repo.File // files rewritten after verification
}

// signRPMs signs the staged rpms with the repository key when configured.
// It runs before the repository lock is taken: signing is per file and
// needs no repository state.
func (s *Server) signRPMs(ctx context.Context, st *staged) error {
	if !s.cfg.SignRPMs || st.m.RepoType != string(repo.RPM) {
		return nil
	}
	st.changed = map[string]repo.File{}
	for name, p := range st.files {
		if err := s.signer.SignRPM(ctx, p); err != nil {
			return err
		}
		size, sum, err := hashFile(p)
		if err != nil {
			return err
		}
		st.changed[name] = repo.File{Name: name, Size: size, SHA256: sum}
	}
	return nil
}

// receive reads the tar stream into a fresh staging directory and checks
// it against the manifest, and the manifest against the ticket, when the
// upload came with one. Nothing of a stream that fails any check, or is
// cut short, survives.
func (s *Server) receive(ctx context.Context, body io.Reader, ticket *upload.Claims) (st *staged, err error) {
	dir, err := os.MkdirTemp(filepath.Join(s.cfg.StateDir, "staging"), "upload-")
	if err != nil {
		return nil, fmt.Errorf("upload: %w", err)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(dir)
		}
	}()
	tr := tar.NewReader(body)
	hdr, err := tr.Next()
	if err != nil {
		return nil, invalid("read manifest: %v", err)
	}
	if hdr.Name != ManifestName || hdr.Typeflag != tar.TypeReg || hdr.Size > maxManifestSize {
		return nil, invalid("first entry must be %s of at most %d bytes, got %q", ManifestName, maxManifestSize, hdr.Name)
	}
	data, err := io.ReadAll(tr)
	if err != nil {
		return nil, invalid("read manifest: %v", err)
	}
	m, err := decodeManifest(data)
	if err != nil {
		return nil, err
	}
	if err := m.validate(s.cfg.MaxUploadSize); err != nil {
		return nil, err
	}
	// The files are named below the manifest's repository and arch
	// (validate checked each name), so a manifest the ticket covers
	// writes nowhere else.
	if ticket != nil {
		u := upload.Upload{RequestID: m.RequestID, Project: m.Project, RepoPath: m.RepoPath, Arch: m.Arch}
		if err := ticket.Covers(u); err != nil {
			return nil, fmt.Errorf("%w: %w", errForbidden, err)
		}
	}
	want := map[string]ManifestFile{}
	for _, f := range m.Files {
		want[f.Name] = f
	}
	st = &staged{m: m, dir: dir, files: map[string]string{}}
	for i := 0; ; i++ {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, invalid("read stream: %v", err)
		}
		f, ok := want[hdr.Name]
		switch {
		case !ok:
			return nil, invalid("entry %q is not in the manifest", hdr.Name)
		case st.files[hdr.Name] != "":
			return nil, invalid("entry %q sent twice", hdr.Name)
		case hdr.Typeflag != tar.TypeReg:
			return nil, invalid("entry %q is not a regular file", hdr.Name)
		case hdr.Size != f.Size:
			return nil, invalid("entry %q has %d bytes, manifest says %d", hdr.Name, hdr.Size, f.Size)
		}
		// Staged under a number: the name is checked, but need not be
		// trusted as a path at all.
		p := filepath.Join(dir, strconv.Itoa(i))
		if err := receiveFile(tr, p, f); err != nil {
			return nil, err
		}
		if err := repo.CheckPackage(ctx, p, repo.Type(m.RepoType)); err != nil {
			return nil, invalid("%s: %v", f.Name, err)
		}
		st.files[hdr.Name] = p
	}
	for _, f := range m.Files {
		if st.files[f.Name] == "" {
			return nil, invalid("stream ended without %s", f.Name)
		}
	}
	return st, nil
}

func receiveFile(r io.Reader, p string, f ManifestFile) error {
	out, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("upload: %w", err)
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(out, h), r)
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return invalid("receive %s: %v", f.Name, err)
	}
	if n != f.Size {
		return invalid("receive %s: got %d bytes, want %d", f.Name, n, f.Size)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != f.SHA256 {
		return invalid("checksum mismatch for %s: got sha256 %s, manifest says %s", f.Name, got, f.SHA256)
	}
	return nil
}

// publish installs a verified upload and updates the repository's
// metadata, each under the repository's lock. Between the two the lock is
// released, so uploads that arrive together all install first and the
// first metadata update covers them all; the others find their generation
// published and return at once. A repeated delivery of the same build
// changes nothing, unless an earlier metadata update failed.
func (s *Server) publish(ctx context.Context, logger *slog.Logger, st *staged) (bool, error) {
	r, err := repo.Open(s.cfg.RepoRoot, st.m.RepoPath)
	if err != nil {
		return false, err
	}
	b := st.m.build(st.changed)
	b.Published = time.Now().UTC()
	rl, unlock, err := s.locks.lock(ctx, r.Path)
	if err != nil {
		return false, err
	}
	changed, err := r.Install(repo.Type(st.m.RepoType), b, st.files)
	if err != nil {
		unlock()
		return false, err
	}
	if !changed && !r.Dirty() {
		unlock()
		logger.Info("upload unchanged: this build is already published")
		return false, nil
	}
	rl.installed++
	gen := rl.installed
	unlock()
	logger.Info("upload installed", "files", len(b.Files))

	rl, unlock, err = s.locks.lock(ctx, r.Path)
	if err != nil {
		return false, err
	}
	defer unlock()
	if rl.published >= gen && !r.Dirty() {
		logger.Info("metadata already published with a concurrent upload")
		return changed, nil
	}
	return changed, s.regenerate(ctx, logger, r, rl)
}

// regenerate publishes r's metadata and records the outcome. The caller
// holds r's lock rl.
func (s *Server) regenerate(ctx context.Context, logger *slog.Logger, r repo.Repository, rl *repoLock) error {
	t, _ := r.Type()
	start := time.Now()
	gen := rl.installed
	err := s.pub.Publish(ctx, r)
	if err == nil {
		rl.published = gen
	}
	d := time.Since(start)
	metrics.PublishDuration.WithLabelValues(string(t)).Observe(d.Seconds())
	st, _ := r.ReadStatus()
	if err != nil {
		st.LastError = err.Error()
		logger.Error("metadata update failed", "err", err, "duration", d)
	} else {
		st = repo.Status{LastUpdate: time.Now().UTC()}
		logger.Info("metadata published", "type", t, "duration", d)
		if s.cfg.Published != nil {
			s.cfg.Published(r.Path, string(t), d)
		}
	}
	if werr := r.WriteStatus(st); werr != nil {
		logger.Warn("cannot record repository status", "err", werr)
	}
	s.status.update(r, st)
	return err
}
