package job

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cloud-builder/cb/internal/image"
	"github.com/cloud-builder/cb/internal/mountinfo"
	"github.com/cloud-builder/cb/internal/proc"
	"github.com/cloud-builder/cb/internal/target"
)

// localDescription copies the example's appliance.kiwi into a directory
// named name, with the given cloud_builder.yml.
func localDescription(t *testing.T, name, meta string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), name)
	if err := os.MkdirAll(filepath.Join(dir, ".cb"), 0o755); err != nil {
		t.Fatal(err)
	}
	kiwi, err := os.ReadFile(filepath.Join(imageExample, "appliance.kiwi"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "appliance.kiwi"), kiwi, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, ".cb/cloud_builder.yml"), []byte(meta), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestLocalImageRefuses(t *testing.T) {
	host := proc.HostArch()
	meta := `schema_version: 0.1
name: img
images:
  - arch: ` + host + `
    runner_group: debian
    selection:
      name: standard
  - arch: otherarch
    runner_group: debian
    selection:
      name: standard
  - arch: ` + host + `
    runner_group: debian
    selection:
      name: evil
      build_arguments: ["--clear-cache", "--description=/"]
`
	dir := localDescription(t, "img", meta)
	pkgDir := localDescription(t, "pkg", "schema_version: 0.1\nname: pkg\ndistributions:\n  - {dist: bookworm, arch: x86_64, runner_group: debian}\n")
	tests := []struct {
		name, dir, selection, arch, want string
	}{
		{"unknown selection", dir, "nosuch", "", `no image selection "nosuch"`},
		{"other arch", dir, "standard", "otherarch", "incompatible build arch otherarch"},
		{"unconfigured arch", dir, "standard", "s390x", "for arch s390x"},
		{"bad build argument", dir, "evil", "", `"--description=/"`},
		{"bad selection name", dir, "../x", "", "invalid name"},
		{"a package", pkgDir, "standard", "", "describes no images"},
		{"no metadata", t.TempDir(), "standard", "", "cloud_builder.yml"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			res, err := LocalImage(context.Background(), Config{Tee: &out, Logger: testLogger(t)}, Local{Dir: tt.dir, Selection: tt.selection, Arch: tt.arch})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("LocalImage = %v, %v; want an error with %q", res, err, tt.want)
			}
			if out.Len() != 0 {
				t.Errorf("something ran: %s", out.String())
			}
			if m, _ := filepath.Glob(filepath.Join(tt.dir, "*@*")); len(m) != 0 {
				t.Errorf("files created: %q", m)
			}
		})
	}
}

// TestLocalImageFailure runs a local build whose kiwi call fails at once
// (its profile does not exist): the error says so, the log streams to
// out and lands next to the description, and no image is reported.
func TestLocalImageFailure(t *testing.T) {
	needKiwi(t)
	t.Setenv(image.EnvCacheRoot, testCache(t))
	host := proc.HostArch()
	dir := localDescription(t, "img", `schema_version: 0.1
name: img
images:
  - arch: `+host+`
    runner_group: debian
    selection:
      name: broken
      profiles: [nosuch]
`)
	var out bytes.Buffer
	res, err := LocalImage(context.Background(), Config{Tee: &out, Logger: testLogger(t)}, Local{Dir: dir, Selection: "broken"})
	if err == nil || !strings.Contains(err.Error(), "failed with exit code") {
		t.Fatalf("LocalImage = %+v, %v; want a failure", res, err)
	}
	if res == nil || res.ExitCode == 0 || len(res.Binaries) != 0 {
		t.Errorf("result %+v, want a non-zero exit code and no binaries", res)
	}
	if !strings.Contains(out.String(), "KiwiProfileNotFound") {
		t.Errorf("kiwi's error did not stream to out:\n%s", tail(out.String(), 20))
	}
	tgt, err := target.Local(dir, "img", "broken", host)
	if err != nil {
		t.Fatal(err)
	}
	logData, err := os.ReadFile(tgt.BuildLog())
	if err != nil || !bytes.Equal(logData, out.Bytes()) {
		t.Errorf("build log file differs from the streamed output (%v)", err)
	}
	assertClean(t, dir, tgt)
}

const imageExample = "../../examples/projects/images/debian/cb-image-tbz"

func needKiwi(t *testing.T) {
	t.Helper()
	ci := os.Getenv("CI") == "true"
	if os.Geteuid() != 0 {
		if ci {
			t.Fatal("image builds need root, and CI=true")
		}
		t.Skip("image builds need root")
	}
	for _, tool := range []string{image.Kiwi, "debootstrap", "rpm", "rpmbuild"} {
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
	dir := filepath.Join(image.DefaultCacheRoot, fmt.Sprintf("go-test-job-%d-%d", os.Getpid(), time.Now().UnixNano()))
	t.Cleanup(func() {
		if err := mountinfo.RemoveAll(dir); err != nil {
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

// assertClean checks that a local build left no work directory, mount or
// process behind.
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
		t.Errorf("mounts left below the description: %q", mps)
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
