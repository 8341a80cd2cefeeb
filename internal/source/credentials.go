package source

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"strings"
)

// Environment variables that carry git credentials for private repositories.
const (
	// EnvToken is an access token for https remotes (GitHub, GitLab, Gitea
	// personal or deploy tokens). It is sent as HTTP basic authentication
	// with EnvUser as the user name, only to the host of the configured
	// URL, and only over https.
	EnvToken = "CB_GIT_TOKEN"
	// EnvTokenFile names a file holding the token, for systemd credentials
	// and Kubernetes secrets. EnvToken wins when both are set.
	EnvTokenFile = "CB_GIT_TOKEN_FILE"
	// EnvUser is the user name sent with the token; GitHub wants
	// x-access-token for app tokens and accepts anything for personal
	// tokens, GitLab accepts anything (oauth2 for OAuth tokens).
	EnvUser = "CB_GIT_USER"
	// EnvSSHKey is the absolute path of a private key for ssh remotes.
	EnvSSHKey = "CB_GIT_SSH_KEY"
	// EnvSSHKnownHosts optionally names a known_hosts file for ssh remotes.
	EnvSSHKnownHosts = "CB_GIT_SSH_KNOWN_HOSTS"
)

// defaultTokenUser is the user name sent with a token when EnvUser is unset.
const defaultTokenUser = "x-access-token"

// getenv is how the package reads its environment; tests use t.Setenv.
var getenv = os.Getenv

// Credentials are the secrets git uses for one remote. They reach git as
// GIT_CONFIG_* environment variables of the child, never on its command
// line (which every local user can read in /proc) and never in logs.
type Credentials struct {
	// header is an http.<url>.extraHeader value, scoped to urlPrefix.
	urlPrefix, header string
	// sshCommand is core.sshCommand.
	sshCommand string
}

// safePathRE is what a key or known_hosts path may look like. core.sshCommand
// is interpreted by a shell, so only paths that need no quoting at all are
// accepted; anything else is refused rather than escaped.
var safePathRE = regexp.MustCompile(`^/[A-Za-z0-9._/+-]+$`)

// credentialsFor reads the credentials for remote from the environment.
func credentialsFor(remote string) (*Credentials, error) {
	c := &Credentials{}
	token := getenv(EnvToken)
	if token == "" {
		if f := getenv(EnvTokenFile); f != "" {
			b, err := os.ReadFile(f)
			if err != nil {
				return nil, fmt.Errorf("read %s: %w", EnvTokenFile, err)
			}
			token = strings.TrimSpace(string(b))
		}
	}
	if token != "" {
		if strings.ContainsAny(token, "\r\n\x00") {
			return nil, fmt.Errorf("%s: contains a line break", EnvToken)
		}
		if u, err := url.Parse(remote); err == nil && u.Host != "" {
			switch u.Scheme {
			case "https":
				user := getenv(EnvUser)
				if user == "" {
					user = defaultTokenUser
				}
				if strings.ContainsAny(user, ":\r\n\x00") {
					return nil, fmt.Errorf("%s: must not contain ':' or line breaks", EnvUser)
				}
				// Scoping the header to scheme://host/ keeps it from
				// following a redirect to another host.
				c.urlPrefix = "https://" + u.Host + "/"
				c.header = "Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+token))
			case "http":
				return nil, errors.New(EnvToken + " is set but the repository URL is plain http: refusing to send the token unencrypted")
			}
		}
	}
	if key := getenv(EnvSSHKey); key != "" {
		if !safePathRE.MatchString(key) {
			return nil, fmt.Errorf("%s: %q must be an absolute path of letters, digits and ._/+-", EnvSSHKey, key)
		}
		cmd := "ssh -i " + key + " -o IdentitiesOnly=yes -o BatchMode=yes"
		if kh := getenv(EnvSSHKnownHosts); kh != "" {
			if !safePathRE.MatchString(kh) {
				return nil, fmt.Errorf("%s: %q must be an absolute path of letters, digits and ._/+-", EnvSSHKnownHosts, kh)
			}
			cmd += " -o UserKnownHostsFile=" + kh
		}
		c.sshCommand = cmd
	}
	return c, nil
}

// config returns the git configuration pairs carrying c.
func (c *Credentials) config() [][2]string {
	if c == nil {
		return nil
	}
	var kv [][2]string
	if c.header != "" {
		kv = append(kv, [2]string{"http." + c.urlPrefix + ".extraHeader", c.header})
	}
	if c.sshCommand != "" {
		kv = append(kv, [2]string{"core.sshCommand", c.sshCommand})
	}
	return kv
}

// redact removes a password from a URL for logs and errors.
func redact(remote string) string {
	u, err := url.Parse(remote)
	if err != nil || u.User == nil {
		return remote
	}
	return u.Redacted()
}
