package collect

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/cloud-builder/cb/internal/bearer"
	"github.com/cloud-builder/cb/internal/proc"
	"github.com/cloud-builder/cb/internal/upload"
)

var _ upload.Uploader = (*Client)(nil)

// Client pushes builds to a collector.
type Client struct {
	URL string // collector base URL, e.g. https://repo:8080
	// Token is the bearer credential: an upload ticket
	// (upload.MintTicket), or the plain upload token.
	Token string
	// AllowPlainHTTP lets the token go over plain HTTP to a host that is
	// not loopback (collector.allow_plain_http of the runner config);
	// otherwise such an upload fails before it connects.
	AllowPlainHTTP bool
	HTTPClient     *http.Client // http.DefaultClient when nil; set it for client certificates
	Logger         *slog.Logger
	// Attempts bounds the tries of one upload (default 5); Backoff is the
	// first pause between them, doubled each time (default 1s).
	Attempts int
	Backoff  time.Duration
}

// Error is a refusal by the collector: retrying the same upload cannot
// help.
type Error struct {
	Status  int
	Message string
}

func (e *Error) Error() string {
	return fmt.Sprintf("collector refused upload (HTTP %d): %s", e.Status, e.Message)
}

// Result is the collector's answer to an accepted upload.
type Result struct {
	Status     string `json:"status"` // "published" or "unchanged"
	Repository string `json:"repository"`
	Files      int    `json:"files"`
}

// Upload sends u and waits until the collector has published it. Sizes and
// SHA-256 sums go into the manifest, so the collector can verify every
// byte before anything becomes visible. Transport errors and 5xx answers
// are retried with backoff; a 4xx answer fails at once with *Error.
func (c *Client) Upload(ctx context.Context, u upload.Upload) error {
	_, err := c.UploadResult(ctx, u)
	return err
}

// UploadResult is Upload returning the collector's answer.
func (c *Client) UploadResult(ctx context.Context, u upload.Upload) (*Result, error) {
	logger := c.Logger
	if logger == nil {
		logger = slog.Default()
	}
	logger = logger.With("component", "collect-client", "request_id", u.RequestID, "repository", u.RepoPath)
	m := &Manifest{Version: ManifestVersion, RequestID: u.RequestID, Project: u.Project, Name: u.Name,
		RepoPath: u.RepoPath, Arch: u.Arch, RepoType: u.RepoType}
	for _, f := range u.Files {
		size, sum, err := hashFile(f.Path)
		if err != nil {
			return nil, fmt.Errorf("upload %s: %w", u.Name, err)
		}
		m.Files = append(m.Files, ManifestFile{Name: f.Name, Size: size, SHA256: sum})
	}
	if err := m.validate(-1); err != nil {
		return nil, fmt.Errorf("upload %s: %w", u.Name, err)
	}
	if c.Token != "" {
		if err := bearer.Check(c.URL, c.AllowPlainHTTP, "collector.allow_plain_http"); err != nil {
			return nil, fmt.Errorf("upload %s: %w", u.Name, err)
		}
	}
	attempts, backoff := c.Attempts, c.Backoff
	if attempts <= 0 {
		attempts = 5
	}
	if backoff <= 0 {
		backoff = time.Second
	}
	var lastErr error
	for i := 1; i <= attempts; i++ {
		res, err := c.send(ctx, m, u.Files)
		if err == nil {
			logger.Info("upload published", "status", res.Status, "files", res.Files, "attempt", i)
			return res, nil
		}
		var refused *Error
		if errors.As(err, &refused) && refused.Status < 500 &&
			refused.Status != http.StatusRequestTimeout && refused.Status != http.StatusTooManyRequests {
			return nil, err
		}
		lastErr = err
		if ctx.Err() != nil || i == attempts {
			break
		}
		logger.Warn("upload failed, retrying", "attempt", i, "err", err, "wait", backoff)
		proc.Sleep(ctx, backoff)
		backoff *= 2
	}
	if ctx.Err() != nil {
		return nil, fmt.Errorf("upload %s: %w", u.Name, context.Cause(ctx))
	}
	return nil, fmt.Errorf("upload %s: giving up after %d attempts: %w", u.Name, attempts, lastErr)
}

func (c *Client) send(ctx context.Context, m *Manifest, files []upload.File) (*Result, error) {
	manifest, err := m.encode()
	if err != nil {
		return nil, err
	}
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(writeStream(pw, manifest, m, files)) }()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(c.URL, "/")+upload.Path, pr)
	if err != nil {
		pr.Close()
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-tar")
	// The collector checks credentials before it reads the body; with
	// 100-continue a refused upload costs no transfer, and its 401 is not
	// lost to a connection reset while the body is still being sent.
	req.Header.Set("Expect", "100-continue")
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	hc := c.HTTPClient
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	pr.Close() // stops the writer when the server answered early
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		msg := strings.TrimSpace(string(body))
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			msg = e.Error
		}
		return nil, &Error{Status: resp.StatusCode, Message: msg}
	}
	var res Result
	if err := json.Unmarshal(body, &res); err != nil {
		return nil, fmt.Errorf("decode collector answer: %w", err)
	}
	return &res, nil
}

// writeStream writes the tar stream: the manifest, then each file with the
// size the manifest promised (a file that changed since hashing makes the
// collector refuse the upload rather than publish something else).
func writeStream(w io.Writer, manifest []byte, m *Manifest, files []upload.File) error {
	tw := tar.NewWriter(w)
	hdr := &tar.Header{Name: ManifestName, Mode: 0o644, Size: int64(len(manifest)), Typeflag: tar.TypeReg}
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	if _, err := tw.Write(manifest); err != nil {
		return err
	}
	for i, f := range files {
		fh, err := os.Open(f.Path)
		if err != nil {
			return err
		}
		hdr := &tar.Header{Name: f.Name, Mode: 0o644, Size: m.Files[i].Size, Typeflag: tar.TypeReg}
		if err := tw.WriteHeader(hdr); err != nil {
			fh.Close()
			return err
		}
		_, err = io.CopyN(tw, fh, m.Files[i].Size)
		fh.Close()
		if err != nil {
			return fmt.Errorf("send %s: %w", f.Name, err)
		}
	}
	return tw.Close()
}

func hashFile(p string) (int64, string, error) {
	fh, err := os.Open(p)
	if err != nil {
		return 0, "", err
	}
	defer fh.Close()
	h := sha256.New()
	n, err := io.Copy(h, fh)
	if err != nil {
		return 0, "", fmt.Errorf("hash %s: %w", p, err)
	}
	return n, hex.EncodeToString(h.Sum(nil)), nil
}
