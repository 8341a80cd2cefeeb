package job_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cloud-builder/cb/internal/job"
	"github.com/cloud-builder/cb/internal/target"
)

const testDescription = `<?xml version="1.0" encoding="utf-8"?>
<image schemaversion="7.5" name="hello-buildroot">
    <profiles>
        <profile name="bookworm.x86_64"/>
    </profiles>
    <preferences>
        <packagemanager>apt</packagemanager>
    </preferences>
    <repository type="apt-deb" alias="debian" distribution="bookworm" components="main">
        <source path="http://localhost/debian"/>
    </repository>
    <packages type="image">
        <package name="fakeroot"/>
    </packages>
    <packages type="bootstrap">
        <package name="ca-certificates"/>
    </packages>
</image>
`

func localPackage(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "hello")
	writeFile(t, filepath.Join(dir, ".cb/cloud_builder.yml"), "schema_version: 0.1\nname: hello\ndistributions:\n  - {dist: bookworm, arch: x86_64, runner_group: debian}\n")
	writeFile(t, filepath.Join(dir, ".cb/build_root.kiwi"), testDescription)
	writeFile(t, filepath.Join(dir, "debian/control"), "Source: hello\nBuild-Depends: debhelper-compat (= 13), libx11-dev\n\nPackage: hello\nArchitecture: any\n")
	return dir
}

func TestLocalDependencies(t *testing.T) {
	dir := localPackage(t)
	root := t.TempDir()
	cfg := job.Config{RunnerRoot: root}
	o := job.Local{Dir: dir, Dist: "bookworm", Arch: "x86_64"}

	deps, err := job.LocalDependencies(cfg, o)
	if err != nil {
		t.Fatal(err)
	}
	if deps.SolverFile != "" || deps.Requested == nil {
		t.Fatalf("no local build yet, got %+v", deps)
	}
	r := *deps.Requested
	if r.Profile != "bookworm.x86_64" || r.PackageManager != "apt" || r.Resolved ||
		strings.Join(r.Packages, ",") != "fakeroot" || strings.Join(r.Bootstrap, ",") != "ca-certificates" ||
		strings.Join(r.BuildDependencies, ",") != "build-essential,debhelper-compat,libx11-dev" ||
		len(r.Repositories) != 1 || r.Repositories[0].Distribution != "bookworm" {
		t.Fatalf("requested %+v", r)
	}

	// A local build newer than the description: its solver file wins.
	tg, err := target.New(root, "projects/local/hello", "bookworm", "x86_64")
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, tg.SolverFile(), `{"packages":{"gcc":{}}}`)
	later := time.Now().Add(time.Minute)
	os.Chtimes(tg.SolverFile(), later, later)
	deps, err = job.LocalDependencies(cfg, o)
	if err != nil {
		t.Fatal(err)
	}
	if deps.SolverFile != tg.SolverFile() || deps.Requested != nil {
		t.Fatalf("solver file of the local build not chosen: %+v", deps)
	}

	for _, bad := range []job.Local{
		{Dir: dir, Dist: "sid", Arch: "x86_64"},
		{Dir: dir, Selection: "standard", Arch: "x86_64"},
		{Dir: dir, Arch: "x86_64"},
		{Dir: dir, Dist: "bookworm", Selection: "standard", Arch: "x86_64"},
		{Dir: dir, Dist: "bookworm", Arch: "x86 64"},
		{Dir: t.TempDir(), Dist: "bookworm", Arch: "x86_64"},
	} {
		if deps, err := job.LocalDependencies(cfg, bad); err == nil {
			t.Errorf("%+v accepted: %+v", bad, deps)
		}
	}
}

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
