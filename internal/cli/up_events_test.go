package cli

import (
	"strings"
	"testing"
	"time"

	"github.com/cloud-builder/cb/internal/message"
)

func TestBuildEventLines(t *testing.T) {
	var out lockedBuffer
	e := newBuildEvents(&out)
	t0 := time.Date(2026, 11, 30, 10, 0, 0, 0, time.Local)
	target := &message.Target{Arch: "x86_64", Dist: "bookworm"}
	resp := func(id, code, msg string) *message.Response {
		return &message.Response{RequestID: id, Project: "projects/Debian/cb-hello", ResponseCode: code, Message: msg}
	}
	withTarget := func(r *message.Response) *message.Response { r.Target = target; return r }
	e.response(withTarget(resp("r1", message.PackageRebuildSourceChange, "Package update request scheduled")), t0)
	e.response(resp("r1", message.PackageRequestAccepted, "Accept package build request"), t0.Add(time.Second))
	e.release() // lines before the banner wait for it
	e.response(resp("r1", message.BuildRootSetupSucceeded, message.BuildRootReadyMessage), t0.Add(61*time.Second))
	e.published("projects/Debian/bookworm", "deb", 300*time.Millisecond)
	done := resp("r1", message.PackageBuildSucceeded, "Package build finished")
	done.Package = &message.PackageResult{BinaryPackages: []string{"a.deb", "b.deb"}}
	e.response(done, t0.Add(64*time.Second))
	e.response(withTarget(resp("r2", message.PackageRequestAccepted, "")), t0.Add(70*time.Second))
	e.response(resp("r2", message.BuildRootSetupSucceeded, message.BuildRootCachedMessage), t0.Add(71*time.Second))
	e.response(resp("r2", message.PackageBuildFailed, "Package build failed with exit code 2"), t0.Add(75*time.Second))
	e.response(resp("r3", message.ProjectDoesNotExist, "Project does not exist"), t0.Add(80*time.Second))
	e.response(resp("r4", message.PackageBuildSucceeded, "x"), t0.Add(81*time.Second)) // never seen before: still one line

	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	want := []string{
		"10:00:00 requested  projects/Debian/cb-hello bookworm.x86_64 (package rebuild due to source change)",
		"10:00:01 accepted   projects/Debian/cb-hello bookworm.x86_64 ",
		"10:01:01 buildroot  projects/Debian/cb-hello bookworm.x86_64 created in 60.0s",
		"published  projects/Debian/bookworm (deb) in 0.3s",
		"10:01:04 built      projects/Debian/cb-hello bookworm.x86_64 in 3.0s (total 64.0s), 2 binaries",
		"10:01:10 accepted   projects/Debian/cb-hello bookworm.x86_64 ",
		"10:01:11 buildroot  projects/Debian/cb-hello bookworm.x86_64 from cache in 1.0s",
		"10:01:15 failed     projects/Debian/cb-hello bookworm.x86_64 after 5.0s: package build failed: Package build failed with exit code 2",
		"10:01:20 failed     projects/Debian/cb-hello after 0.0s: project does not exist: Project does not exist",
		"10:01:21 built      projects/Debian/cb-hello in 0.0s (total 0.0s)",
	}
	if len(lines) != len(want) {
		t.Fatalf("%d lines, want %d:\n%s", len(lines), len(want), out.String())
	}
	for i, w := range want {
		if !strings.Contains(lines[i]+" ", w) {
			t.Errorf("line %d:\n got %q\nwant %q", i, lines[i], w)
		}
	}
}
