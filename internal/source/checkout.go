package source

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// ErrNoCheckout is returned by [Pull] when dir holds no git checkout.
var ErrNoCheckout = errors.New("no source checkout")

// Update brings the checkout at dir to the head of branch of url: it clones
// when dir is missing or not a checkout, otherwise fetches the branch and
// resets the work tree hard to it. It never merges, so a force-push or a
// rebase upstream cannot leave a conflict behind. branch "" is the remote's
// default branch. It returns the new head commit.
func Update(ctx context.Context, dir, url, branch string, logger *slog.Logger) (string, error) {
	if err := ValidateURL(url); err != nil {
		return "", err
	}
	if branch != "" {
		if err := ValidateBranch(branch); err != nil {
			return "", err
		}
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	creds, err := credentialsFor(url)
	if err != nil {
		return "", fmt.Errorf("git credentials: %w", err)
	}
	l, err := lockCheckout(ctx, dir, true)
	if err != nil {
		return "", err
	}
	defer l.unlock()
	c := &checkout{dir: dir, url: url, creds: creds, log: logger.With("checkout", dir, "url", redact(url))}
	return c.update(ctx, branch)
}

// Pull updates the existing checkout at dir from its own origin, to the
// head of the branch it has checked out (the remote's default branch when
// detached). cb-scheduler calls it before a rebuild; the checkout lock makes
// that safe while cb-fetch updates the same checkout.
func Pull(ctx context.Context, dir string, logger *slog.Logger) error {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	l, err := lockCheckout(ctx, dir, true)
	if err != nil {
		return err
	}
	defer l.unlock()
	c := &checkout{dir: dir, log: logger.With("checkout", dir)}
	if !c.isCheckout(ctx) {
		return fmt.Errorf("pull %s: %w", dir, ErrNoCheckout)
	}
	out, err := c.git(ctx, "remote", "get-url", "origin")
	if err != nil {
		return fmt.Errorf("pull %s: %w", dir, err)
	}
	c.url = strings.TrimSpace(string(out))
	if err := ValidateURL(c.url); err != nil {
		return fmt.Errorf("pull %s: origin: %w", dir, err)
	}
	if c.creds, err = credentialsFor(c.url); err != nil {
		return fmt.Errorf("git credentials: %w", err)
	}
	c.log = c.log.With("url", redact(c.url))
	// A detached HEAD (exit status 1, no output) falls back to the
	// remote's default branch.
	branch := ""
	if out, err := c.git(ctx, "symbolic-ref", "--quiet", "--short", "HEAD"); err == nil {
		branch = strings.TrimSpace(string(out))
		if ValidateBranch(branch) != nil {
			branch = ""
		}
	}
	_, err = c.update(ctx, branch)
	return err
}

// Head returns the commit checked out at dir.
func Head(ctx context.Context, dir string) (string, error) {
	l, err := lockCheckout(ctx, dir, false)
	if err != nil {
		return "", err
	}
	defer l.unlock()
	c := &checkout{dir: dir}
	return c.head(ctx)
}

// checkout is one update of the checkout at dir, done under its lock.
type checkout struct {
	dir   string
	url   string
	creds *Credentials
	log   *slog.Logger
}

func (c *checkout) git(ctx context.Context, args ...string) ([]byte, error) {
	return gitCmd{dir: c.dir, args: args, creds: c.creds, scrub: c.secrets()}.run(ctx)
}

// secrets are the parts of the URL that must not reach an error message.
func (c *checkout) secrets() []string {
	u, err := url.Parse(c.url)
	if err != nil || u.User == nil {
		return nil
	}
	if p, ok := u.User.Password(); ok {
		return []string{p}
	}
	return nil
}

func (c *checkout) update(ctx context.Context, branch string) (string, error) {
	if branch == "" {
		b, err := c.remoteDefaultBranch(ctx)
		if err != nil {
			return "", err
		}
		branch = b
	}
	c.log = c.log.With("branch", branch)
	if !c.isCheckout(ctx) {
		// The clone leaves origin/<branch> at the remote's head.
		if err := c.clone(ctx, branch); err != nil {
			return "", err
		}
	} else {
		if err := c.setOrigin(ctx); err != nil {
			return "", err
		}
		// A failed fetch is most likely the server or the network; the
		// checkout stays as it is and the caller retries later.
		if _, err := c.git(ctx, "fetch", "--quiet", "--prune", "--no-tags", "--no-recurse-submodules",
			"origin", "+refs/heads/"+branch+":refs/remotes/origin/"+branch); err != nil {
			return "", fmt.Errorf("fetch %s of %s: %w", branch, redact(c.url), err)
		}
	}
	head, err := c.reset(ctx, branch)
	if err == nil {
		return head, nil
	}
	// The remote answered, so a failing reset means a damaged checkout
	// (corrupt index or objects, a lock left by a killed git). A fresh
	// clone replaces it.
	c.log.Warn("checkout is damaged, cloning it again", "err", err)
	if err := c.clone(ctx, branch); err != nil {
		return "", err
	}
	return c.reset(ctx, branch)
}

// reset points the local branch and the work tree at origin/branch and
// removes everything git does not track, so the checkout mirrors the commit.
func (c *checkout) reset(ctx context.Context, branch string) (string, error) {
	remote := "refs/remotes/origin/" + branch
	if _, err := c.git(ctx, "checkout", "--quiet", "--force", "-B", branch, remote); err != nil {
		return "", fmt.Errorf("reset checkout to %s: %w", branch, err)
	}
	if _, err := c.git(ctx, "clean", "-ffdxq"); err != nil {
		return "", fmt.Errorf("clean checkout: %w", err)
	}
	head, err := c.head(ctx)
	if err != nil {
		return "", err
	}
	c.log.Debug("checkout updated", "commit", head)
	return head, nil
}

func (c *checkout) head(ctx context.Context) (string, error) {
	out, err := c.git(ctx, "rev-parse", "--verify", "--quiet", "HEAD^{commit}")
	if err != nil {
		return "", fmt.Errorf("read head of %s: %w", c.dir, err)
	}
	id := strings.TrimSpace(string(out))
	if !commitRE.MatchString(id) {
		return "", fmt.Errorf("read head of %s: unexpected output %q", c.dir, id)
	}
	return id, nil
}

// isCheckout reports whether dir is the top of a usable git work tree. A
// directory inside some other repository is not: rev-parse would answer for
// the enclosing one.
func (c *checkout) isCheckout(ctx context.Context) bool {
	if fi, err := os.Stat(filepath.Join(c.dir, ".git")); err != nil || !fi.IsDir() {
		return false
	}
	out, err := c.git(ctx, "rev-parse", "--git-dir")
	return err == nil && strings.TrimSpace(string(out)) == ".git"
}

// setOrigin makes origin point at the configured URL, so changing
// --project reuses the objects already there instead of cloning anew.
func (c *checkout) setOrigin(ctx context.Context) error {
	out, err := c.git(ctx, "remote", "get-url", "origin")
	if err == nil && strings.TrimSpace(string(out)) == c.url {
		return nil
	}
	if err != nil {
		_, err = c.git(ctx, "remote", "add", "origin", c.url)
	} else {
		_, err = c.git(ctx, "remote", "set-url", "origin", c.url)
	}
	if err != nil {
		return fmt.Errorf("set origin of %s: %w", c.dir, err)
	}
	c.log.Info("origin of the checkout changed")
	return nil
}

// clone clones into a temporary directory next to dir and renames it into
// place, so a clone that fails half way (server gone, disk full, killed)
// leaves the previous checkout, broken or not, and no half-written one.
func (c *checkout) clone(ctx context.Context, branch string) error {
	dir := filepath.Clean(c.dir)
	parent, base := filepath.Dir(dir), filepath.Base(dir)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return fmt.Errorf("clone: %w", err)
	}
	// Leftovers of a clone killed earlier; the lock guarantees nobody
	// else is cloning right now.
	if old, _ := filepath.Glob(filepath.Join(parent, base+".clone-*")); len(old) > 0 {
		for _, o := range old {
			_ = os.RemoveAll(o)
		}
	}
	tmp, err := os.MkdirTemp(parent, base+".clone-")
	if err != nil {
		return fmt.Errorf("clone: %w", err)
	}
	defer os.RemoveAll(tmp)
	c.log.Info("cloning sources")
	if _, err := (gitCmd{dir: parent, creds: c.creds, scrub: c.secrets(), args: []string{
		"clone", "--quiet", "--no-tags", "--no-checkout", "--single-branch", "--origin", "origin",
		"--branch", branch, "--", c.url, tmp,
	}}).run(ctx); err != nil {
		return fmt.Errorf("clone %s: %w", redact(c.url), err)
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove old checkout: %w", err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		return fmt.Errorf("clone: %w", err)
	}
	return nil
}

// remoteDefaultBranch asks the remote which branch its HEAD points at.
func (c *checkout) remoteDefaultBranch(ctx context.Context) (string, error) {
	parent := filepath.Dir(filepath.Clean(c.dir))
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return "", fmt.Errorf("find default branch: %w", err)
	}
	out, err := gitCmd{dir: parent, creds: c.creds, scrub: c.secrets(),
		args: []string{"ls-remote", "--symref", "--", c.url, "HEAD"}}.run(ctx)
	if err != nil {
		return "", fmt.Errorf("find default branch of %s: %w", redact(c.url), err)
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		// ref: refs/heads/main<TAB>HEAD
		ref, ok := strings.CutPrefix(sc.Text(), "ref: refs/heads/")
		if !ok {
			continue
		}
		b, _, _ := strings.Cut(ref, "\t")
		if err := ValidateBranch(b); err != nil {
			return "", fmt.Errorf("default branch of %s: %w", redact(c.url), err)
		}
		return b, nil
	}
	return "", fmt.Errorf("find default branch of %s: the remote names none (empty repository?)", redact(c.url))
}

// ValidateURL checks a repository URL from a flag or a settings file before
// it reaches git's command line: no option lookalikes, no control
// characters, and only transports git is allowed to use here.
func ValidateURL(u string) error {
	switch {
	case u == "":
		return errors.New("repository URL is empty")
	case strings.HasPrefix(u, "-"):
		return fmt.Errorf("repository URL %q starts with '-'", u)
	case strings.ContainsFunc(u, func(r rune) bool { return r < 0x20 || r == 0x7f }):
		return fmt.Errorf("repository URL %q contains a control character", u)
	case helperRE.MatchString(u):
		// transport::address runs a remote helper of that name.
		return fmt.Errorf("repository URL %q: remote helpers (::) are not allowed", redact(u))
	}
	if scheme, _, ok := strings.Cut(u, "://"); ok {
		switch scheme {
		case "file", "git", "http", "https", "ssh", "git+ssh", "ssh+git":
		default:
			return fmt.Errorf("repository URL %q: scheme %q is not allowed", redact(u), scheme)
		}
	}
	return nil
}

// helperRE matches git's <transport>::<address> remote helper syntax.
var helperRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9+.-]*::`)

// branchRE is a conservative subset of git's ref name rules that is also
// safe as an argument and a path.
var branchRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._/+-]{0,199}$`)

// ValidateBranch checks a branch name from a flag, a settings file or the
// remote.
func ValidateBranch(b string) error {
	if !branchRE.MatchString(b) || strings.Contains(b, "..") || strings.Contains(b, "//") ||
		strings.HasSuffix(b, "/") || strings.HasSuffix(b, ".") || strings.HasSuffix(b, ".lock") ||
		strings.Contains(b, "/.") {
		return fmt.Errorf("invalid branch name %q", b)
	}
	return nil
}
