package collect_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cloud-builder/cb/internal/collect"
	"github.com/cloud-builder/cb/internal/repo/repotest"
	"github.com/cloud-builder/cb/internal/upload"
)

// sourceRepo is a bare git repository served over file:// plus a work
// tree to change it from.
type sourceRepo struct {
	bare, work string
}

func (s *sourceRepo) git(t *testing.T, args ...string) {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = s.work
	cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.org",
		"GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.org", "GIT_CONFIG_NOSYSTEM=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func newSourceRepo(t *testing.T) *sourceRepo {
	t.Helper()
	repotest.RequireTools(t, "git")
	d := t.TempDir()
	s := &sourceRepo{bare: filepath.Join(d, "src.git"), work: filepath.Join(d, "work")}
	if out, err := exec.Command("git", "init", "-q", "--bare", "-b", "main", s.bare).CombinedOutput(); err != nil {
		t.Fatalf("git init: %v\n%s", err, out)
	}
	if err := os.MkdirAll(s.work, 0o755); err != nil {
		t.Fatal(err)
	}
	s.git(t, "init", "-q", "-b", "main")
	s.git(t, "remote", "add", "origin", s.bare)
	return s
}

// metadata writes projects/Debian/<name>/.cb/cloud_builder.yml with one
// target per "dist.arch" profile.
func (s *sourceRepo) metadata(t *testing.T, name string, profiles ...string) {
	t.Helper()
	var b strings.Builder
	b.WriteString("schema_version: 0.1\nname: " + name + "\ndistributions:\n")
	for _, p := range profiles {
		dist, arch, _ := strings.Cut(p, ".")
		b.WriteString("  - dist: " + dist + "\n    arch: " + arch + "\n    runner_group: debian\n")
	}
	dir := filepath.Join(s.work, "projects", "Debian", name, ".cb")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "cloud_builder.yml"), []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

func (s *sourceRepo) commit(t *testing.T, msg string) {
	t.Helper()
	s.git(t, "add", "-A")
	s.git(t, "commit", "-q", "-m", msg)
	s.git(t, "push", "-q", "origin", "main")
}

func TestCleanupFollowsGit(t *testing.T) {
	repotest.RequireTools(t, "dpkg-deb")
	src := newSourceRepo(t)
	src.metadata(t, "hello", "bookworm.x86_64", "bookworm.aarch64")
	src.metadata(t, "other", "bookworm.x86_64")
	src.commit(t, "two packages")
	ts := newServer(t, func(c *collect.Config) { c.Project = "file://" + src.bare; c.Branch = "main" })
	ctx := ctxT(t)

	helloX := debUpload(t, "hello", "1.0", "amd64", "x86_64", "bookworm")
	helloA := debUpload(t, "hello", "1.0", "arm64", "aarch64", "bookworm")
	helloA.Arch = "aarch64"
	other := debUpload(t, "other", "1.0", "amd64", "x86_64", "bookworm")
	for _, u := range []upload.Upload{helloX, helloA, other} {
		if err := ts.client().Upload(ctx, u); err != nil {
			t.Fatal(err)
		}
	}
	repoDir := filepath.Join(ts.cfg.RepoRoot, "projects/Debian/bookworm")
	packages := func(arch string) string {
		data, err := os.ReadFile(filepath.Join(repoDir, "dists/bookworm/main/binary-"+arch+"/Packages"))
		if err != nil {
			return ""
		}
		return string(data)
	}
	check := func(step string, files map[string]bool) {
		t.Helper()
		for f, want := range files {
			if got := exists(filepath.Join(repoDir, f)); got != want {
				t.Fatalf("%s: %s present=%v, want %v", step, f, got, want)
			}
			deb := "amd64"
			if strings.HasPrefix(f, "aarch64/") {
				deb = "arm64"
			}
			if got := strings.Contains(packages(deb), "Filename: "+f+"\n"); got != want {
				t.Fatalf("%s: %s in Packages=%v, want %v", step, f, got, want)
			}
		}
	}
	hx, ha, ox := helloX.Files[0].Name, helloA.Files[0].Name, other.Files[0].Name

	if err := ts.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	check("nothing changed in git", map[string]bool{hx: true, ha: true, ox: true})

	src.metadata(t, "hello", "bookworm.x86_64")
	src.commit(t, "drop aarch64")
	if err := ts.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	check("arch removed", map[string]bool{hx: true, ha: false, ox: true})
	if exists(filepath.Join(repoDir, "dists/bookworm/main/binary-arm64")) {
		t.Fatal("arm64 index survives its last package")
	}

	src.git(t, "rm", "-r", "-q", "projects/Debian/other")
	src.commit(t, "drop other")
	if err := ts.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	check("package removed", map[string]bool{hx: true, ox: false})

	src.metadata(t, "hello", "trixie.x86_64")
	src.commit(t, "move to trixie")
	if err := ts.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	if exists(repoDir) {
		t.Fatal("the bookworm repository survives the removal of its last target")
	}
	var st collect.Status
	decodeJSON(t, get(t, ts.http.URL+"/api/v1/status", 200), &st)
	if len(st.Repositories) != 0 || st.Source.Commit == "" || st.Source.LastError != "" {
		t.Fatalf("status after cleanup: %+v", st)
	}
}

// Invalid metadata in git must not empty a repository.
func TestCleanupKeepsPackagesOfBrokenMetadata(t *testing.T) {
	repotest.RequireTools(t, "dpkg-deb")
	src := newSourceRepo(t)
	src.metadata(t, "hello", "bookworm.x86_64")
	src.commit(t, "one package")
	ts := newServer(t, func(c *collect.Config) { c.Project = "file://" + src.bare })
	ctx := ctxT(t)
	u := debUpload(t, "hello", "1.0", "amd64", "x86_64", "bookworm")
	if err := ts.client().Upload(ctx, u); err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(src.work, "projects/Debian/hello/.cb/cloud_builder.yml")
	if err := os.WriteFile(f, []byte("schema_version: 0.1\nname: [broken\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	src.commit(t, "break it")
	if err := ts.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	if !exists(filepath.Join(ts.cfg.RepoRoot, "projects/Debian/bookworm", u.Files[0].Name)) {
		t.Fatal("broken metadata removed the package")
	}
}
