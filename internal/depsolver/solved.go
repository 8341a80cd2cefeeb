package depsolver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/cloud-builder/cb/internal/artifact"
	"github.com/cloud-builder/cb/internal/bearer"
	"github.com/cloud-builder/cb/internal/message"
	"github.com/cloud-builder/cb/internal/target"
)

// Bounds of a solver file fetched from a runner's artifact endpoint. A
// solver file lists the packages of one buildroot, some tens of KiB.
const (
	maxSolverBytes = 4 << 20
	solverTimeout  = 30 * time.Second
)

// solved returns the solved buildroot packages of target id's finished
// build: from the solver file below the runner root when the depsolver
// runs beside the runner, else from the artifact endpoint the response's
// record named. nil when neither has it. The caller holds s.mu.
func (s *Service) solved(ctx context.Context, id, solverFile, artifactURL string) map[string]string {
	if solverFile == "" || solverFile == message.None {
		return nil
	}
	if out := s.readSolved(solverFile); out != nil {
		return out
	}
	if artifactURL == "" {
		return nil
	}
	t := s.eng.Target(id)
	if t == nil {
		return nil
	}
	sel := t.Dist
	if t.Image {
		sel = t.Selection
	}
	out, err := s.fetchSolved(ctx, artifactURL, t.Project, sel, t.Arch)
	if err != nil {
		s.log.Warn("solver file not read from the runner's artifact endpoint; base repository changes do not rebuild this target until its next build",
			"target", id, "err", err)
		return nil
	}
	return out
}

// fetchSolved reads the solver file of project@sel.arch from the artifact
// URL a runner put in its response's record header. The URL comes from the
// broker: it must be an http(s) URL of exactly that target's artifacts
// (artifact.TargetURL), redirects are not followed and the body is capped.
// The token goes over plain HTTP only to loopback unless allowed, as
// cb-ctl's and the web UI's.
func (s *Service) fetchSolved(ctx context.Context, artifactURL, project, sel, arch string) (map[string]string, error) {
	t, err := target.New("", project, sel, arch)
	if err != nil {
		return nil, err
	}
	u, err := checkArtifactURL(artifactURL, t)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, solverTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u+artifact.SolverFile, nil)
	if err != nil {
		return nil, err
	}
	if s.cfg.ArtifactToken != "" {
		if err := bearer.Check(u, s.cfg.ArtifactAllowPlainHTTP, "cbctl.artifacts.allow_plain_http"); err != nil {
			return nil, err
		}
		req.Header.Set("Authorization", "Bearer "+s.cfg.ArtifactToken)
	}
	c := http.Client{}
	if s.cfg.ArtifactClient != nil {
		c = *s.cfg.ArtifactClient
	}
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("artifact endpoint: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("artifact endpoint: %s: %s", u+artifact.SolverFile, resp.Status)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxSolverBytes+1))
	if err != nil {
		return nil, fmt.Errorf("artifact endpoint: %w", err)
	}
	if len(data) > maxSolverBytes {
		return nil, fmt.Errorf("artifact endpoint: solver file larger than %d bytes", maxSolverBytes)
	}
	return parseSolved(data)
}

// checkArtifactURL validates an artifact URL from a record header for
// target t and returns it with a trailing slash.
func checkArtifactURL(raw string, t target.Target) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("invalid artifact url %q: %w", raw, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("invalid artifact url %q: want http(s)://host[:port]/...", raw)
	}
	if !strings.HasSuffix(raw, "/") {
		raw += "/"
	}
	// The header names the target's own artifacts: its path ends with
	// the target's route (TargetURL of an empty base).
	if !strings.HasSuffix(raw, artifact.TargetURL("", t)) {
		return "", fmt.Errorf("artifact url %q does not name %s", raw, t.ID())
	}
	return raw, nil
}

// parseSolved decodes a solver file to name -> version.
func parseSolved(data []byte) (map[string]string, error) {
	var solved struct {
		Packages map[string]struct {
			Version string `json:"version"`
		} `json:"packages"`
	}
	if err := json.Unmarshal(data, &solved); err != nil {
		return nil, fmt.Errorf("solver file: %w", err)
	}
	if solved.Packages == nil {
		return nil, errors.New("solver file: no packages")
	}
	out := make(map[string]string, len(solved.Packages))
	for n, p := range solved.Packages {
		out[n] = p.Version
	}
	return out, nil
}
