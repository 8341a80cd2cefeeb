// Package bearer decides where a bearer token may travel. A token sent
// over plain HTTP is readable by everyone on the path, so the clients
// that carry one (the upload client, cb-ctl and the web UI towards the
// artifact endpoints) send it over plain HTTP only to a loopback address,
// unless their configuration explicitly allows plain HTTP.
package bearer

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
)

// ErrPlainHTTP is the refusal to send a token over plain HTTP off
// loopback.
var ErrPlainHTTP = errors.New("refusing to send a token over plain HTTP to a host that is not loopback")

// Check returns nil when a token may be sent to rawURL: over https, or
// over http to a loopback address (127.0.0.0/8, ::1, localhost), or
// anywhere when allowPlain is set. setting names the configuration that
// allows plain HTTP, for the error message. Host names other than
// localhost are not resolved: what they resolve to can change between
// the check and the connection.
func Check(rawURL string, allowPlain bool, setting string) error {
	u, err := url.Parse(rawURL)
	if err != nil {
		return fmt.Errorf("token destination %q: %w", rawURL, err)
	}
	switch strings.ToLower(u.Scheme) {
	case "https":
		return nil
	case "http":
	default:
		return fmt.Errorf("token destination %s: scheme %q, want http or https", Redact(u), u.Scheme)
	}
	if allowPlain || Loopback(u.Hostname()) {
		return nil
	}
	return fmt.Errorf("%w: %s (use https, or set %s: true to allow it)", ErrPlainHTTP, Redact(u), setting)
}

// Loopback reports whether host is a loopback IP address or localhost.
func Loopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Redact is u without user info, query or fragment, for messages.
func Redact(u *url.URL) string {
	c := *u
	c.User, c.RawQuery, c.Fragment = nil, "", ""
	return c.String()
}
