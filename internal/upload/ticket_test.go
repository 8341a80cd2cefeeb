package upload

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestTicket(t *testing.T) {
	secret := []byte("runner-group-secret")
	now := time.Unix(1_800_000_000, 0)
	u := Upload{RequestID: "r1", Project: "projects/MS/hello", RepoPath: "projects/MS/TW", Arch: "x86_64"}
	tk, err := MintTicket(secret, ClaimsFor(u, now.Add(time.Hour)))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(tk, TicketPrefix) {
		t.Fatalf("ticket %q lacks the prefix", tk)
	}
	c, err := VerifyTicket(secret, tk, now)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Covers(u); err != nil {
		t.Errorf("ticket does not cover its own upload: %v", err)
	}
	if !c.Expires.Equal(now.Add(time.Hour)) {
		t.Errorf("expires %s, want %s", c.Expires, now.Add(time.Hour))
	}

	for name, other := range map[string]Upload{
		"other project":    {RequestID: "r1", Project: "projects/MS/xclock", RepoPath: "projects/MS/TW", Arch: "x86_64"},
		"other repository": {RequestID: "r1", Project: "projects/MS/hello", RepoPath: "projects/Other/TW", Arch: "x86_64"},
		"other request":    {RequestID: "r2", Project: "projects/MS/hello", RepoPath: "projects/MS/TW", Arch: "x86_64"},
		"other arch":       {RequestID: "r1", Project: "projects/MS/hello", RepoPath: "projects/MS/TW", Arch: "aarch64"},
	} {
		if err := c.Covers(other); err == nil {
			t.Errorf("%s: ticket covers %+v", name, other)
		}
	}

	if _, err := VerifyTicket(secret, tk, now.Add(time.Hour)); !errors.Is(err, ErrTicketExpired) {
		t.Errorf("at expiry: %v, want ErrTicketExpired", err)
	}
	if _, err := VerifyTicket([]byte("another secret"), tk, now); !errors.Is(err, ErrBadTicket) {
		t.Errorf("other secret: %v, want ErrBadTicket", err)
	}
	// Claims changed after signing: a job widening its own ticket.
	forged, _ := MintTicket([]byte("x"), Claims{RequestID: "r1", Project: "projects/Other/a", RepoPath: "projects/Other/TW", Arch: "x86_64", Expires: now.Add(time.Hour)})
	_, sig, _ := strings.Cut(tk[len(TicketPrefix):], ".")
	body, _, _ := strings.Cut(forged[len(TicketPrefix):], ".")
	for _, bad := range []string{"", "cbt1.", "cbt1..", tk + "x", TicketPrefix + body + "." + sig, "plain-token", tk[:len(tk)-2]} {
		if _, err := VerifyTicket(secret, bad, now); !errors.Is(err, ErrBadTicket) {
			t.Errorf("VerifyTicket(%q) = %v, want ErrBadTicket", bad, err)
		}
	}
	if _, err := MintTicket(nil, ClaimsFor(u, now)); err == nil {
		t.Error("minted a ticket without a secret")
	}
	if _, err := MintTicket(secret, Claims{RequestID: "r1"}); err == nil {
		t.Error("minted a ticket with incomplete claims")
	}
}
