package buildroot

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cloud-builder/cb/internal/target"
)

func writeRepo(t *testing.T, dir, packages string) {
	t.Helper()
	p := filepath.Join(dir, "projects", "T", "bookworm", "dists", "bookworm")
	if err := os.MkdirAll(filepath.Join(p, "main", "binary-amd64"), 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(p, "InRelease"), []byte(packages), 0o644)
	os.WriteFile(filepath.Join(p, "main", "binary-amd64", "Packages"), []byte(packages), 0o644)
}

func TestProjectRepositories(t *testing.T) {
	ctx := context.Background()
	collector := t.TempDir()
	key := filepath.Join(t.TempDir(), "repo.gpg")
	os.WriteFile(key, []byte("key"), 0o644)
	pkgDir := t.TempDir()
	pr := &ProjectRepos{URL: "file://" + collector, KeyFile: key}
	tg := target.Target{Root: t.TempDir(), Project: "projects/T/tool", Profile: "bookworm.x86_64"}
	prof := &Profile{Name: "bookworm.x86_64", Arch: "x86_64", PackageManager: "apt"}
	var log []string
	step := func(f string, a ...any) { log = append(log, f) }

	// Not published yet: no repository, no error.
	repos, err := projectRepositories(ctx, pr, t.TempDir(), pkgDir, tg, prof, KindDebian, []string{"libcbgreet-dev"}, step)
	if err != nil || len(repos) != 0 {
		t.Fatalf("unpublished: %v %v", repos, err)
	}
	lib := "Package: libcbgreet-dev\nVersion: 1.0-1\nArchitecture: amd64\nDepends: libcbgreet1 (= 1.0-1)\nSHA256: aa\nFilename: amd64/x.deb\n\n" +
		"Package: libcbgreet1\nVersion: 1.0-1\nArchitecture: amd64\nSHA256: bb\nFilename: amd64/y.deb\n\n"
	other := "Package: unrelated\nVersion: 1\nArchitecture: all\nSHA256: cc\nFilename: all/z.deb\n\n"
	writeRepo(t, collector, lib+other)
	repos, err = projectRepositories(ctx, pr, t.TempDir(), pkgDir, tg, prof, KindDebian, []string{"libcbgreet-dev", "gcc"}, step)
	if err != nil || len(repos) != 1 {
		t.Fatalf("repos %v %v", repos, err)
	}
	r := repos[0]
	if r.Path != "file://"+collector+"/projects/T/bookworm" || r.Distribution != "bookworm" || !strings.Contains(r.SignedBy, "collector-") || r.KeyDigest == "" {
		t.Fatalf("repo %+v", r)
	}
	// Another package of the project changes: the key stays.
	writeRepo(t, collector, lib+strings.Replace(other, "Version: 1", "Version: 2", 1))
	again, _ := projectRepositories(ctx, pr, t.TempDir(), pkgDir, tg, prof, KindDebian, []string{"libcbgreet-dev"}, step)
	if len(again) != 1 || again[0].KeyDigest != r.KeyDigest {
		t.Fatalf("unrelated change changed the key: %+v", again)
	}
	// A dependency of a needed package changes: a new key.
	writeRepo(t, collector, strings.Replace(lib, "SHA256: bb", "SHA256: dd", 1)+other)
	again, _ = projectRepositories(ctx, pr, t.TempDir(), pkgDir, tg, prof, KindDebian, []string{"libcbgreet-dev"}, step)
	if len(again) != 1 || again[0].KeyDigest == r.KeyDigest {
		t.Fatal("changed dependency kept the key")
	}
	// Nothing needed: left out.
	if none, _ := projectRepositories(ctx, pr, t.TempDir(), pkgDir, tg, prof, KindDebian, []string{"gcc"}, step); len(none) != 0 {
		t.Fatalf("unneeded repository added: %+v", none)
	}
	// Specs and opted-out packages get none.
	if none, _ := projectRepositories(ctx, pr, t.TempDir(), pkgDir, tg, prof, KindSpec, []string{"libcbgreet-dev"}, step); len(none) != 0 {
		t.Fatal("spec got an apt project repository")
	}
	os.MkdirAll(filepath.Join(pkgDir, ".cb"), 0o755)
	os.WriteFile(filepath.Join(pkgDir, ".cb", "depsolver.yml"), []byte("project_repository: false\n"), 0o644)
	if none, _ := projectRepositories(ctx, pr, t.TempDir(), pkgDir, tg, prof, KindDebian, []string{"libcbgreet-dev"}, step); len(none) != 0 {
		t.Fatal("opt-out ignored")
	}
	// ... and may name other repositories of the collector instead.
	os.WriteFile(filepath.Join(pkgDir, ".cb", "depsolver.yml"), []byte("project_repository: false\nrepositories: [projects/T/bookworm]\n"), 0o644)
	if extra, err := projectRepositories(ctx, pr, t.TempDir(), pkgDir, tg, prof, KindDebian, []string{"libcbgreet-dev"}, step); err != nil || len(extra) != 1 {
		t.Fatalf("extra repositories: %v %v", extra, err)
	}
	os.WriteFile(filepath.Join(pkgDir, ".cb", "depsolver.yml"), []byte("repositories: [../../etc]\n"), 0o644)
	if _, err := projectRepositories(ctx, pr, t.TempDir(), pkgDir, tg, prof, KindDebian, nil, step); err == nil {
		t.Fatal("escaping repository accepted")
	}
}
