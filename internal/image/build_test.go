package image

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloud-builder/cb/internal/mountinfo"
	"github.com/cloud-builder/cb/internal/proc"
	"github.com/cloud-builder/cb/internal/target"
)

const exampleDir = "../../examples/projects/images/debian/cb-image-tbz"

// needKiwi skips a test that builds images for real unless it runs as root
// with kiwi-ng installed; under CI=true a missing piece is a failure.
func needKiwi(t *testing.T) {
	t.Helper()
	ci := os.Getenv("CI") == "true"
	if os.Geteuid() != 0 {
		if ci {
			t.Fatal("image builds need root, and CI=true")
		}
		t.Skip("image builds need root")
	}
	for _, tool := range []string{Kiwi, Bwrap, "debootstrap", "rpm", "rpmbuild"} {
		if _, err := exec.LookPath(tool); err != nil {
			if ci {
				t.Fatalf("%s not installed, and CI=true", tool)
			}
			t.Skipf("%s not installed", tool)
		}
	}
}

// testCache is a kiwi cache of this test run, removed at its end.
func testCache(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(DefaultCacheRoot, fmt.Sprintf("go-test-%d-%d", os.Getpid(), time.Now().UnixNano()))
	t.Cleanup(func() {
		if err := removeAll(dir); err != nil {
			t.Error(err)
		}
	})
	return dir
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// TestBuildExample builds the example image once, for real, and checks
// everything a runner relies on against that one build; kiwi's failure
// and the refusal of bad arguments are checked on the same description.
// A cold build of the example takes one to two minutes.
func TestBuildExample(t *testing.T) {
	needKiwi(t)
	root := t.TempDir()
	cache := testCache(t)
	tgt, err := target.New(root, "projects/images/debian/cb-image-tbz", "standard", proc.HostArch())
	if err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	start := time.Now()
	res, err := Build(context.Background(), Options{
		Description: exampleDir,
		Target:      tgt,
		BundleID:    "7f1c0d2e",
		Log:         &log,
		CacheDir:    cache,
		Logger:      testLogger(t),
	})
	t.Logf("example image built in %s", time.Since(start).Round(time.Second))
	if err != nil {
		t.Fatalf("Build: %v\n%s", err, tail(log.String(), 40))
	}
	if err := os.WriteFile(tgt.BuildLog(), log.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}

	defer func() {
		if t.Failed() {
			t.Logf("build log:\n%s", tail(log.String(), 80))
		}
	}()
	t.Run("succeeded", func(t *testing.T) {
		if res.ExitCode != 0 {
			t.Fatalf("exit code %d\n%s", res.ExitCode, tail(log.String(), 40))
		}
		if res.RepoType != "rpm" {
			t.Errorf("repo type %q", res.RepoType)
		}
		if len(res.Binaries) != 1 {
			t.Fatalf("binaries %q, want one bundle rpm", res.Binaries)
		}
		want := filepath.Join(tgt.Binaries(), "projects/images/debian/standard/noarch/cb-image-tbz-1.0.0-0.noarch.rpm")
		if res.Binaries[0] != want {
			t.Errorf("binary %s, want %s", res.Binaries[0], want)
		}
	})
	t.Run("rpm holds the image", func(t *testing.T) {
		if len(res.Binaries) == 0 {
			t.Skip("no binaries")
		}
		out, err := exec.Command("rpm", "-qlp", res.Binaries[0]).CombinedOutput()
		if err != nil {
			t.Fatalf("rpm -qlp: %v\n%s", err, out)
		}
		image := fmt.Sprintf("/var/tmp/cb-image-tbz/cb-image-tbz.%s-1.0.0-7f1c0d2e.tar.xz", proc.HostArch())
		if !strings.Contains(string(out), image+"\n") {
			t.Errorf("rpm does not contain %s:\n%s", image, out)
		}
	})
	t.Run("solver file", func(t *testing.T) {
		data, err := os.ReadFile(tgt.SolverFile())
		if err != nil {
			t.Fatal(err)
		}
		var s struct {
			Image    string                    `json:"image"`
			Packages map[string]map[string]any `json:"resolved-packages"`
		}
		if err := json.Unmarshal(data, &s); err != nil {
			t.Fatalf("solver file is not JSON: %v", err)
		}
		if s.Image != "cb-image-tbz" {
			t.Errorf("solver image %q", s.Image)
		}
		// The listed packages and what the solver added for them.
		for _, p := range []string{"netbase", "ca-certificates", "apt", "libapt-pkg6.0"} {
			if v, _ := s.Packages[p]["version"].(string); v == "" {
				t.Errorf("solver file lacks a version of %s", p)
			}
		}
	})
	t.Run("build log", func(t *testing.T) {
		for _, want := range []string{
			"[cb-image ", "solving the image package list",
			"system build --description", "Creating XZ compressed tar archive",
			"ran confined by bubblewrap: image/config.sh",
			"result bundle --id 7f1c0d2e", "image build succeeded",
		} {
			if !strings.Contains(log.String(), want) {
				t.Errorf("build log lacks %q", want)
			}
		}
	})
	t.Run("clean up", func(t *testing.T) {
		assertClean(t, root, tgt)
		src, err := os.ReadFile(filepath.Join(exampleDir, "appliance.kiwi"))
		if err != nil || !bytes.Contains(src, []byte("@DEBIAN_MIRROR@")) {
			t.Errorf("the description in the source tree changed: %v", err)
		}
	})

	t.Run("missing profile fails", func(t *testing.T) {
		ft, err := target.New(root, "projects/images/debian/cb-image-tbz", "broken", proc.HostArch())
		if err != nil {
			t.Fatal(err)
		}
		var flog bytes.Buffer
		res, err := Build(context.Background(), Options{
			Description: exampleDir, Target: ft, BundleID: "1", Profiles: []string{"nosuch"},
			Log: &flog, CacheDir: cache, Logger: testLogger(t),
		})
		if err != nil {
			t.Fatalf("Build: %v", err)
		}
		if res.ExitCode == 0 {
			t.Errorf("exit code 0 for a missing profile")
		}
		if len(res.Binaries) != 0 {
			t.Errorf("binaries %q after a failed build", res.Binaries)
		}
		if !strings.Contains(flog.String(), "KiwiProfileNotFound") || !strings.Contains(flog.String(), "nosuch") {
			t.Errorf("kiwi's error is not in the build log:\n%s", tail(flog.String(), 20))
		}
		if _, err := os.Stat(ft.Binaries()); !os.IsNotExist(err) {
			t.Errorf("binaries directory after a failed build: %v", err)
		}
		assertClean(t, root, ft)
	})

	t.Run("bad build argument refused before kiwi", func(t *testing.T) {
		rt, err := target.New(root, "projects/images/debian/cb-image-tbz", "refused", proc.HostArch())
		if err != nil {
			t.Fatal(err)
		}
		var rlog bytes.Buffer
		res, err := Build(context.Background(), Options{
			Description: exampleDir, Target: rt, BundleID: "1",
			BuildArgs: []string{"--clear-cache", "--target-dir=/etc"},
			Log:       &rlog, CacheDir: cache,
		})
		if err == nil || res != nil {
			t.Fatalf("Build = %v, %v; want a refusal", res, err)
		}
		if !strings.Contains(err.Error(), `"--target-dir=/etc"`) {
			t.Errorf("refusal does not name the argument: %v", err)
		}
		if rlog.Len() != 0 {
			t.Errorf("something ran: %s", rlog.String())
		}
		if _, err := os.Stat(rt.Work()); !os.IsNotExist(err) {
			t.Errorf("work directory created for a refused build: %v", err)
		}
	})
}

// TestBuildCancel cancels a build while debootstrap runs and checks that
// Build returns promptly and leaves no process and no mount behind.
func TestBuildCancel(t *testing.T) {
	needKiwi(t)
	root := t.TempDir()
	tgt, err := target.New(root, "projects/images/debian/cb-image-tbz", "cancel", proc.HostArch())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var log syncBuffer
	done := make(chan error, 1)
	go func() {
		_, err := Build(ctx, Options{
			Description: exampleDir, Target: tgt, BundleID: "1",
			Log: &log, CacheDir: testCache(t), Logger: testLogger(t),
		})
		done <- err
	}()
	// Wait until kiwi is installing the bootstrap packages.
	deadline := time.Now().Add(2 * time.Minute)
	for !strings.Contains(log.String(), "Installing bootstrap packages") {
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("kiwi did not reach the bootstrap:\n%s", tail(log.String(), 30))
		}
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(2 * time.Second)
	cancel()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "context canceled") {
			t.Errorf("Build after cancel = %v, want the cancel cause", err)
		}
	case <-time.After(40 * time.Second):
		t.Fatal("Build did not return after cancel")
	}
	assertClean(t, root, tgt)
}

// assertClean checks that a build left no scratch, mount or process.
func assertClean(t *testing.T, root string, tgt target.Target) {
	t.Helper()
	if _, err := os.Stat(tgt.Work()); !os.IsNotExist(err) {
		t.Errorf("work directory %s left: %v", tgt.Work(), err)
	}
	mps, err := mountinfo.Below(root)
	if err != nil {
		t.Fatal(err)
	}
	if len(mps) > 0 {
		t.Errorf("mounts left below the runner root: %q", mps)
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		data, err := os.ReadFile(p)
		if err == nil && bytes.Contains(data, []byte(tgt.Work())) {
			t.Errorf("process %s still runs: %q", filepath.Dir(p), bytes.ReplaceAll(data, []byte{0}, []byte{' '}))
		}
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// syncBuffer is a bytes.Buffer safe to read while a build writes to it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
