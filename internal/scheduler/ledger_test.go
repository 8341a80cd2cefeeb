package scheduler

import (
	"testing"
	"time"
)

// A runner's own claim, heard after another runner's (its heartbeats
// delivered late after a network cut healed), must not hide that the
// other runner works on the request: both building it at once is what
// the ledger exists to prevent.
func TestLedgerOwnClaimDoesNotHideAnother(t *testing.T) {
	l := NewLedger(nil, time.Now(), "runner2", nil)
	now := time.Now()
	l.note("r1", "runner1", now.Add(-2*time.Second))
	l.note("r1", "runner2", now.Add(-time.Second))
	host, age, ok := l.Elsewhere("r1", 12*time.Second)
	if !ok || host != "runner1" || age < 2*time.Second {
		t.Fatalf("Elsewhere = %q, %s, %v; want runner1 about 2s ago", host, age, ok)
	}
	// Only its own claim: nobody else.
	l.note("r2", "runner2", now)
	if host, _, ok := l.Elsewhere("r2", 12*time.Second); ok || host != "" {
		t.Fatalf("own claim counted as another runner's: %q", host)
	}
	// Another runner heard too long ago does not count.
	l.note("r3", "runner3", now.Add(-time.Minute))
	if _, _, ok := l.Elsewhere("r3", 12*time.Second); ok {
		t.Fatal("a claim older than the stuck timeout counted")
	}
}
