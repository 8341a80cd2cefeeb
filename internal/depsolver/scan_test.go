package depsolver

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func writeTree(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(root, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

const testKiwi = `<?xml version="1.0" encoding="utf-8"?>
<image schemaversion="7.5" name="b">
  <profiles><profile name="bookworm.x86_64" description="x"/></profiles>
  <preferences><version>1</version><packagemanager>apt</packagemanager><type image="tbz"/></preferences>
  <repository type="apt-deb" distribution="bookworm" components="main"><source path="http://deb.example/debian"/></repository>
  <packages type="image"><package name="build-essential"/></packages>
  <packages type="bootstrap"><package name="ca-certificates"/></packages>
</image>`

func TestScanSources(t *testing.T) {
	dir := t.TempDir()
	meta := func(name string) string {
		return "schema_version: 0.1\nname: " + name + "\ndistributions:\n  - dist: bookworm\n    arch: x86_64\n    runner_group: debian\n"
	}
	writeTree(t, dir, map[string]string{
		"projects/T/tool/.cb/cloud_builder.yml": meta("tool"),
		"projects/T/tool/.cb/build_root.kiwi":   testKiwi,
		"projects/T/tool/.cb/depsolver.yml":     "cascade: direct\nrepositories: [projects/Other/bookworm]\n",
		"projects/T/tool/debian/control": `Source: cbgreet-tool
Build-Depends: debhelper-compat (= 13),
 libcbgreet-dev (>= 1.0) | libgreet-dev,
 win32-only [i386],
 nocheck-only <!nocheck>,
 stage1-only <stage1>,
 ${misc:Depends}

Package: cbgreet-tool
Architecture: any
Provides: greeter

Package: cbgreet-doc
Architecture: all
`,
		"projects/T/rpmtool/.cb/cloud_builder.yml": meta("rpmtool"),
		"projects/T/rpmtool/rpmtool.spec": `%global libname libgreet
Name: rpmtool
Version: 1.0
Release: 1
BuildRequires: %{libname}-devel >= 1.0, make
BuildRequires: gcc
Provides: greeter-rpm = 1.0
%package -n %{name}-extra
Summary: x
%package devel
Summary: y
%description
x
`,
		"projects/T/broken/.cb/cloud_builder.yml":   meta("broken"),
		"projects/T/broken/.cb/depsolver.yml":       "cascade: sometimes\n",
		"projects/T/broken/debian/control":          "Source: broken\n\nPackage: broken\n",
		"projects/T/notmeta/.cb/cloud_builder.yml":  "name: [\n",
		"projects/images/img/.cb/cloud_builder.yml": "schema_version: 0.1\nname: img\nimages:\n  - arch: x86_64\n    runner_group: debian\n    selection:\n      name: standard\n      profiles: [small]\n",
		"projects/images/img/appliance.kiwi": `<image schemaversion="7.5" name="img">
  <repository type="apt-deb" distribution="bookworm" components="main"><source path="http://deb.example/debian"/></repository>
  <packages type="image"><package name="netbase"/><package name="cbgreet-tool"/></packages>
  <packages type="image" profiles="big"><package name="huge"/></packages>
  <packages type="image" profiles="small"><package name="tiny"/></packages>
  <packages type="delete"><package name="gone"/></packages>
</image>`,
	})
	s := &Scanner{Dir: dir}
	ts, err := s.All(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	byID := map[string]*Target{}
	for _, x := range ts {
		byID[x.ID] = x
	}
	if len(ts) != 4 {
		t.Fatalf("targets = %v", slices.Collect(func(yield func(string) bool) {
			for k := range byID {
				yield(k)
			}
		}))
	}
	tool := byID["projects/T/tool@bookworm.x86_64"]
	var needs []string
	for _, n := range tool.Needs {
		needs = append(needs, n.String())
	}
	want := []string{"ca-certificates", "build-essential", "debhelper-compat (= 13)", "libcbgreet-dev (>= 1.0) | libgreet-dev", "nocheck-only"}
	if !slices.Equal(needs, want) {
		t.Fatalf("tool needs = %q, want %q", needs, want)
	}
	if tool.Mode != ModeDirect || !slices.Equal(tool.Scope, []string{"projects/T/bookworm", "projects/Other/bookworm"}) {
		t.Fatalf("tool mode %s scope %v", tool.Mode, tool.Scope)
	}
	if len(tool.Declared) != 2 || tool.Declared[0].Name != "cbgreet-tool" || !slices.Equal(tool.Declared[0].Provides, []string{"greeter"}) || tool.Declared[1].Arch != "all" {
		t.Fatalf("declared = %+v", tool.Declared)
	}
	if tool.Base == "" || len(tool.BaseRepos) != 1 || tool.BaseRepos[0].URL != "http://deb.example/debian" {
		t.Fatalf("base %q %+v", tool.Base, tool.BaseRepos)
	}

	rpm := byID["projects/T/rpmtool@bookworm.x86_64"]
	needs = nil
	for _, n := range rpm.Needs {
		needs = append(needs, n.String())
		if !n.ProjectOnly {
			t.Errorf("spec need %s in a buildroot without rpm package manager must be project-only", n)
		}
	}
	if !slices.Equal(needs, []string{"libgreet-devel (>= 1.0)", "make", "gcc"}) {
		t.Fatalf("rpm needs = %q", needs)
	}
	var names []string
	for _, b := range rpm.Declared {
		names = append(names, b.Name)
	}
	if !slices.Equal(names, []string{"rpmtool", "rpmtool-extra", "rpmtool-devel"}) || rpm.Format != FormatRPM {
		t.Fatalf("rpm declared = %v", names)
	}
	if broken := byID["projects/T/broken@bookworm.x86_64"]; broken == nil || !strings.Contains(broken.Err, "cascade") {
		t.Fatalf("broken = %+v", broken)
	}
	img := byID["projects/images/img@standard.x86_64"]
	needs = nil
	for _, n := range img.Needs {
		needs = append(needs, n.String())
	}
	if !slices.Equal(needs, []string{"netbase", "cbgreet-tool", "tiny"}) || img.Repo != "projects/images/standard" {
		t.Fatalf("image needs = %q repo %s", needs, img.Repo)
	}
}

func TestScanRefusesEscapes(t *testing.T) {
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{
		"projects/T/evil/.cb/cloud_builder.yml": "schema_version: 0.1\nname: evil\ndistributions:\n  - dist: bookworm\n    arch: x86_64\n    runner_group: debian\n",
		"secret/control":                        "Source: x\nBuild-Depends: secret-dep\n",
	})
	if err := os.Symlink("../../../secret", filepath.Join(dir, "projects/T/evil/debian")); err != nil {
		t.Fatal(err)
	}
	ts, err := (&Scanner{Dir: dir}).Project("projects/T/evil")
	if err != nil {
		t.Fatal(err)
	}
	if len(ts) != 1 || ts[0].Err == "" || len(ts[0].Needs) != 0 {
		t.Fatalf("a symlink out of the package must not be followed: %+v", ts)
	}
	if _, err := (&Scanner{Dir: dir}).Project("projects/../secret"); err == nil {
		t.Fatal("invalid project accepted")
	}
}

func TestParseIndexes(t *testing.T) {
	pk := `Package: libcbgreet-dev
Source: libcbgreet
Version: 1:1.1-1
Architecture: amd64
Provides: libgreet-dev (= 1.1), greet-api
Filename: amd64/libcbgreet-dev_1.1-1_amd64.deb
SHA256: aaaa

Package: cbgreet-doc
Version: 1.1-1
Architecture: all
Filename: all/cbgreet-doc_1.1-1_all.deb
SHA256: bbbb
`
	bins, err := ParsePackages(strings.NewReader(pk))
	if err != nil {
		t.Fatal(err)
	}
	if len(bins) != 2 || bins[0].Version != "1:1.1-1" || bins[0].SHA256 != "aaaa" || bins[1].Arch != "all" ||
		!slices.Equal(bins[0].Provides, []string{"libgreet-dev (= 1.1)", "greet-api"}) {
		t.Fatalf("bins = %+v", bins)
	}
	primary := `<?xml version="1.0"?>
<metadata xmlns="http://linux.duke.edu/metadata/common" xmlns:rpm="http://linux.duke.edu/metadata/rpm" packages="1">
<package type="rpm"><name>libgreet-devel</name><arch>x86_64</arch><version epoch="0" ver="1.1" rel="1"/>
<checksum type="sha256" pkgid="YES">cccc</checksum><location href="x86_64/libgreet-devel-1.1-1.x86_64.rpm"/>
<format><rpm:provides><rpm:entry name="libgreet-devel" flags="EQ" epoch="0" ver="1.1" rel="1"/><rpm:entry name="pkgconfig(greet)" flags="EQ" epoch="0" ver="1.1"/></rpm:provides></format>
</package></metadata>`
	bins, err = ParsePrimary(strings.NewReader(primary))
	if err != nil {
		t.Fatal(err)
	}
	if len(bins) != 1 || bins[0].Version != "1.1-1" || bins[0].SHA256 != "cccc" || !slices.Equal(bins[0].Provides, []string{"pkgconfig(greet) = 1.1"}) {
		t.Fatalf("bins = %+v", bins)
	}
}

// TestContentDigestIgnoresTimestamps builds the same deb twice with
// different mtimes, and once with a different file, using dpkg-deb.
func TestContentDigestIgnoresTimestamps(t *testing.T) {
	if _, err := exec.LookPath("dpkg-deb"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("dpkg-deb missing")
		}
		t.Skip("dpkg-deb missing")
	}
	dir := t.TempDir()
	mk := func(name, content string, mtime time.Time) string {
		root := filepath.Join(dir, name)
		writeTree(t, root, map[string]string{
			"DEBIAN/control":          "Package: x\nVersion: 1.0-1\nArchitecture: all\nMaintainer: m <m@example.org>\nDescription: x\n",
			"usr/share/x/data.txt":    content,
			"usr/share/x/another.txt": "fixed\n",
		})
		filepath.Walk(root, func(p string, _ os.FileInfo, _ error) error { return os.Chtimes(p, mtime, mtime) })
		out := filepath.Join(dir, name+".deb")
		cmd := exec.Command("dpkg-deb", "--root-owner-group", "-Zgzip", "--build", root, out)
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("dpkg-deb: %v: %s", err, b)
		}
		return out
	}
	a := mk("a", "hello\n", time.Unix(1e9, 0))
	b := mk("b", "hello\n", time.Unix(2e9, 0))
	c := mk("c", "changed\n", time.Unix(1e9, 0))
	ctx := context.Background()
	da, err := ContentDigest(ctx, a, FormatDeb)
	if err != nil {
		t.Fatal(err)
	}
	db, _ := ContentDigest(ctx, b, FormatDeb)
	dc, _ := ContentDigest(ctx, c, FormatDeb)
	if da != db {
		t.Fatal("only timestamps differ, digests must be equal")
	}
	if da == dc {
		t.Fatal("contents differ, digests must differ")
	}
	fa, _ := os.ReadFile(a)
	fb, _ := os.ReadFile(b)
	if string(fa) == string(fb) {
		t.Fatal("test needs files that differ byte-wise")
	}
}
