// Package sourcetest provides a real git sources repository for tests: a
// bare repository reachable over file:// plus a work tree to commit and
// push from, the way people change the sources of a build farm.
package sourcetest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Repo is a bare "server" repository and a work tree pushing to it.
type Repo struct {
	t    testing.TB
	Bare string // path of the bare repository
	Work string // path of the work tree
}

// New creates an empty repository with default branch main. It isolates
// git from the machine's and the user's configuration for the rest of the
// test, so it cannot be used in parallel tests.
func New(t testing.TB) *Repo {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("git is not installed")
		}
		t.Skip("git is not installed")
	}
	t.Setenv("GIT_CONFIG_GLOBAL", os.DevNull)
	t.Setenv("GIT_CONFIG_NOSYSTEM", "1")
	t.Setenv("GIT_AUTHOR_NAME", "Test Author")
	t.Setenv("GIT_AUTHOR_EMAIL", "author@example.org")
	t.Setenv("GIT_COMMITTER_NAME", "Test Author")
	t.Setenv("GIT_COMMITTER_EMAIL", "author@example.org")
	root := t.TempDir()
	r := &Repo{t: t, Bare: filepath.Join(root, "server.git"), Work: filepath.Join(root, "work")}
	r.git(root, "init", "--quiet", "--bare", "--initial-branch=main", r.Bare)
	r.git(root, "init", "--quiet", "--initial-branch=main", r.Work)
	r.Git("remote", "add", "origin", r.Bare)
	return r
}

// URL is the file:// URL of the bare repository.
func (r *Repo) URL() string { return "file://" + r.Bare }

// Git runs git in the work tree and returns its trimmed output.
func (r *Repo) Git(args ...string) string {
	r.t.Helper()
	return r.git(r.Work, args...)
}

func (r *Repo) git(dir string, args ...string) string {
	r.t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		r.t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// Write writes files (path relative to the repository root: content).
func (r *Repo) Write(files map[string]string) {
	r.t.Helper()
	for p, content := range files {
		full := filepath.Join(r.Work, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			r.t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			r.t.Fatal(err)
		}
	}
}

// Remove removes a file or directory tree.
func (r *Repo) Remove(p string) {
	r.t.Helper()
	if err := os.RemoveAll(filepath.Join(r.Work, filepath.FromSlash(p))); err != nil {
		r.t.Fatal(err)
	}
}

// Commit commits everything in the work tree and returns the commit id.
func (r *Repo) Commit(msg string) string {
	r.t.Helper()
	r.Git("add", "--all")
	r.Git("commit", "--quiet", "--allow-empty", "-m", msg)
	return r.Git("rev-parse", "HEAD")
}

// Push pushes branch main to the bare repository.
func (r *Repo) Push() {
	r.t.Helper()
	r.Git("push", "--quiet", "origin", "main")
}

// ForcePush pushes main even when it rewrote history.
func (r *Repo) ForcePush() {
	r.t.Helper()
	r.Git("push", "--quiet", "--force", "origin", "main")
}

// CommitAndPush writes files, commits and pushes, returning the commit.
func (r *Repo) CommitAndPush(msg string, files map[string]string) string {
	r.t.Helper()
	r.Write(files)
	id := r.Commit(msg)
	r.Push()
	return id
}

// PackageMetadata renders a .cb/cloud_builder.yml of a package with one
// distribution per "DIST.ARCH" profile, all for runnerGroup.
func PackageMetadata(name, runnerGroup string, profiles ...string) string {
	var b strings.Builder
	b.WriteString("schema_version: 0.1\nname: " + name + "\ndistributions:\n")
	for _, p := range profiles {
		dist, arch, _ := strings.Cut(p, ".")
		b.WriteString("  - dist: " + dist + "\n    arch: " + arch + "\n    runner_group: " + runnerGroup + "\n")
	}
	return b.String()
}

// ImageMetadata renders a .cb/cloud_builder.yml of an image with one target
// per "SELECTION.ARCH" profile, all for runnerGroup.
func ImageMetadata(name, runnerGroup string, profiles ...string) string {
	var b strings.Builder
	b.WriteString("schema_version: 0.1\nname: " + name + "\nimages:\n")
	for _, p := range profiles {
		sel, arch, _ := strings.Cut(p, ".")
		b.WriteString("  - arch: " + arch + "\n    runner_group: " + runnerGroup + "\n    selection:\n      name: " + sel + "\n")
	}
	return b.String()
}
