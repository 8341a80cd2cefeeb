package native

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cloud-builder/cb/internal/buildroot"
)

func TestCommand(t *testing.T) {
	p := &buildroot.Profile{
		Name: "bookworm.x86_64", Arch: "x86_64", PackageManager: "apt",
		Repositories: []buildroot.Repository{
			{Type: buildroot.RepoAptDeb, Path: "http://archive.example.org/debian", Distribution: "bookworm", Components: []string{"main", "contrib"}},
			{Type: buildroot.RepoAptDeb, Path: "http://extra.example.org/repo", Components: []string{"main"}},
		},
		Bootstrap: []string{"ca-certificates"},
		Packages:  []string{"build-essential", "debhelper"},
	}
	argv, err := Command(p, []string{"debhelper", "libfoo-dev"}, "/cache/tmp-1", false)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"--mode=root", "--architectures=amd64", "--components=main,contrib",
		"--include=ca-certificates,build-essential,debhelper,libfoo-dev",
		// The cold-path levers (see options).
		"--dpkgopt=force-unsafe-io",
		`--aptopt=Acquire::Languages "none"`,
		slimHook(),
		`--essential-hook=echo "man-db man-db/auto-update boolean false" | chroot "$1" debconf-set-selections`,
	} {
		if !slices.Contains(argv, want) {
			t.Errorf("argv lacks %q: %q", want, argv)
		}
	}
	tail := argv[len(argv)-4:]
	want := []string{"bookworm", "/cache/tmp-1", "deb http://archive.example.org/debian bookworm main contrib", "deb http://extra.example.org/repo ./ main"}
	if !slices.Equal(tail, want) {
		t.Errorf("positional arguments = %q, want %q", tail, want)
	}

	for name, bad := range map[string]*buildroot.Profile{
		"zypper":    {PackageManager: "zypper", Repositories: p.Repositories},
		"rpm-md":    {PackageManager: "apt", Repositories: []buildroot.Repository{{Type: buildroot.RepoRpmMd, Path: "http://x.example.org/"}}},
		"flat only": {PackageManager: "apt", Repositories: []buildroot.Repository{{Type: buildroot.RepoAptDeb, Path: "http://x.example.org/"}}},
	} {
		if _, err := Command(bad, nil, "/x", false); err == nil || !strings.Contains(err.Error(), "native backend") {
			t.Errorf("%s: err = %v", name, err)
		}
	}
}

// A project repository of the collector is verified with its key.
func TestCommandSignedBy(t *testing.T) {
	p := &buildroot.Profile{Name: "bookworm.x86_64", Arch: "x86_64", PackageManager: "apt", Repositories: []buildroot.Repository{
		{Type: buildroot.RepoAptDeb, Path: "http://deb.example/debian", Distribution: "bookworm", Components: []string{"main"}},
		{Type: buildroot.RepoAptDeb, Path: "http://repo:8080/projects/T/bookworm", Distribution: "bookworm", Components: []string{"main"}, SignedBy: "/keys/repo.gpg"},
	}}
	argv, err := Command(p, nil, "/x", true)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(argv, "--mode=unshare") || slices.Contains(argv, "--mode=root") {
		t.Errorf("a root for an id range is not made in unshare mode: %q", argv)
	}
	if !slices.Contains(argv, "deb [signed-by=/keys/repo.gpg] http://repo:8080/projects/T/bookworm bookworm main") ||
		!slices.Contains(argv, "deb http://deb.example/debian bookworm main") {
		t.Fatalf("argv %q", argv)
	}
}

// Every option that changes what a root holds is in the cache key, so
// roots made under other options are not reused; whether the eatmydata
// hooks exist on this host only changes the speed and is not.
func TestKeyOptions(t *testing.T) {
	var b buildroot.Backend = Backend{}
	k, ok := b.(buildroot.Keyed)
	if !ok {
		t.Fatal("the native backend does not put its options into the cache key")
	}
	key := k.KeyOptions()
	argv, err := Command(&buildroot.Profile{Name: "bookworm.x86_64", Arch: "x86_64", PackageManager: "apt",
		Repositories: []buildroot.Repository{{Type: buildroot.RepoAptDeb, Path: "http://deb.example/debian", Distribution: "bookworm", Components: []string{"main"}}}},
		nil, "/x", false)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, a := range argv {
		if strings.HasPrefix(a, "--dpkgopt=") || strings.HasPrefix(a, "--aptopt=") || strings.HasPrefix(a, "--essential-hook=") || strings.HasPrefix(a, "--extract-hook=") {
			n++
			if !strings.Contains(key, a) {
				t.Errorf("option %q of the argv is not in the key options %q", a, key)
			}
		}
	}
	if n < 4 {
		t.Errorf("only %d content options in %q", n, argv)
	}
	if strings.Contains(key, "--hook-dir") {
		t.Errorf("key options name the eatmydata hooks: %q", key)
	}
}

// The path excludes reach dpkg after the essential set was extracted,
// and what the extraction put at an excluded path is removed.
func TestSlimHook(t *testing.T) {
	hook, ok := strings.CutPrefix(slimHook(), "--extract-hook=")
	if !ok {
		t.Fatalf("not an extract hook: %q", slimHook())
	}
	root := t.TempDir()
	files := map[string]bool{ // path: kept
		"usr/share/man/man1/sed.1.gz":       false,
		"usr/share/info/sed.info.gz":        false,
		"usr/share/locale/de/LC_MESSAGES/x": false,
		"usr/share/doc/sed/NEWS.gz":         false,
		"usr/share/doc/sed/copyright":       true,
		"usr/share/misc/magic":              true,
		"usr/bin/sed":                       true,
	}
	for f := range files {
		p := filepath.Join(root, f)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("sed", filepath.Join(root, "usr/share/doc/sed-doc")); err != nil {
		t.Fatal(err)
	}
	files["usr/share/doc/sed-doc"] = false
	// as mmdebstrap runs a hook with shell syntax
	if out, err := exec.Command("sh", "-c", hook, "exec", root).CombinedOutput(); err != nil {
		t.Fatalf("hook: %v\n%s", err, out)
	}
	for f, kept := range files {
		if _, err := os.Lstat(filepath.Join(root, f)); (err == nil) != kept {
			t.Errorf("%s: kept %v, want %v", f, err == nil, kept)
		}
	}
	cfg, err := os.ReadFile(filepath.Join(root, "etc/dpkg/dpkg.cfg.d/99cloud-builder-slim"))
	if err != nil {
		t.Fatal(err)
	}
	want := "path-exclude=/usr/share/man/*\npath-exclude=/usr/share/doc/*\npath-exclude=/usr/share/info/*\npath-exclude=/usr/share/locale/*\npath-include=/usr/share/doc/*/copyright\n"
	if string(cfg) != want {
		t.Errorf("dpkg configuration:\n%s\nwant:\n%s", cfg, want)
	}
}
