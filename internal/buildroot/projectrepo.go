package buildroot

import (
	"bufio"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"pault.ag/go/debian/control"

	"github.com/cloud-builder/cb/internal/atomicfile"
	"github.com/cloud-builder/cb/internal/message"
	"github.com/cloud-builder/cb/internal/proc"
	"github.com/cloud-builder/cb/internal/target"
)

// ProjectRepos adds the collector's repositories of the target's own
// project to its buildroot, so a package builds against the packages its
// project published: <URL>/<project parent>/<dist> (unless the package's
// .cb/depsolver.yml opts out with project_repository: false) plus the
// repositories that file lists. apt verifies them with the collector's
// signing key.
type ProjectRepos struct {
	URL string // the collector's base URL
	// KeyFile is the collector's public signing key (binary or armored).
	// Empty: <URL>/repo.gpg is fetched once and pinned below the cache
	// directory (trust on first use).
	KeyFile string
}

// projectRepositories returns the project repositories for t that exist
// (a repository not published yet is left out: nothing to build against).
func projectRepositories(ctx context.Context, pr *ProjectRepos, cacheDir, pkgDir string, t target.Target, p *Profile, kind string, deps []string, step func(string, ...any)) ([]Repository, error) {
	if pr == nil || pr.URL == "" {
		return nil, nil
	}
	if kind == KindSpec || p.PackageManager != "apt" {
		step("project repositories: not used (they are apt repositories of Debian packages; this is a %s build with %s)", kind, p.PackageManager)
		return nil, nil
	}
	paths, err := projectRepoPaths(pkgDir, t, step)
	if err != nil {
		return nil, err
	}
	if len(paths) == 0 {
		return nil, nil
	}
	key, err := collectorKey(ctx, pr, cacheDir)
	if err != nil {
		return nil, err
	}
	base := strings.TrimRight(pr.URL, "/")
	var out []Repository
	for _, rp := range paths {
		r := Repository{Type: RepoAptDeb, Path: base + "/" + rp, Distribution: path.Base(rp), Components: []string{"main"},
			Alias: "cb-project", SignedBy: key}
		if err := validateURL(r.Path); err != nil {
			return nil, err
		}
		if _, err := IndexDigest(ctx, r); err != nil {
			if errors.Is(err, errMissing) || errors.Is(err, fs.ErrNotExist) {
				step("project repository %s: not published yet", rp)
				continue
			}
			return nil, fmt.Errorf("project repository %s: %w", rp, err)
		}
		used, digest, err := neededFrom(ctx, r, p.Arch, append(append(slices.Clone(deps), p.Packages...), p.Bootstrap...))
		if err != nil {
			return nil, fmt.Errorf("project repository %s: %w", rp, err)
		}
		if len(used) == 0 {
			// Nothing of it is needed: leaving it out keeps the root (and
			// its cache key) independent of the project's other packages.
			step("project repository %s: nothing needed from it", rp)
			continue
		}
		r.KeyDigest = digest
		step("project repository %s (signed-by %s): %s", r.Path, key, strings.Join(used, " "))
		out = append(out, r)
	}
	return out, nil
}

// depsolverConfig reads the package's .cb/depsolver.yml (defaults when
// it has none).
func depsolverConfig(pkgDir string) (*message.DepsolverConfig, error) {
	cfg := message.DefaultDepsolverConfig()
	data, err := readInside(pkgDir, message.DepsolverFile, maxDescription)
	switch {
	case err == nil:
		if cfg, err = message.DecodeDepsolverConfig(data); err != nil {
			return cfg, fmt.Errorf("%s: %w", message.DepsolverFile, err)
		}
	case !errors.Is(err, fs.ErrNotExist):
		return cfg, err
	}
	return cfg, nil
}

// collectorKey returns the path of the collector's key: a copy in the
// cache directory, named by its content, which apt's unprivileged
// download user can read wherever the configured file lives.
func collectorKey(ctx context.Context, pr *ProjectRepos, cacheDir string) (string, error) {
	var data []byte
	if pr.KeyFile != "" {
		f, err := os.Open(pr.KeyFile)
		if err != nil {
			return "", fmt.Errorf("collector key: %w", err)
		}
		defer f.Close()
		if data, err = io.ReadAll(io.LimitReader(f, 1<<20)); err != nil {
			return "", fmt.Errorf("collector key: %w", err)
		}
	} else {
		// Trust on first use: the key is fetched once per collector URL
		// and kept.
		pin := filepath.Join(cacheDir, fmt.Sprintf("collector-url-%.16x.gpg", sha256.Sum256([]byte(pr.URL))))
		if _, err := os.Stat(pin); err == nil {
			return pin, nil
		}
		u := strings.TrimRight(pr.URL, "/") + "/repo.gpg"
		body, err := openKeyURL(ctx, u)
		if err != nil {
			return "", fmt.Errorf("collector key: %w", err)
		}
		defer body.Close()
		if data, err = io.ReadAll(io.LimitReader(body, 1<<20)); err != nil {
			return "", fmt.Errorf("collector key: %w", err)
		}
		if err := os.MkdirAll(cacheDir, 0o755); err != nil {
			return "", err
		}
		if err := atomicfile.WriteFile(pin, data, 0o644); err != nil {
			return "", fmt.Errorf("pin collector key: %w", err)
		}
		return pin, nil
	}
	if len(data) == 0 {
		return "", fmt.Errorf("collector key %s is empty", pr.KeyFile)
	}
	p := filepath.Join(cacheDir, fmt.Sprintf("collector-%.16x.gpg", sha256.Sum256(data)))
	if _, err := os.Stat(p); err == nil {
		return p, nil
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return "", err
	}
	if err := atomicfile.WriteFile(p, data, 0o644); err != nil {
		return "", fmt.Errorf("copy collector key: %w", err)
	}
	return p, nil
}

// keyRetry bounds how long a build waits for a collector that does not
// answer yet (it starts beside the runner, or restarts): a build should
// not fail on that, and a collector that answers "not found" is not
// waited for.
var keyRetry = time.Minute

// openKeyURL opens u, retrying network errors for keyRetry.
func openKeyURL(ctx context.Context, u string) (io.ReadCloser, error) {
	deadline := time.Now().Add(keyRetry)
	for {
		body, err := openURL(ctx, u)
		if err == nil || errors.Is(err, errMissing) || time.Now().After(deadline) {
			return body, err
		}
		if !proc.Sleep(ctx, time.Second) {
			return nil, fmt.Errorf("%s: %w", u, context.Cause(ctx))
		}
	}
}

// neededFrom reads the repository's Packages index for arch and returns
// the packages of it the root will install (the needed names and,
// transitively, their dependencies in the same repository) and a digest
// of their name, version and file digest, which stands for the repository
// in the cache key.
func neededFrom(ctx context.Context, r Repository, arch string, needed []string) ([]string, string, error) {
	u := strings.TrimRight(r.Path, "/") + "/dists/" + r.Distribution + "/main/binary-" + DebianArch(arch) + "/Packages"
	body, err := openURL(ctx, u)
	if err != nil {
		if errors.Is(err, errMissing) || errors.Is(err, fs.ErrNotExist) {
			return nil, "", nil
		}
		return nil, "", err
	}
	defer body.Close()
	idx, err := control.ParseBinaryIndex(bufio.NewReader(io.LimitReader(body, maxIndex)))
	if err != nil {
		return nil, "", fmt.Errorf("parse %s: %w", u, err)
	}
	provides := map[string][]int{}
	for i, p := range idx {
		provides[p.Package] = append(provides[p.Package], i)
		prov := p.GetProvides()
		for _, pp := range prov.GetAllPossibilities() {
			provides[pp.Name] = append(provides[pp.Name], i)
		}
	}
	used := map[int]bool{}
	queue := slices.Clone(needed)
	for len(queue) > 0 {
		n := queue[0]
		queue = queue[1:]
		for _, i := range provides[n] {
			if used[i] {
				continue
			}
			used[i] = true
			dep := idx[i].GetDepends()
			for _, pp := range dep.GetAllPossibilities() {
				queue = append(queue, pp.Name)
			}
			pre := idx[i].GetPreDepends()
			for _, pp := range pre.GetAllPossibilities() {
				queue = append(queue, pp.Name)
			}
		}
	}
	var lines, names []string
	for i := range used {
		p := idx[i]
		lines = append(lines, p.Package+" "+p.Version.String()+" "+p.Architecture.String()+" "+p.SHA256)
		names = append(names, p.Package+"="+p.Version.String())
	}
	slices.Sort(lines)
	slices.Sort(names)
	h := sha256.New()
	for _, l := range lines {
		fmt.Fprintln(h, l)
	}
	return names, fmt.Sprintf("%x", h.Sum(nil)), nil
}
