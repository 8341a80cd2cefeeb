package image

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// localDescription copies the example's appliance.kiwi into a directory
// named name, with the given cloud_builder.yml.
func localDescription(t *testing.T, name, meta string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), name)
	if err := os.MkdirAll(filepath.Join(dir, ".cb"), 0o755); err != nil {
		t.Fatal(err)
	}
	kiwi, err := os.ReadFile(filepath.Join(exampleDir, "appliance.kiwi"))
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

func TestBuildLocalRefuses(t *testing.T) {
	host := HostArch()
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
			res, err := BuildLocal(context.Background(), tt.dir, tt.selection, tt.arch, &out, testLogger(t))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("BuildLocal = %v, %v; want an error with %q", res, err, tt.want)
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

// TestBuildLocalFailure runs a local build whose kiwi call fails at once
// (its profile does not exist): the error says so, the log streams to
// out and lands next to the description, and no image is reported.
func TestBuildLocalFailure(t *testing.T) {
	needKiwi(t)
	t.Setenv(EnvCacheRoot, testCache(t))
	host := HostArch()
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
	res, err := BuildLocal(context.Background(), dir, "broken", "", &out, testLogger(t))
	if err == nil || !strings.Contains(err.Error(), "failed with exit code") {
		t.Fatalf("BuildLocal = %+v, %v; want a failure", res, err)
	}
	if res == nil || res.ExitCode == 0 || len(res.Binaries) != 0 {
		t.Errorf("result %+v, want a non-zero exit code and no binaries", res)
	}
	if !strings.Contains(out.String(), "KiwiProfileNotFound") {
		t.Errorf("kiwi's error did not stream to out:\n%s", tail(out.String(), 20))
	}
	tgt := LocalTarget(dir, "img", "broken", host)
	logData, err := os.ReadFile(tgt.BuildLog())
	if err != nil || !bytes.Equal(logData, out.Bytes()) {
		t.Errorf("build log file differs from the streamed output (%v)", err)
	}
	assertClean(t, dir, tgt)
}
