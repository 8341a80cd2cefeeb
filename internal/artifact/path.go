package artifact

import (
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/cloud-builder/cb/internal/message"
	"github.com/cloud-builder/cb/internal/target"
)

// TargetURL is the base URL of target t's artifacts on the endpoint at
// base: base/v1/targets/<project>@<profile>/. Clients append an artifact
// name (build.log, binaries/, ...).
func TargetURL(base string, t target.Target) string {
	var b strings.Builder
	b.WriteString(strings.TrimRight(base, "/"))
	b.WriteString(targetsPrefix)
	for i, el := range strings.Split(t.Project, "/") {
		if i > 0 {
			b.WriteByte('/')
		}
		b.WriteString(url.PathEscape(el))
	}
	b.WriteByte('@')
	b.WriteString(url.PathEscape(t.Profile))
	b.WriteByte('/')
	return b.String()
}

// ParsePath splits "<project>@<profile>/<artifact>" (the URL path below
// /v1/targets/) into a target relative to the runner root and the artifact
// name. Project and profile are validated as wire fields are; project
// paths cannot contain '@', so the first '@' ends the project.
func ParsePath(p string) (target.Target, string, error) {
	at := strings.IndexByte(p, '@')
	if at < 0 {
		return target.Target{}, "", errors.New("want <project>@<profile>/<artifact>")
	}
	slash := strings.IndexByte(p[at:], '/')
	if slash < 0 || at+slash == len(p)-1 {
		return target.Target{}, "", errors.New("want <project>@<profile>/<artifact>")
	}
	t, err := target.Parse("", p[:at+slash])
	if err != nil {
		return target.Target{}, "", err
	}
	if t.IsLocal() {
		return target.Target{}, "", fmt.Errorf("project %q: %w", t.Project, message.ErrInvalidProject)
	}
	return t, p[at+slash+1:], nil
}

// validateRelPath checks a path below a target's binaries directory: every
// element must be a valid name, so "..", empty elements and absolute paths
// never get as far as the file system.
func validateRelPath(rel string) error {
	if rel == "" {
		return errors.New("empty path")
	}
	for _, el := range strings.Split(rel, "/") {
		if err := message.ValidateName(el); err != nil {
			return fmt.Errorf("binary path %q: %w", rel, err)
		}
	}
	return nil
}
