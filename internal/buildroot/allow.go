package buildroot

import (
	"errors"
	"fmt"
	"net/url"
	"path"
	"slices"
	"strings"
)

// ErrNotAllowed means a description names a repository or signing key
// that the runner does not trust. Its maintainer scripts would run during
// the preparation, so only repositories the runner operator chose are
// accepted: the runner's own apt sources, the collector's repositories and
// the configured extra ones.
var ErrNotAllowed = errors.New("not allowed")

// AllowSetting names the setting that extends the allow-list, for error
// messages.
const AllowSetting = "sandbox.allow_repositories of the runner config"

// SystemKeyrings is where signing keys named by file:// must be: keyrings
// installed on the runner by its packages, not files from git.
const SystemKeyrings = "/usr/share/keyrings/"

// CheckRepositories refuses every repository of p whose URL is not at or
// below one of allowed (URLs; scheme, host and port must match exactly, the
// path must start with the allowed path), and every signing key that is
// neither a system keyring nor below an allowed URL. A file:// repository
// from git is therefore only accepted when the runner's own apt sources
// name that directory.
func CheckRepositories(p *Profile, allowed []string) error {
	for _, r := range p.Repositories {
		if !allowedURL(r.Path, allowed) {
			return fmt.Errorf("repository %s is %w on this runner (add it to %s to allow it; allowed are the runner's apt sources and the collector's repositories: %s)",
				r.Path, ErrNotAllowed, AllowSetting, strings.Join(allowed, ", "))
		}
		for _, k := range r.SigningKeys {
			if systemKeyring(k) || allowedURL(k, allowed) {
				continue
			}
			return fmt.Errorf("signing key %s of repository %s is %w (use a keyring below %s or a key below a repository allowed by %s)",
				k, r.Path, ErrNotAllowed, SystemKeyrings, AllowSetting)
		}
	}
	return nil
}

func systemKeyring(k string) bool {
	u, err := url.Parse(k)
	if err != nil || u.Scheme != "file" || u.Host != "" || u.RawQuery != "" || u.Fragment != "" {
		return false
	}
	return strings.HasPrefix(u.Path, SystemKeyrings) && path.Clean(u.Path) == u.Path && !strings.Contains(u.Path, "..")
}

// allowedURL compares parsed URLs, so that user info, a different port or
// a ".." in the path cannot pass for an allowed prefix.
func allowedURL(raw string, allowed []string) bool {
	u, err := url.Parse(raw)
	// u.Path is decoded: an escaped dot or slash cannot hide a "..".
	if err != nil || u.User != nil || u.Fragment != "" || strings.ContainsAny(u.Path, "\\\x00") || slices.Contains(strings.Split(u.Path, "/"), "..") {
		return false
	}
	for _, a := range allowed {
		b, err := url.Parse(strings.TrimRight(a, "/"))
		if err != nil || b.Scheme == "" {
			continue
		}
		if !strings.EqualFold(u.Scheme, b.Scheme) || !strings.EqualFold(u.Host, b.Host) {
			continue
		}
		p, base := strings.TrimRight(u.Path, "/"), strings.TrimRight(b.Path, "/")
		if p == base || strings.HasPrefix(p, base+"/") {
			return true
		}
	}
	return false
}
