package native

import (
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
