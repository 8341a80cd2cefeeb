package ctl

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/cloud-builder/cb/internal/artifact"
	"github.com/cloud-builder/cb/internal/bearer"
	"github.com/cloud-builder/cb/internal/config"
	"github.com/cloud-builder/cb/internal/message"
)

// HTTPClient returns the client for the runners' artifact endpoints from
// cbctl.yml's artifacts block: client_ca verifies the runners' server
// certificates, tls_cert/tls_key are this client's certificate. It has no
// overall timeout because followed logs stream for as long as a build runs.
func HTTPClient(ep config.Endpoint) (*http.Client, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.ResponseHeaderTimeout = 60 * time.Second
	if ep.ClientCA != "" || ep.TLSCert != "" {
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if ep.ClientCA != "" {
			pem, err := os.ReadFile(ep.ClientCA)
			if err != nil {
				return nil, fmt.Errorf("artifacts.client_ca: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("artifacts.client_ca: %s holds no PEM certificate", ep.ClientCA)
			}
			tc.RootCAs = pool
		}
		if ep.TLSCert != "" {
			cert, err := tls.LoadX509KeyPair(ep.TLSCert, ep.TLSKey)
			if err != nil {
				return nil, fmt.Errorf("artifacts.tls_cert: %w", err)
			}
			tc.Certificates = []tls.Certificate{cert}
		}
		tr.TLSClientConfig = tc
	}
	return &http.Client{Transport: tr}, nil
}

func (c *Client) http() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	return &http.Client{}
}

// artifactBase checks the artifact URL a runner announced. It comes from the
// broker, so only http(s) URLs are used.
func artifactBase(info *message.InfoResponse) (string, error) {
	if info.ArtifactURL == "" {
		if info.UTCModificationTime == message.None && !info.IsRunning {
			return "", kindErr(ErrNotFound, "no runner has built %s", info.Project)
		}
		return "", fmt.Errorf("runner %s announces no artifact endpoint (cb-info without --artifact-url?)", info.SourceIP)
	}
	u, err := url.Parse(info.ArtifactURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("runner %s announces an invalid artifact url %q", info.SourceIP, info.ArtifactURL)
	}
	if !strings.HasSuffix(info.ArtifactURL, "/") {
		return info.ArtifactURL + "/", nil
	}
	return info.ArtifactURL, nil
}

// fetch GETs name below base. A 404 is ErrNotFound.
func (c *Client) fetch(ctx context.Context, base, name string, follow bool) (*http.Response, error) {
	u := base + name
	if follow {
		u += "?follow=1"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("artifact request: %w", err)
	}
	if c.ArtifactToken != "" {
		if err := bearer.Check(u, c.AllowPlainHTTP, "cbctl.artifacts.allow_plain_http"); err != nil {
			return nil, fmt.Errorf("artifact request: %w", err)
		}
		req.Header.Set("Authorization", "Bearer "+c.ArtifactToken)
	}
	resp, err := c.http().Do(req)
	if err != nil {
		return nil, fmt.Errorf("artifact endpoint unreachable: %w", err)
	}
	switch resp.StatusCode {
	case http.StatusOK:
		return resp, nil
	case http.StatusNotFound:
		resp.Body.Close()
		return nil, kindErr(ErrNotFound, "%s: not found on the runner", name)
	case http.StatusUnauthorized, http.StatusForbidden:
		resp.Body.Close()
		return nil, fmt.Errorf("artifact endpoint %s refused the credentials (artifacts.token in cbctl.yml or CB_ARTIFACT_TOKEN)", req.URL.Host)
	}
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	resp.Body.Close()
	return nil, fmt.Errorf("artifact endpoint: GET %s: %s: %s", name, resp.Status, strings.TrimSpace(string(msg)))
}

// BuildLog prints the prepare log (packages) and the build log of the
// newest build of q; with follow it streams them until the build ends.
func (c *Client) BuildLog(ctx context.Context, q Query, follow bool) error {
	info, err := c.locate(ctx, q)
	if err != nil {
		return err
	}
	base, err := artifactBase(info)
	if err != nil {
		return err
	}
	names := []string{artifact.BuildLog}
	if q.Package != nil {
		names = []string{artifact.PrepareLog, artifact.BuildLog}
	}
	printed := 0
	for _, name := range names {
		resp, err := c.fetch(ctx, base, name, follow)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		_, err = io.Copy(c.Stdout, resp.Body)
		resp.Body.Close()
		if err != nil {
			return fmt.Errorf("read %s: %w", name, err)
		}
		printed++
	}
	if printed == 0 {
		return kindErr(ErrNotFound, "runner %s has no log of %s", info.SourceIP, q)
	}
	return nil
}

// BuildDependencies prints the solver file (the solved package list of the
// buildroot or image) of the newest build of q.
func (c *Client) BuildDependencies(ctx context.Context, q Query) error {
	info, err := c.locate(ctx, q)
	if err != nil {
		return err
	}
	base, err := artifactBase(info)
	if err != nil {
		return err
	}
	resp, err := c.fetch(ctx, base, artifact.SolverFile, false)
	if errors.Is(err, ErrNotFound) {
		return kindErr(ErrNotFound, "runner %s has no solver file of %s", info.SourceIP, q)
	}
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(c.Stdout, resp.Body); err != nil {
		return fmt.Errorf("read solver file: %w", err)
	}
	return nil
}

// Downloaded is one file GetBinaries wrote.
type Downloaded struct {
	Path   string `json:"path"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// maxListing bounds the binaries listing document.
const maxListing = 16 << 20

// GetBinaries downloads every binary of the newest build of q into dir
// (flat, by file name, as the original did), verifying each file's size
// and SHA-256 against the runner's listing. Files are written to temporary
// names and renamed only when every file verified, so a failed or corrupted
// transfer leaves nothing behind. It prints and returns what it wrote.
func (c *Client) GetBinaries(ctx context.Context, q Query, dir string) ([]Downloaded, error) {
	if dir == "" {
		return nil, errors.New("--target-dir is required")
	}
	info, err := c.locate(ctx, q)
	if err != nil {
		return nil, err
	}
	base, err := artifactBase(info)
	if err != nil {
		return nil, err
	}
	files, err := c.listing(ctx, base)
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, kindErr(ErrNotFound, "runner %s has no binaries of %s", info.SourceIP, q)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create target dir: %w", err)
	}
	var temps []string
	defer func() {
		for _, t := range temps {
			os.Remove(t)
		}
	}()
	out := make([]Downloaded, 0, len(files))
	var total int64
	for _, f := range files {
		total += f.Size
	}
	var done int64
	for i, f := range files {
		tmp, err := c.download(ctx, base, f, dir)
		if tmp != "" {
			temps = append(temps, tmp)
		}
		if err != nil {
			return nil, err
		}
		done += f.Size
		if c.Stderr != nil {
			fmt.Fprintf(c.Stderr, "[%d/%d] %s (%d bytes, sha256 ok) %d%% of %d bytes\n",
				i+1, len(files), path.Base(f.Name), f.Size, percent(done, total), total)
		}
		out = append(out, Downloaded{Path: filepath.Join(dir, path.Base(f.Name)), Size: f.Size, SHA256: f.SHA256})
	}
	for i, t := range temps {
		if err := os.Rename(t, out[i].Path); err != nil {
			return nil, fmt.Errorf("install %s: %w", out[i].Path, err)
		}
	}
	temps = nil
	return out, PrintJSON(c.Stdout, map[string]any{"target_dir": dir, "files": out})
}

// listing fetches and validates the binaries listing: names come from the
// network and become local file names.
func (c *Client) listing(ctx context.Context, base string) ([]artifact.File, error) {
	resp, err := c.fetch(ctx, base, artifact.Binaries, false)
	if errors.Is(err, ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var l artifact.Listing
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxListing)).Decode(&l); err != nil {
		return nil, fmt.Errorf("binaries listing: %w", err)
	}
	seen := map[string]string{}
	for _, f := range l.Files {
		for _, el := range strings.Split(f.Name, "/") {
			if err := message.ValidateName(el); err != nil {
				return nil, fmt.Errorf("binaries listing: file %q: %w", f.Name, err)
			}
		}
		if f.Size < 0 || len(f.SHA256) != sha256.Size*2 {
			return nil, fmt.Errorf("binaries listing: file %q: bad size or sha256", f.Name)
		}
		b := path.Base(f.Name)
		if other, dup := seen[b]; dup {
			return nil, fmt.Errorf("binaries listing: %s and %s have the same file name", other, f.Name)
		}
		seen[b] = f.Name
	}
	return l.Files, nil
}

// download writes f to a temporary file in dir and verifies it. It returns
// the temporary file's name (also on failure, for cleanup).
func (c *Client) download(ctx context.Context, base string, f artifact.File, dir string) (string, error) {
	resp, err := c.fetch(ctx, base, artifact.Binaries+f.Name, false)
	if err != nil {
		return "", fmt.Errorf("download %s: %w", f.Name, err)
	}
	defer resp.Body.Close()
	tmp, err := os.CreateTemp(dir, "."+path.Base(f.Name)+".*.partial")
	if err != nil {
		return "", fmt.Errorf("download %s: %w", f.Name, err)
	}
	name := tmp.Name()
	h := sha256.New()
	// One byte more than announced reveals an overlong transfer.
	n, err := io.Copy(io.MultiWriter(tmp, h), io.LimitReader(resp.Body, f.Size+1))
	if err == nil {
		// CreateTemp makes the file private; a downloaded package is
		// as readable as any file the user writes.
		err = tmp.Chmod(0o644)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	switch {
	case err != nil:
		return name, fmt.Errorf("download %s: %w", f.Name, err)
	case n != f.Size:
		return name, fmt.Errorf("download %s: got %d bytes, the runner announced %d", f.Name, n, f.Size)
	case hex.EncodeToString(h.Sum(nil)) != f.SHA256:
		return name, fmt.Errorf("download %s: SHA-256 mismatch", f.Name)
	}
	return name, nil
}

func percent(done, total int64) int64 {
	if total == 0 {
		return 100
	}
	return done * 100 / total
}
