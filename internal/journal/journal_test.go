package journal

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/cloud-builder/cb/internal/message"
)

func request(id string) *message.BuildRequest {
	return &message.BuildRequest{
		SchemaVersion: message.SchemaVersion, RequestID: id, RunnerGroup: "debian",
		Action: message.ActionPackageRebuild, Project: "projects/Debian/cb-hello",
		Package: &message.PackageTarget{Arch: "x86_64", Dist: "bookworm"},
	}
}

func TestAddIsDurableAndIdempotent(t *testing.T) {
	j, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	e, existed, err := j.Add(request("r1"), true)
	if err != nil || existed {
		t.Fatalf("Add = %v, existed %v", err, existed)
	}
	if e.State != Accepted || !e.Clean {
		t.Fatalf("new entry = %+v", e)
	}
	// A redelivered request is recognised, not added twice.
	again, existed, err := j.Add(request("r1"), false)
	if err != nil || !existed || again.State != Accepted {
		t.Fatalf("second Add = %+v, existed %v, %v", again, existed, err)
	}
	loaded, err := Load(e.Path())
	if err != nil {
		t.Fatal(err)
	}
	if loaded.Request.RequestID != "r1" || loaded.Request.Package.Dist != "bookworm" {
		t.Fatalf("loaded = %+v", loaded.Request)
	}
}

func TestStatesOnlyMoveForward(t *testing.T) {
	j, _ := Open(t.TempDir())
	e, _, err := j.Add(request("r2"), false)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []State{Running, Finished, Responded} {
		if err := e.Advance(s); err != nil {
			t.Fatalf("Advance(%s): %v", s, err)
		}
	}
	if err := e.Advance(Running); err == nil {
		t.Fatal("Advance back to running succeeded")
	}
}

func TestPendingSkipsRespondedAndQuarantinesCorruptEntries(t *testing.T) {
	j, _ := Open(t.TempDir())
	a, _, _ := j.Add(request("a"), false)
	b, _, _ := j.Add(request("b"), false)
	if err := b.Advance(Responded); err != nil {
		t.Fatal(err)
	}
	if err := a.Advance(Running); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(j.Dir(), "bad.yml")
	if err := os.WriteFile(bad, []byte("state: [unterminated"), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := j.Pending()
	if err != nil {
		t.Fatal(err)
	}
	if len(p) != 1 || p[0].Request.RequestID != "a" || p[0].State != Running {
		t.Fatalf("Pending = %+v", p)
	}
	if _, err := os.Stat(bad + ".corrupt"); err != nil {
		t.Fatalf("corrupt entry not moved aside: %v", err)
	}
}

func TestAddRefusesUnsafeRequestID(t *testing.T) {
	j, _ := Open(t.TempDir())
	r := request("../escape")
	if _, _, err := j.Add(r, false); err == nil {
		t.Fatal("request id with a path separator was journaled")
	}
}

func TestReleasedIsFinalUntilDeliveredAgain(t *testing.T) {
	j, _ := Open(t.TempDir())
	e, _, err := j.Add(request("r3"), false)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Advance(Running); err != nil {
		t.Fatal(err)
	}
	if err := e.Advance(Released); err != nil {
		t.Fatalf("Advance(released): %v", err)
	}
	if err := e.Advance(Responded); err == nil {
		t.Fatal("a released entry was marked responded")
	}
	if p, _ := j.Pending(); len(p) != 0 {
		t.Fatalf("released entry is pending: %+v", p)
	}
	got, err := j.Get("r3")
	if err != nil || got.State != Released {
		t.Fatalf("Get = %+v, %v", got, err)
	}
	// The request comes back to this runner: it starts afresh.
	again, existed, err := j.Add(request("r3"), false)
	if err != nil || existed || again.State != Accepted {
		t.Fatalf("Add after release = %+v, existed %v, %v", again, existed, err)
	}
	if _, err := j.Get("nothere"); !os.IsNotExist(err) {
		t.Fatalf("Get of an unknown id: %v", err)
	}
}
