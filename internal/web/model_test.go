package web

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cloud-builder/cb/internal/message"
)

var t0 = time.Date(2026, 11, 30, 9, 0, 0, 0, time.UTC)

func at(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }

func pkgRequest(id, project, dist string) *message.BuildRequest {
	return &message.BuildRequest{SchemaVersion: message.SchemaVersion, RequestID: id, RunnerGroup: "debian",
		Action: message.ActionPackageRebuild, Project: project, Package: &message.PackageTarget{Arch: "x86_64", Dist: dist}}
}

func response(id, project, code, msg string, target *message.Target) *message.Response {
	svc := message.ServiceRun
	if target != nil {
		svc = message.ServiceScheduler
	}
	return &message.Response{SchemaVersion: message.SchemaVersion, RequestID: id, Project: project, ResponseCode: code,
		Message: msg, Identity: svc + ":10.0.0.7:99:x", Target: target}
}

var bookworm = &message.Target{Arch: "x86_64", Dist: "bookworm"}

func TestStatesFollowTheResponses(t *testing.T) {
	const p = "projects/Debian/cb-hello"
	key := Key(p, "bookworm.x86_64")
	for _, tc := range []struct {
		name   string
		apply  func(m *Model)
		state  State
		reason string
	}{
		{"requested", func(m *Model) { m.ApplyRequest(pkgRequest("r1", p, "bookworm"), at(0)) }, Queued, ""},
		{"accepted", func(m *Model) {
			m.ApplyResponse(response("r1", p, message.PackageRequestAccepted, "Accept package build request", bookworm), at(1))
		}, Building, "Accept package build request"},
		{"buildroot", func(m *Model) {
			m.ApplyResponse(response("r1", p, message.BuildRootSetupSucceeded, "Buildroot ready", nil), at(5))
		}, Building, "Buildroot ready"},
		{"succeeded", func(m *Model) {
			m.ApplyResponse(response("r1", p, message.PackageBuildSucceeded, "Package build finished", nil), at(9))
		}, Succeeded, "Package build finished"},
		{"requested again", func(m *Model) { m.ApplyRequest(pkgRequest("r2", p, "bookworm"), at(20)) }, Queued, ""},
		{"blocked", func(m *Model) {
			m.ApplyResponse(response("r2", p, message.PackageBuildBlocked, "waits for projects/Debian/libfoo@bookworm.x86_64", bookworm), at(21))
		}, Blocked, "waits for projects/Debian/libfoo@bookworm.x86_64"},
		{"unresolvable", func(m *Model) {
			m.ApplyResponse(response("r2", p, message.PackageBuildUnresolvable, "nothing provides libbar-dev", bookworm), at(22))
		}, Unresolvable, "nothing provides libbar-dev"},
		{"a reset old build's failure does not count", func(m *Model) {
			m.ApplyResponse(response("r1", p, message.PackageBuildFailed, "reset by a newer request", nil), at(23))
		}, Unresolvable, "nothing provides libbar-dev"},
		{"rejected", func(m *Model) {
			m.ApplyRequest(pkgRequest("r3", p, "bookworm"), at(30))
			m.ApplyResponse(response("r3", p, message.IncompatibleBuildArch, "Incompatible arch", bookworm), at(31))
		}, Rejected, "Incompatible arch"},
		{"failed", func(m *Model) {
			m.ApplyRequest(pkgRequest("r4", p, "bookworm"), at(40))
			m.ApplyResponse(response("r4", p, message.PackageRequestAccepted, "Accept", bookworm), at(41))
			m.ApplyResponse(response("r4", p, message.PackageBuildFailed, "Package build failed: exit status 2", nil), at(50))
		}, Failed, "Package build failed: exit status 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Each step builds on the ones before.
			m := NewModel()
			for _, prev := range stepsUpTo(tc.name) {
				prev(m)
			}
			tg, ok := m.Target(key)
			if !ok {
				t.Fatal("target unknown")
			}
			if tg.State != tc.state || tg.Reason != tc.reason {
				t.Errorf("state %s (%q), want %s (%q)", tg.State, tg.Reason, tc.state, tc.reason)
			}
		})
	}
}

// stepsUpTo re-declares the steps so each subtest starts from scratch.
func stepsUpTo(name string) []func(*Model) {
	const p = "projects/Debian/cb-hello"
	steps := []struct {
		name string
		f    func(*Model)
	}{
		{"requested", func(m *Model) { m.ApplyRequest(pkgRequest("r1", p, "bookworm"), at(0)) }},
		{"accepted", func(m *Model) {
			m.ApplyResponse(response("r1", p, message.PackageRequestAccepted, "Accept package build request", bookworm), at(1))
		}},
		{"buildroot", func(m *Model) {
			m.ApplyResponse(response("r1", p, message.BuildRootSetupSucceeded, "Buildroot ready", nil), at(5))
		}},
		{"succeeded", func(m *Model) {
			m.ApplyResponse(response("r1", p, message.PackageBuildSucceeded, "Package build finished", nil), at(9))
		}},
		{"requested again", func(m *Model) { m.ApplyRequest(pkgRequest("r2", p, "bookworm"), at(20)) }},
		{"blocked", func(m *Model) {
			m.ApplyResponse(response("r2", p, message.PackageBuildBlocked, "waits for projects/Debian/libfoo@bookworm.x86_64", bookworm), at(21))
		}},
		{"unresolvable", func(m *Model) {
			m.ApplyResponse(response("r2", p, message.PackageBuildUnresolvable, "nothing provides libbar-dev", bookworm), at(22))
		}},
		{"a reset old build's failure does not count", func(m *Model) {
			m.ApplyResponse(response("r1", p, message.PackageBuildFailed, "reset by a newer request", nil), at(23))
		}},
		{"rejected", func(m *Model) {
			m.ApplyRequest(pkgRequest("r3", p, "bookworm"), at(30))
			m.ApplyResponse(response("r3", p, message.IncompatibleBuildArch, "Incompatible arch", bookworm), at(31))
		}},
		{"failed", func(m *Model) {
			m.ApplyRequest(pkgRequest("r4", p, "bookworm"), at(40))
			m.ApplyResponse(response("r4", p, message.PackageRequestAccepted, "Accept", bookworm), at(41))
			m.ApplyResponse(response("r4", p, message.PackageBuildFailed, "Package build failed: exit status 2", nil), at(50))
		}},
	}
	var out []func(*Model)
	for _, s := range steps {
		out = append(out, s.f)
		if s.name == name {
			break
		}
	}
	return out
}

func TestTimelineAndDuration(t *testing.T) {
	const p = "projects/Debian/cb-hello"
	m := NewModel()
	for _, s := range stepsUpTo("succeeded") {
		s(m)
	}
	tg, _ := m.Target(Key(p, "bookworm.x86_64"))
	if len(tg.Requests) != 1 || len(tg.Requests[0].Events) != 3 {
		t.Fatalf("timeline %+v: want one request with three responses", tg.Requests)
	}
	if d := tg.Duration(at(100)); d != 8*time.Second {
		t.Errorf("duration %s, want 8s (accepted at 1s, finished at 9s)", d)
	}
	if tg.Runner != "10.0.0.7" || tg.LastResult == nil || tg.LastResult.State != Succeeded {
		t.Errorf("runner %q, last result %+v", tg.Runner, tg.LastResult)
	}
}

// Prepare and build responses name no target; when they are read before
// their request (another topic), they wait for it.
func TestResponsesBeforeTheirRequest(t *testing.T) {
	const p = "projects/Debian/cb-hello"
	m := NewModel()
	m.ApplyResponse(response("r1", p, message.PackageBuildSucceeded, "Package build finished", nil), at(9))
	if cells := m.Cells(nil); len(cells) != 0 {
		t.Fatalf("a response without target made cells %+v", cells)
	}
	m.ApplyResponse(response("r1", p, message.PackageRequestAccepted, "Accept", bookworm), at(1))
	m.ApplyRequest(pkgRequest("r1", p, "bookworm"), at(0))
	tg, ok := m.Target(Key(p, "bookworm.x86_64"))
	if !ok || tg.State != Succeeded || tg.RunnerGroup != "debian" || tg.Requests[0].Action != message.ActionPackageRebuild {
		t.Fatalf("target %+v", tg)
	}
}

func TestChangesKeepEveryIntermediateState(t *testing.T) {
	m := NewModel()
	start := m.Seq()
	for _, s := range stepsUpTo("succeeded") {
		s(m)
	}
	var states []string
	for _, c := range m.ChangesSince(start) {
		if len(states) == 0 || states[len(states)-1] != string(c.State) {
			states = append(states, string(c.State))
		}
	}
	if got := strings.Join(states, ","); got != "queued,building,succeeded" {
		t.Errorf("changes %s, want queued,building,succeeded", got)
	}
	// A client far behind gets the end states.
	for i := 0; i < changeLog+10; i++ {
		m.ApplyRequest(pkgRequest("x"+itoa(i), "projects/Debian/p"+itoa(i%50), "bookworm"), at(100+i))
	}
	cells := m.ChangesSince(start)
	if len(cells) != 51 {
		t.Errorf("a client behind the change log got %d cells, want the 51 changed targets", len(cells))
	}
}

func TestWaitingReasons(t *testing.T) {
	m := NewModel()
	m.now = func() time.Time { return at(60) }
	m.ApplyRequest(pkgRequest("a", "projects/Debian/a", "bookworm"), at(1))
	m.ApplyRequest(pkgRequest("b", "projects/Debian/b", "bookworm"), at(2))
	b, _ := m.Target(Key("projects/Debian/b", "bookworm.x86_64"))
	got := strings.Join(m.Waiting(b), "; ")
	for _, want := range []string{"queue position 2 of 2 in runner group debian", "no runner in runner group debian"} {
		if !strings.Contains(got, want) {
			t.Errorf("waiting %q lacks %q", got, want)
		}
	}
	m.ApplyHeartbeat(&message.Heartbeat{RunnerGroup: "debian", SourceIP: "10.0.0.7", BuildLimit: 1,
		Running: []string{"projects/Debian/c@bookworm.x86_64"}, Interval: 10, QueueLag: 2}, at(55))
	got = strings.Join(m.Waiting(b), "; ")
	for _, want := range []string{"build limit reached on every runner of group debian", "queue lag of the group: 2"} {
		if !strings.Contains(got, want) {
			t.Errorf("waiting %q lacks %q", got, want)
		}
	}
	m.now = func() time.Time { return at(200) }
	if got = strings.Join(m.Waiting(b), "; "); !strings.Contains(got, "no runner in runner group debian") {
		t.Errorf("a runner silent for three intervals still counts: %q", got)
	}
}

func itoa(i int) string { return strconv.Itoa(i) }
