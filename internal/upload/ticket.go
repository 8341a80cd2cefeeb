package upload

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// A ticket is the credential a build job uploads with. The runner's
// scheduler holds the runner group's upload secret (the collector token)
// and mints one ticket per job; the job never sees the secret. The
// collector checks the ticket's HMAC with the same secret, its expiry,
// and that the upload is the one the ticket names: the same request,
// project, repository and arch. So a ticket, wherever it leaks, can
// publish nothing but the results of its own request, and only until it
// expires.
//
// Format: "cbt1." + base64url(JSON claims) + "." + base64url(HMAC-SHA256).
// The MAC covers the prefix and the encoded claims.

// TicketPrefix starts every ticket; a bearer credential without it is a
// plain token.
const TicketPrefix = "cbt1."

// Environment of a job process.
const (
	// EnvTicket carries the job's upload ticket from the scheduler.
	EnvTicket = "CB_UPLOAD_TICKET"
	// EnvToken is the plain upload token, which the scheduler reads and
	// never passes on to a job.
	EnvToken = "CB_COLLECTOR_TOKEN"
)

// DefaultTicketTTL is how long a ticket is valid after the job starts:
// the longest a build, its retries and its upload may reasonably take
// (a request's topic keeps it for a day, too).
const DefaultTicketTTL = 24 * time.Hour

// Errors of VerifyTicket.
var (
	// ErrBadTicket is a ticket that is malformed or not signed with the
	// secret.
	ErrBadTicket = errors.New("upload ticket is malformed or not signed with the upload secret")
	// ErrTicketExpired is a correctly signed ticket past its expiry.
	ErrTicketExpired = errors.New("upload ticket expired")
)

// Claims is what a ticket binds an upload to.
type Claims struct {
	RequestID string    `json:"rid"`
	Project   string    `json:"prj"`  // projects/...
	RepoPath  string    `json:"repo"` // <project parent>/<dist or selection>
	Arch      string    `json:"arch"`
	Expires   time.Time `json:"-"`
	Exp       int64     `json:"exp"` // Expires in Unix seconds on the wire
}

// ClaimsFor returns the claims of an upload u, valid until expires.
func ClaimsFor(u Upload, expires time.Time) Claims {
	return Claims{RequestID: u.RequestID, Project: u.Project, RepoPath: u.RepoPath, Arch: u.Arch, Expires: expires}
}

// Covers reports why u is not the upload c names, or nil when it is.
func (c Claims) Covers(u Upload) error {
	var diff []string
	check := func(what, ticket, got string) {
		if ticket != got {
			diff = append(diff, fmt.Sprintf("%s %q, not %q", what, ticket, got))
		}
	}
	check("request", c.RequestID, u.RequestID)
	check("project", c.Project, u.Project)
	check("repository", c.RepoPath, u.RepoPath)
	check("arch", c.Arch, u.Arch)
	if diff != nil {
		return fmt.Errorf("the upload ticket is for %s", strings.Join(diff, ", "))
	}
	return nil
}

// MintTicket signs c with secret.
func MintTicket(secret []byte, c Claims) (string, error) {
	if len(secret) == 0 {
		return "", errors.New("mint upload ticket: no upload secret")
	}
	if c.RequestID == "" || c.Project == "" || c.RepoPath == "" || c.Arch == "" || c.Expires.IsZero() {
		return "", fmt.Errorf("mint upload ticket: incomplete claims %+v", c)
	}
	c.Exp = c.Expires.Unix()
	payload, err := json.Marshal(c)
	if err != nil {
		return "", fmt.Errorf("mint upload ticket: %w", err)
	}
	body := TicketPrefix + base64.RawURLEncoding.EncodeToString(payload)
	return body + "." + base64.RawURLEncoding.EncodeToString(ticketMAC(secret, body)), nil
}

// VerifyTicket checks ticket's signature with secret and its expiry at
// now, and returns its claims.
func VerifyTicket(secret []byte, ticket string, now time.Time) (Claims, error) {
	if len(secret) == 0 || !strings.HasPrefix(ticket, TicketPrefix) {
		return Claims{}, ErrBadTicket
	}
	i := strings.LastIndexByte(ticket, '.')
	body, sig := ticket[:i], ticket[i+1:]
	got, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil || !hmac.Equal(got, ticketMAC(secret, body)) {
		return Claims{}, ErrBadTicket
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(body, TicketPrefix))
	if err != nil {
		return Claims{}, ErrBadTicket
	}
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.DisallowUnknownFields()
	var c Claims
	if err := dec.Decode(&c); err != nil {
		return Claims{}, ErrBadTicket
	}
	c.Expires = time.Unix(c.Exp, 0).UTC()
	if !now.Before(c.Expires) {
		return c, fmt.Errorf("%w at %s", ErrTicketExpired, c.Expires.Format(time.RFC3339))
	}
	return c, nil
}

// ticketMAC is HMAC-SHA256 over body, keyed by a key derived from the
// secret for this one use, so a ticket MAC is never a MAC of anything
// else made with the same token.
func ticketMAC(secret []byte, body string) []byte {
	k := hmac.New(sha256.New, secret)
	k.Write([]byte("cb upload ticket v1"))
	m := hmac.New(sha256.New, k.Sum(nil))
	m.Write([]byte(body))
	return m.Sum(nil)
}
