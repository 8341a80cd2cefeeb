package ctl_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cloud-builder/cb/internal/ctl"
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
	o := ctl.LocalDeps{Dir: dir, RunnerRoot: root, Dist: "bookworm", Arch: "x86_64"}

	var out, errOut bytes.Buffer
	if err := ctl.LocalDependencies(o, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	var r ctl.Requested
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
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
	out.Reset()
	if err := ctl.LocalDependencies(o, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	if out.String() != `{"packages":{"gcc":{}}}` {
		t.Fatalf("solver file not printed: %q", out.String())
	}

	for _, bad := range []ctl.LocalDeps{
		{Dir: dir, RunnerRoot: root, Dist: "sid", Arch: "x86_64"},
		{Dir: dir, RunnerRoot: root, Selection: "standard", Arch: "x86_64"},
		{Dir: dir, RunnerRoot: root, Arch: "x86_64"},
		{Dir: t.TempDir(), RunnerRoot: root, Dist: "bookworm", Arch: "x86_64"},
	} {
		if err := ctl.LocalDependencies(bad, &out, &errOut); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}
