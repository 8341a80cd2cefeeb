package collect

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"time"

	"github.com/cloud-builder/cb/internal/message"
	"github.com/cloud-builder/cb/internal/repo"
	"github.com/cloud-builder/cb/internal/source"
)

// checkout is the collector's own clone of the sources repository.
type checkout struct {
	url, branch, dir string
}

// Cleanup brings every repository in line with the sources repository
// (when one is configured): packages whose directory left git, targets
// removed from cloud_builder.yml and arches removed from a target lose
// their files. It also deletes files a crash left unrecorded and publishes
// metadata that a crash or a failed update left pending. Each repository is
// handled under its lock, so cleanup never races an upload.
func (s *Server) Cleanup(ctx context.Context) error {
	var tree string
	if s.source != nil {
		commit, err := source.Update(ctx, s.source.dir, s.source.url, s.source.branch, s.logger)
		now := time.Now().UTC()
		st := SourceStatus{URL: s.source.url, Commit: commit, LastSync: &now}
		if err != nil {
			st.LastError = err.Error()
			s.logger.Error("cannot update the sources checkout; skipping removals", "err", err)
		} else if fi, serr := os.Stat(filepath.Join(s.source.dir, "projects")); serr != nil || !fi.IsDir() {
			// A checkout without projects/ is more likely a wrong URL or
			// branch than a wish to empty every repository.
			st.LastError = "checkout has no projects/ directory; skipping removals"
			s.logger.Error(st.LastError, "url", s.source.url)
		} else {
			tree = s.source.dir
		}
		s.status.setSource(st)
	}
	repos, err := repo.Discover(s.cfg.RepoRoot)
	var errs []error
	if err != nil {
		errs = append(errs, err)
	}
	for _, r := range repos {
		if err := s.cleanRepo(ctx, r, tree); err != nil {
			if ctx.Err() != nil {
				return context.Cause(ctx)
			}
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (s *Server) cleanRepo(ctx context.Context, r repo.Repository, tree string) error {
	rl, unlock, err := s.locks.lock(ctx, r.Path)
	if err != nil {
		return err
	}
	defer unlock()
	logger := s.logger.With("repository", r.Path)
	if tree != "" {
		builds, err := r.Builds()
		if err != nil {
			return err
		}
		for _, b := range builds {
			arch, why := s.stale(r, b, tree)
			if why == "" {
				continue
			}
			if _, err := r.Remove(b.Name, arch); err != nil {
				return fmt.Errorf("cleanup %s: %w", r.Path, err)
			}
			logger.Info("removed package from repository", "package", b.Name, "arch", arch, "reason", why)
		}
	}
	swept, err := r.SweepOrphans()
	if err != nil {
		return err
	}
	if len(swept) > 0 {
		logger.Info("removed unrecorded files", "files", swept)
		t, _ := r.Type()
		if err := r.MarkDirty(t); err != nil {
			return err
		}
	}
	if r.Dirty() {
		return s.regenerate(ctx, logger, r, rl)
	}
	return nil
}

// stale decides whether build b of repository r is still wanted by the
// sources at tree. It returns the arch to remove ("" = every arch) and the
// reason, or why=="" to keep it. Metadata that cannot be read for any
// reason but absence keeps the packages: a typo in cloud_builder.yml must
// not empty a repository.
func (s *Server) stale(r repo.Repository, b repo.Build, tree string) (arch, why string) {
	project := b.Project
	if message.ValidateProject(project) != nil || path.Base(project) != b.Name ||
		path.Dir(project) != path.Dir(r.Path) {
		project = path.Dir(r.Path) + "/" + b.Name
	}
	if message.ValidateProject(project) != nil {
		return "", ""
	}
	md, err := message.LoadMetadata(filepath.Join(tree, filepath.FromSlash(project)))
	if errors.Is(err, fs.ErrNotExist) {
		return "", "package removed from git"
	}
	if err != nil {
		s.logger.Warn("keeping packages of unreadable metadata", "project", project, "err", err)
		return "", ""
	}
	dist := r.Dist()
	if md.IsImage() {
		found := false
		for _, im := range md.Images {
			found = found || im.Selection.Name == dist
		}
		if !found {
			return "", "image selection removed from cloud_builder.yml"
		}
		if _, ok := md.FindImage(dist, b.Arch); !ok {
			return b.Arch, "arch removed from cloud_builder.yml"
		}
		return "", ""
	}
	found := false
	for _, d := range md.Distributions {
		found = found || d.Dist == dist
	}
	if !found {
		return "", "target removed from cloud_builder.yml"
	}
	if _, ok := md.FindDistribution(dist, b.Arch); !ok {
		return b.Arch, "arch removed from cloud_builder.yml"
	}
	return "", ""
}
