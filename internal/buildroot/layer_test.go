package buildroot

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func layerProfile(digest string) *Profile {
	return &Profile{
		Name: "bookworm.x86_64", Arch: "x86_64", PackageManager: "apt",
		Repositories: []Repository{{Type: RepoAptDeb, Path: "http://archive.example.org/debian",
			Distribution: "bookworm", Components: []string{"main"}, KeyDigest: digest}},
		Bootstrap: []string{"ca-certificates"},
		Packages:  []string{"debhelper", "fakeroot"},
	}
}

// kiwiNamed is a backend by kiwi's name, for keys only.
type kiwiNamed struct{}

func (kiwiNamed) Name() string                                { return BackendKiwi }
func (kiwiNamed) Create(context.Context, CreateRequest) error { return nil }

func mustBaseKey(t *testing.T, p *Profile) string {
	t.Helper()
	return mustBaseKeyOf(t, keyedBackend{opts: "unsafe-io"}, p)
}

func mustBaseKeyOf(t *testing.T, b Backend, p *Profile) string {
	t.Helper()
	k, err := baseLayerKey(context.Background(), b, baseProfile(p), func(string, ...any) {})
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func mustTargetKey(t *testing.T, base, gen string, deps []string, extra ...Repository) string {
	t.Helper()
	return mustTargetKeyRPMs(t, base, gen, deps, nil, extra...)
}

func mustTargetKeyRPMs(t *testing.T, base, gen string, deps []string, rpms *projectRPMs, extra ...Repository) string {
	t.Helper()
	k, err := targetLayerKey(context.Background(), base, gen, deps, extra, rpms, func(string, ...any) {})
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestBaseProfileAddsBasePackages(t *testing.T) {
	p := layerProfile("d1")
	b := baseProfile(p)
	if !slices.Contains(b.Packages, "build-essential") || slices.Contains(p.Packages, "build-essential") {
		t.Fatalf("base packages %v (profile's %v)", b.Packages, p.Packages)
	}
	p.Packages = append(p.Packages, "build-essential")
	if n := len(baseProfile(p).Packages); n != len(p.Packages) {
		t.Errorf("build-essential listed twice: %v", baseProfile(p).Packages)
	}
	// Listing build-essential in the description or not asks for the
	// same base.
	if mustBaseKey(t, p) != mustBaseKey(t, layerProfile("d1")) {
		t.Error("an explicit build-essential gives another base layer")
	}
}

func TestLayerKeys(t *testing.T) {
	base := mustBaseKey(t, layerProfile("d1"))
	if len(base) != 64 || !keyRE.MatchString(base) {
		t.Fatalf("base key %q is no cache key", base)
	}
	deps := []string{"build-essential", "debhelper-compat", "zlib1g-dev"}
	target := mustTargetKey(t, base, "root-1", deps)

	// The same dependency set shares the target layer, in any order.
	if got := mustTargetKey(t, base, "root-1", []string{"zlib1g-dev", "debhelper-compat", "build-essential", "zlib1g-dev"}); got != target {
		t.Error("the same dependency set gives another target layer")
	}
	// Another dependency set: a new target layer on the same base.
	if got := mustTargetKey(t, base, "root-1", append(deps, "libssl-dev")); got == target {
		t.Error("a new build dependency keeps the target layer")
	}
	if got := mustTargetKey(t, base, "root-1", deps[:2]); got == target {
		t.Error("a dropped build dependency keeps the target layer")
	}
	// A new base generation (a fresh root) gets new target layers.
	if got := mustTargetKey(t, base, "root-2", deps); got == target {
		t.Error("a rebuilt base layer keeps the target layer")
	}
	// The project repositories are the target layer's, by index.
	proj := Repository{Type: RepoAptDeb, Path: "http://collector.example.org/projects/Debian/bookworm",
		Distribution: "./", KeyDigest: "p1", SignedBy: "/cache/collector.gpg"}
	withProj := mustTargetKey(t, base, "root-1", deps, proj)
	if withProj == target {
		t.Error("a project repository keeps the target layer")
	}
	proj.KeyDigest = "p2"
	if mustTargetKey(t, base, "root-1", deps, proj) == withProj {
		t.Error("a new project repository index keeps the target layer")
	}

	// The base does not depend on the target's build dependencies, but on
	// every input of the root it holds.
	for name, change := range map[string]func(p *Profile){
		"repository index": func(p *Profile) { p.Repositories[0].KeyDigest = "d2" },
		"repository":       func(p *Profile) { p.Repositories[0].Path = "http://other.example.org/debian" },
		"distribution":     func(p *Profile) { p.Repositories[0].Distribution = "trixie" },
		"components":       func(p *Profile) { p.Repositories[0].Components = []string{"main", "contrib"} },
		"image packages":   func(p *Profile) { p.Packages = append(p.Packages, "rpm") },
		"bootstrap":        func(p *Profile) { p.Bootstrap = nil },
		"arch":             func(p *Profile) { p.Arch = "aarch64" },
		"profile":          func(p *Profile) { p.Name = "trixie.x86_64" },
	} {
		p := layerProfile("d1")
		change(p)
		if mustBaseKey(t, p) == base {
			t.Errorf("a %s change keeps the base layer", name)
		}
	}
	if mustBaseKeyOf(t, kiwiNamed{}, layerProfile("d1")) == base {
		t.Error("another backend shares the base layer")
	}
	// The backend's own options (what it leaves out of a root) are part
	// of the base layer's key.
	if mustBaseKeyOf(t, keyedBackend{opts: "safe-io"}, layerProfile("d1")) == base {
		t.Error("other backend options share the base layer")
	}
	// A description that differs only in what the root does not depend
	// on (package order, duplicates) asks for the same base.
	p := layerProfile("d1")
	p.Packages = []string{"fakeroot", "debhelper", "fakeroot"}
	if mustBaseKey(t, p) != base {
		t.Error("package order changes the base layer")
	}
	// A repository index change gives a new base and so new target layers.
	p = layerProfile("d2")
	if mustTargetKey(t, mustBaseKey(t, p), "root-1", deps) == target {
		t.Error("a repository index change keeps the target layer")
	}
}

func TestReadLayoutLayers(t *testing.T) {
	p := filepath.Join(t.TempDir(), LayoutFile)
	for lower, ok := range map[string]bool{
		"/cache/t/root-1:/cache/b/root-2": true,
		"/cache/b/root-2":                 true,
		"/cache/t/root-1:":                false,
		":/cache/b/root-2":                false,
		"/cache/t/root-1:relative":        false,
		"/cache/t/../root-1:/cache/b":     false,
		"/cache/t:/b,upperdir=/etc":       false,
	} {
		must(t, writeJSON(p, Layout{Lower: lower, Upper: "/u", Work: "/w", Merged: "/m"}))
		if _, err := readLayout(p); (err == nil) != ok {
			t.Errorf("lower %q: err = %v", lower, err)
		}
	}
}

// A layout keeps the generations of all its layers; the rest go.
func TestReferencedLayers(t *testing.T) {
	c := cache{dir: t.TempDir()}
	base, tgt := strings.Repeat("b", 64), strings.Repeat("a", 64)
	for _, k := range []string{base, tgt} {
		for _, g := range []string{"root-old", "root-new"} {
			must(t, os.MkdirAll(filepath.Join(c.keyDir(k), g), 0o755))
		}
		must(t, os.WriteFile(filepath.Join(c.keyDir(k), "current"), []byte("root-new\n"), 0o644))
	}
	layout := filepath.Join(t.TempDir(), LayoutFile)
	must(t, writeJSON(layout, Layout{Lower: filepath.Join(c.keyDir(tgt), "root-old") + ":" + filepath.Join(c.keyDir(base), "root-old"),
		Upper: "/u", Work: "/w", Merged: "/m"}))
	for _, k := range []string{base, tgt} {
		must(t, c.addRef(k, layout))
		must(t, c.pruneGenerations(k))
		if _, err := os.Stat(filepath.Join(c.keyDir(k), "root-old")); err != nil {
			t.Errorf("layer generation in use removed: %v", err)
		}
	}
	must(t, os.Remove(layout))
	for _, k := range []string{base, tgt} {
		must(t, c.pruneGenerations(k))
		if _, err := os.Stat(filepath.Join(c.keyDir(k), "root-old")); err == nil {
			t.Error("unused layer generation kept")
		}
		if _, err := os.Stat(filepath.Join(c.keyDir(k), "root-new")); err != nil {
			t.Errorf("current generation removed: %v", err)
		}
	}
}

func TestInstalledNames(t *testing.T) {
	root := t.TempDir()
	must(t, os.MkdirAll(filepath.Join(root, "var/lib/dpkg"), 0o755))
	status := `Package: debhelper
Status: install ok installed
Version: 13.11.4
Provides: debhelper-compat (= 13), dh-sequence-foo

Package: removed
Status: deinstall ok config-files
Provides: ghost

Package: half
Status: install reinstreq half-installed

Package: zlib1g
Status: install ok installed
Provides: libz1(=1)
Description: compression
 continuation line: not a field
`
	must(t, os.WriteFile(filepath.Join(root, "var/lib/dpkg/status"), []byte(status), 0o644))
	names, err := installedNames(root)
	if err != nil {
		t.Fatal(err)
	}
	for n, want := range map[string]bool{"debhelper": true, "debhelper-compat": true, "dh-sequence-foo": true, "zlib1g": true,
		"libz1": true, "removed": false, "ghost": false, "half": false, "continuation": false} {
		if names[n] != want {
			t.Errorf("%s: %v, want %v (%v)", n, names[n], want, names)
		}
	}
}

// A spec target's project rpm packages are its target layer's: a new
// version or file of one gives a new layer on the same base, the same
// packages share it.
func TestTargetLayerKeyProjectRPMs(t *testing.T) {
	base := mustBaseKey(t, layerProfile("d1"))
	lib := rpmPackage{Name: "greet-devel", Arch: "x86_64", Ver: "1.0", Rel: "1", SumType: "sha256",
		Sum: "aa", Location: "x86_64/greet-devel-1.0-1.x86_64.rpm", repo: "http://collector.example/projects/Fedora/rawhide"}
	set := func(ps ...rpmPackage) *projectRPMs { return &projectRPMs{Packages: ps} }
	none := mustTargetKey(t, base, "root-1", nil)
	with := mustTargetKeyRPMs(t, base, "root-1", nil, set(lib))
	if with == none {
		t.Fatal("project rpm packages keep the target layer of none")
	}
	if mustTargetKeyRPMs(t, base, "root-1", nil, set(lib)) != with {
		t.Error("the same project packages give another target layer")
	}
	newer := lib
	newer.Ver = "1.1"
	if mustTargetKeyRPMs(t, base, "root-1", nil, set(newer)) == with {
		t.Error("a new version keeps the target layer")
	}
	rebuilt := lib
	rebuilt.Sum = "bb"
	if mustTargetKeyRPMs(t, base, "root-1", nil, set(rebuilt)) == with {
		t.Error("a rebuilt package file keeps the target layer")
	}
	if mustTargetKeyRPMs(t, base, "root-2", nil, set(lib)) == with {
		t.Error("a rebuilt base keeps the target layer")
	}
}
