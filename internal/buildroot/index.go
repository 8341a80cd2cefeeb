package buildroot

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// maxIndex bounds a repository index download.
const maxIndex = 64 << 20

var indexClient = &http.Client{Timeout: 2 * time.Minute}

// IndexDigest returns the sha256 of the repository's current index: for
// apt-deb the InRelease (or Release) of its distribution, for rpm-md the
// repomd.xml. A changed archive changes the digest and so the cache key.
func IndexDigest(ctx context.Context, r Repository) (string, error) {
	base := strings.TrimRight(r.Path, "/")
	var candidates []string
	switch r.Type {
	case RepoAptDeb:
		dir := base + "/"
		if r.Distribution != "" {
			dir = base + "/dists/" + r.Distribution + "/"
		}
		candidates = []string{dir + "InRelease", dir + "Release"}
	case RepoRpmMd:
		candidates = []string{base + "/repodata/repomd.xml"}
	default:
		return "", fmt.Errorf("repository %s: unsupported type %q", r.Path, r.Type)
	}
	var errs []error
	for _, c := range candidates {
		sum, err := fetchDigest(ctx, c)
		if err == nil {
			return sum, nil
		}
		errs = append(errs, err)
	}
	return "", fmt.Errorf("fetch repository index: %w", errors.Join(errs...))
}

var errMissing = errors.New("not found")

// openURL opens a file: or http(s): URL.
func openURL(ctx context.Context, u string) (io.ReadCloser, error) {
	pu, err := url.Parse(u)
	if err != nil {
		return nil, err
	}
	switch pu.Scheme {
	case "file":
		f, err := os.Open(pu.Path)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", u, err)
		}
		return f, nil
	case "http", "https":
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return nil, err
		}
		resp, err := indexClient.Do(req)
		if err != nil {
			return nil, err
		}
		if resp.StatusCode != http.StatusOK {
			resp.Body.Close()
			return nil, fmt.Errorf("%s: %s: %w", u, resp.Status, errMissing)
		}
		return resp.Body, nil
	}
	return nil, fmt.Errorf("%s: unsupported scheme", u)
}

func fetchDigest(ctx context.Context, u string) (string, error) {
	body, err := openURL(ctx, u)
	if err != nil {
		return "", err
	}
	defer body.Close()
	h := sha256.New()
	n, err := io.Copy(h, io.LimitReader(body, maxIndex+1))
	if err != nil {
		return "", fmt.Errorf("%s: %w", u, err)
	}
	if n > maxIndex {
		return "", fmt.Errorf("%s: larger than %d bytes", u, maxIndex)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
