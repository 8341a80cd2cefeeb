package scheduler

import (
	"strings"
	"testing"
	"time"

	"github.com/cloud-builder/cb/internal/journal"
	"github.com/cloud-builder/cb/internal/message"
	"github.com/cloud-builder/cb/internal/target"
	"github.com/cloud-builder/cb/internal/upload"
)

// A job gets an upload ticket for its own request and never the runner
// group's upload secret, even when the scheduler got it from its
// environment.
func TestJobGetsTicketNotSecret(t *testing.T) {
	const secret = "runner-group-upload-secret"
	t.Setenv(upload.EnvToken, secret)
	t.Setenv(upload.EnvTicket, "a stale ticket")
	s := &Scheduler{cfg: Config{UploadSecret: []byte(secret), JobEnv: []string{"X=1"}}}
	e := &journal.Entry{Request: message.BuildRequest{RequestID: "r-1", Project: "projects/MS/xclock",
		Package: &message.PackageTarget{Dist: "TW", Arch: "x86_64"}}}
	tg, err := target.ForRequest(t.TempDir(), &e.Request)
	if err != nil {
		t.Fatal(err)
	}
	env, err := s.jobEnv(e, tg)
	if err != nil {
		t.Fatal(err)
	}
	var tickets []string
	for _, kv := range env {
		if strings.Contains(kv, secret) {
			t.Errorf("the job's environment holds the secret: %s", kv)
		}
		if v, ok := strings.CutPrefix(kv, upload.EnvTicket+"="); ok {
			tickets = append(tickets, v)
		}
	}
	if len(tickets) != 1 {
		t.Fatalf("job environment has tickets %q, want one", tickets)
	}
	c, err := upload.VerifyTicket([]byte(secret), tickets[0], time.Now())
	if err != nil {
		t.Fatal(err)
	}
	want := upload.Upload{RequestID: "r-1", Project: "projects/MS/xclock", RepoPath: "projects/MS/TW", Arch: "x86_64"}
	if err := c.Covers(want); err != nil {
		t.Error(err)
	}
	if d := time.Until(c.Expires); d < upload.DefaultTicketTTL-time.Minute || d > upload.DefaultTicketTTL {
		t.Errorf("ticket expires in %s, want %s", d, upload.DefaultTicketTTL)
	}

	s.cfg.UploadSecret = nil
	env, err = s.jobEnv(e, tg)
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range env {
		if strings.HasPrefix(kv, upload.EnvTicket+"=") || strings.Contains(kv, secret) {
			t.Errorf("without a secret the job got %s", kv)
		}
	}
}
