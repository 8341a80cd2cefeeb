package info_test

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/cloud-builder/cb/internal/info"
	"github.com/cloud-builder/cb/internal/message"
	"github.com/cloud-builder/cb/internal/target"
)

func write(t *testing.T, path, content string, mtime time.Time) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if !mtime.IsZero() {
		if err := os.Chtimes(path, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
}

func result(t *testing.T, code message.ResponseCode, bins ...string) string {
	t.Helper()
	r := &message.Response{SchemaVersion: message.SchemaVersion, Identity: "CBRun:h:1:projects/MS/xclock", RequestID: "r1",
		ResponseCode: code, Project: "projects/MS/xclock",
		Package: &message.PackageResult{BinaryPackages: bins}}
	data, err := message.Encode(r)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func TestAnswer(t *testing.T) {
	finished := time.Date(2026, 3, 4, 5, 6, 7, 123456000, time.UTC)
	logTime := time.Date(2026, 3, 5, 0, 0, 0, 0, time.UTC)
	pkgReq := &message.InfoRequest{SchemaVersion: 0.2, RequestID: "q1", Project: "projects/MS/xclock", Package: &message.PackageTarget{Arch: "x86_64", Dist: "TW"}}
	imgReq := &message.InfoRequest{SchemaVersion: 0.2, RequestID: "q2", Project: "projects/images/disk", Image: &message.ImageTarget{Arch: "x86_64", Selection: "standard"}}
	for _, tc := range []struct {
		name          string
		req           *message.InfoRequest
		setup         func(t *testing.T, tg target.Target)
		respondAlways bool
		wantOK        bool
		check         func(t *testing.T, tg target.Target, r *message.InfoResponse)
	}{
		{name: "unknown target is not answered", req: pkgReq, setup: func(*testing.T, target.Target) {}},
		{
			name: "unknown target with respond-always", req: pkgReq, respondAlways: true, wantOK: true,
			setup: func(*testing.T, target.Target) {},
			check: func(t *testing.T, _ target.Target, r *message.InfoResponse) {
				if r.UTCModificationTime != "none" || r.LogFile != "none" || r.SolverFile != "none" || r.Package.PrepareLogFile != "none" ||
					r.BuildStatus != "unknown" || r.IsRunning || r.ArtifactURL != "" || len(r.BinaryPackages) != 0 {
					t.Fatalf("%+v", r)
				}
			},
		},
		{
			name: "finished build", req: pkgReq, wantOK: true,
			setup: func(t *testing.T, tg target.Target) {
				write(t, tg.BuildLog(), "log", time.Time{})
				write(t, tg.PrepareLog(), "log", time.Time{})
				write(t, tg.SolverFile(), "{}", time.Time{})
				write(t, tg.ResultFile(), result(t, message.PackageBuildSucceeded, "/x/a.rpm", "/x/a.src.rpm"), finished)
			},
			check: func(t *testing.T, tg target.Target, r *message.InfoResponse) {
				if r.UTCModificationTime != "2026-03-04 05:06:07.123456" {
					t.Errorf("time %q", r.UTCModificationTime)
				}
				if r.BuildStatus != message.PackageBuildSucceeded || r.IsRunning {
					t.Errorf("status %q running %v", r.BuildStatus, r.IsRunning)
				}
				if len(r.BinaryPackages) != 2 || r.BinaryPackages[0] != "/x/a.rpm" {
					t.Errorf("binaries %v", r.BinaryPackages)
				}
				if r.LogFile != tg.BuildLog() || r.SolverFile != tg.SolverFile() || r.Package.PrepareLogFile != tg.PrepareLog() {
					t.Errorf("paths %+v %+v", r, r.Package)
				}
				if r.ArtifactURL != "http://runner:8081/v1/targets/projects/MS/xclock@TW.x86_64/" {
					t.Errorf("artifact url %q", r.ArtifactURL)
				}
				if r.Identity != "CBInfo:runner:"+strconv.Itoa(os.Getpid())+":projects/MS/xclock" || r.SourceIP != "runner" {
					t.Errorf("identity %q source %q", r.Identity, r.SourceIP)
				}
				if r.Package.Arch != "x86_64" || r.Package.Dist != "TW" || r.Image != nil {
					t.Errorf("target %+v", r.Package)
				}
			},
		},
		{
			name: "sync failure is a failed build", req: pkgReq, wantOK: true,
			setup: func(t *testing.T, tg target.Target) {
				write(t, tg.ResultFile(), result(t, message.PackageBinariesSyncFailed), finished)
			},
			check: func(t *testing.T, _ target.Target, r *message.InfoResponse) {
				if r.BuildStatus != message.PackageBuildFailed {
					t.Errorf("status %q", r.BuildStatus)
				}
			},
		},
		{
			name: "running build reports its log time", req: pkgReq, wantOK: true,
			setup: func(t *testing.T, tg target.Target) {
				write(t, tg.ResultFile(), result(t, message.PackageBuildSucceeded, "/old.rpm"), finished)
				write(t, tg.PIDFile(), strconv.Itoa(os.Getpid()), finished)
				write(t, tg.BuildLog(), "compiling", logTime)
			},
			check: func(t *testing.T, _ target.Target, r *message.InfoResponse) {
				if !r.IsRunning || r.BuildStatus != "unknown" || len(r.BinaryPackages) != 0 {
					t.Errorf("running %v status %q bins %v", r.IsRunning, r.BuildStatus, r.BinaryPackages)
				}
				if r.UTCModificationTime != message.FormatTime(logTime) {
					t.Errorf("time %q", r.UTCModificationTime)
				}
			},
		},
		{
			name: "stale pid file of a dead build", req: pkgReq, wantOK: true,
			setup: func(t *testing.T, tg target.Target) {
				write(t, tg.PIDFile(), "999999999", time.Time{})
				write(t, tg.ResultFile(), result(t, message.PackageBuildFailed), finished)
			},
			check: func(t *testing.T, _ target.Target, r *message.InfoResponse) {
				if r.IsRunning || r.BuildStatus != message.PackageBuildFailed {
					t.Errorf("running %v status %q", r.IsRunning, r.BuildStatus)
				}
			},
		},
		{
			name: "image target", req: imgReq, wantOK: true,
			setup: func(t *testing.T, tg target.Target) {
				write(t, tg.PIDFile(), strconv.Itoa(os.Getpid()), time.Time{})
			},
			check: func(t *testing.T, _ target.Target, r *message.InfoResponse) {
				if r.Image == nil || r.Image.Selection != "standard" || r.Package != nil || !r.IsRunning {
					t.Errorf("%+v", r)
				}
				if r.ArtifactURL != "http://runner:8081/v1/targets/projects/images/disk@standard.x86_64/" {
					t.Errorf("artifact url %q", r.ArtifactURL)
				}
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			var tg target.Target
			var err error
			if tc.req.Image != nil {
				tg, err = target.New(root, tc.req.Project, tc.req.Image.Selection, tc.req.Image.Arch)
			} else {
				tg, err = target.New(root, tc.req.Project, tc.req.Package.Dist, tc.req.Package.Arch)
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.setup(t, tg)
			cfg := info.Config{Root: root, ThisHost: "runner", RespondAlways: tc.respondAlways, ArtifactURL: "http://runner:8081"}
			r, ok := cfg.Answer(tc.req)
			if ok != tc.wantOK {
				t.Fatalf("answered = %v, want %v", ok, tc.wantOK)
			}
			if !ok {
				return
			}
			if r.RequestID != tc.req.RequestID || r.Project != tc.req.Project || r.SchemaVersion != 0.2 {
				t.Fatalf("header %+v", r)
			}
			// What we send decodes as an info response.
			data, err := message.Encode(r)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := message.DecodeInfoResponse(data); err != nil {
				t.Fatal(err)
			}
			tc.check(t, tg, r)
		})
	}
}
