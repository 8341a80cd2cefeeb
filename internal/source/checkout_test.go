package source_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cloud-builder/cb/internal/source"
	"github.com/cloud-builder/cb/internal/source/sourcetest"
)

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestUpdateClonesAndFollowsBranch(t *testing.T) {
	ctx := t.Context()
	r := sourcetest.New(t)
	first := r.CommitAndPush("first", map[string]string{"projects/a/file": "one"})
	dir := filepath.Join(t.TempDir(), "sources")

	head, err := source.Update(ctx, dir, r.URL(), "main", nil)
	if err != nil {
		t.Fatal(err)
	}
	if head != first {
		t.Fatalf("head after clone = %s, want %s", head, first)
	}
	if got := readFile(t, filepath.Join(dir, "projects/a/file")); got != "one" {
		t.Fatalf("file after clone = %q", got)
	}

	// Local edits and stray files must not survive: the checkout mirrors
	// the branch.
	if err := os.WriteFile(filepath.Join(dir, "projects/a/file"), []byte("local edit"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "projects/a/stray"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	second := r.CommitAndPush("second", map[string]string{"projects/a/file": "two"})
	head, err = source.Update(ctx, dir, r.URL(), "main", nil)
	if err != nil {
		t.Fatal(err)
	}
	if head != second {
		t.Fatalf("head after update = %s, want %s", head, second)
	}
	if got := readFile(t, filepath.Join(dir, "projects/a/file")); got != "two" {
		t.Fatalf("file after update = %q, want two", got)
	}
	if _, err := os.Stat(filepath.Join(dir, "projects/a/stray")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("stray file survived the update: %v", err)
	}
	if h, err := source.Head(ctx, dir); err != nil || h != second {
		t.Fatalf("Head = %s, %v; want %s", h, err, second)
	}
}

func TestUpdateBranchSelection(t *testing.T) {
	for _, tc := range []struct {
		name, remoteDefault, branch, want string
	}{
		{"default branch main", "main", "", "main"},
		{"default branch trunk", "trunk", "", "trunk"},
		{"explicit branch", "main", "release/1.0", "release/1.0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			r := sourcetest.New(t)
			commits := map[string]string{}
			for _, b := range []string{"main", "trunk", "release/1.0"} {
				r.Git("checkout", "--quiet", "-B", b)
				r.Write(map[string]string{"branch": b})
				commits[b] = r.Commit("on " + b)
				r.Git("push", "--quiet", "origin", b)
			}
			r.Git("--git-dir", r.Bare, "symbolic-ref", "HEAD", "refs/heads/"+tc.remoteDefault)
			dir := filepath.Join(t.TempDir(), "sources")
			head, err := source.Update(ctx, dir, r.URL(), tc.branch, nil)
			if err != nil {
				t.Fatal(err)
			}
			if head != commits[tc.want] {
				t.Fatalf("head = %s, want the head of %s (%s)", head, tc.want, commits[tc.want])
			}
			if got := readFile(t, filepath.Join(dir, "branch")); got != tc.want {
				t.Fatalf("checked out %q, want %q", got, tc.want)
			}
		})
	}
}

func TestUpdateReplacesBrokenCheckout(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, dir string)
	}{
		{"plain directory", func(t *testing.T, dir string) {
			os.RemoveAll(dir)
			os.MkdirAll(filepath.Join(dir, "projects"), 0o755)
		}},
		{"empty .git", func(t *testing.T, dir string) {
			os.RemoveAll(filepath.Join(dir, ".git"))
			os.MkdirAll(filepath.Join(dir, ".git"), 0o755)
		}},
		{"corrupt index", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, ".git/index"), []byte("garbage"), 0o644)
		}},
		{"stale index.lock of a killed git", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, ".git/index.lock"), nil, 0o644)
		}},
		{"objects lost", func(t *testing.T, dir string) {
			os.RemoveAll(filepath.Join(dir, ".git/objects"))
			os.MkdirAll(filepath.Join(dir, ".git/objects"), 0o755)
		}},
		{"a file instead of a directory", func(t *testing.T, dir string) {
			os.RemoveAll(dir)
			os.WriteFile(dir, []byte("x"), 0o644)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			r := sourcetest.New(t)
			r.CommitAndPush("first", map[string]string{"projects/a/file": "one"})
			dir := filepath.Join(t.TempDir(), "sources")
			if _, err := source.Update(ctx, dir, r.URL(), "main", nil); err != nil {
				t.Fatal(err)
			}
			second := r.CommitAndPush("second", map[string]string{"projects/a/file": "two"})
			tc.damage(t, dir)
			head, err := source.Update(ctx, dir, r.URL(), "main", nil)
			if err != nil {
				t.Fatalf("update of a broken checkout: %v", err)
			}
			if head != second {
				t.Fatalf("head = %s, want %s", head, second)
			}
			if got := readFile(t, filepath.Join(dir, "projects/a/file")); got != "two" {
				t.Fatalf("file = %q, want two", got)
			}
			if left, _ := filepath.Glob(dir + ".clone-*"); len(left) > 0 {
				t.Fatalf("temporary clones left behind: %v", left)
			}
		})
	}
}

func TestUpdateForcePush(t *testing.T) {
	ctx := t.Context()
	r := sourcetest.New(t)
	base := r.CommitAndPush("base", map[string]string{"projects/a/file": "base"})
	r.CommitAndPush("old", map[string]string{"projects/a/file": "old"})
	dir := filepath.Join(t.TempDir(), "sources")
	if _, err := source.Update(ctx, dir, r.URL(), "main", nil); err != nil {
		t.Fatal(err)
	}
	r.Git("reset", "--quiet", "--hard", base)
	r.Write(map[string]string{"projects/a/file": "rewritten"})
	rewritten := r.Commit("rewritten")
	r.ForcePush()

	head, err := source.Update(ctx, dir, r.URL(), "main", nil)
	if err != nil {
		t.Fatal(err)
	}
	if head != rewritten {
		t.Fatalf("head = %s, want %s", head, rewritten)
	}
	if got := readFile(t, filepath.Join(dir, "projects/a/file")); got != "rewritten" {
		t.Fatalf("file = %q, want rewritten", got)
	}
}

func TestUpdateServerDown(t *testing.T) {
	ctx := t.Context()
	r := sourcetest.New(t)
	first := r.CommitAndPush("first", map[string]string{"projects/a/file": "one"})
	dir := filepath.Join(t.TempDir(), "sources")
	if _, err := source.Update(ctx, dir, r.URL(), "main", nil); err != nil {
		t.Fatal(err)
	}
	second := r.CommitAndPush("second", map[string]string{"projects/a/file": "two"})
	away := r.Bare + ".away"
	if err := os.Rename(r.Bare, away); err != nil {
		t.Fatal(err)
	}
	for _, branch := range []string{"main", ""} {
		if _, err := source.Update(ctx, dir, r.URL(), branch, nil); err == nil {
			t.Fatalf("update with the server gone (branch %q) succeeded", branch)
		}
	}
	// The old checkout is kept while the server is away.
	if h, err := source.Head(ctx, dir); err != nil || h != first {
		t.Fatalf("head while the server is down = %s, %v; want %s", h, err, first)
	}
	if err := os.Rename(away, r.Bare); err != nil {
		t.Fatal(err)
	}
	head, err := source.Update(ctx, dir, r.URL(), "main", nil)
	if err != nil || head != second {
		t.Fatalf("update after the server is back = %s, %v; want %s", head, err, second)
	}
}

func TestUpdateFirstCloneServerDown(t *testing.T) {
	sourcetest.New(t) // isolates git from the machine's configuration
	dir := filepath.Join(t.TempDir(), "sources")
	if _, err := source.Update(t.Context(), dir, "file://"+filepath.Join(t.TempDir(), "missing.git"), "main", nil); err == nil {
		t.Fatal("clone of a missing repository succeeded")
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("failed clone left %s behind: %v", dir, err)
	}
}

func TestUpdateChangedURL(t *testing.T) {
	ctx := t.Context()
	a, b := sourcetest.New(t), sourcetest.New(t)
	a.CommitAndPush("a", map[string]string{"which": "a"})
	bHead := b.CommitAndPush("b", map[string]string{"which": "b"})
	dir := filepath.Join(t.TempDir(), "sources")
	if _, err := source.Update(ctx, dir, a.URL(), "", nil); err != nil {
		t.Fatal(err)
	}
	head, err := source.Update(ctx, dir, b.URL(), "", nil)
	if err != nil || head != bHead {
		t.Fatalf("update from another URL = %s, %v; want %s", head, err, bHead)
	}
	if got := readFile(t, filepath.Join(dir, "which")); got != "b" {
		t.Fatalf("checkout holds %q, want b", got)
	}
}

func TestPull(t *testing.T) {
	ctx := t.Context()
	r := sourcetest.New(t)
	r.CommitAndPush("first", map[string]string{"projects/a/file": "one"})
	dir := filepath.Join(t.TempDir(), "sources")
	if err := source.Pull(ctx, dir, nil); !errors.Is(err, source.ErrNoCheckout) {
		t.Fatalf("Pull without checkout = %v, want ErrNoCheckout", err)
	}
	if _, err := source.Update(ctx, dir, r.URL(), "", nil); err != nil {
		t.Fatal(err)
	}
	second := r.CommitAndPush("second", map[string]string{"projects/a/file": "two"})
	if err := source.Pull(ctx, dir, nil); err != nil {
		t.Fatal(err)
	}
	if h, _ := source.Head(ctx, dir); h != second {
		t.Fatalf("head after Pull = %s, want %s", h, second)
	}
	if got := readFile(t, filepath.Join(dir, "projects/a/file")); got != "two" {
		t.Fatalf("file after Pull = %q", got)
	}
}

// TestConcurrentUpdateAndPull runs cb-fetch's Update and cb-scheduler's
// Pull on one checkout at the same time. Without the checkout lock, git
// fails with "index.lock: File exists" or worse within a few rounds.
func TestConcurrentUpdateAndPull(t *testing.T) {
	ctx := t.Context()
	r := sourcetest.New(t)
	r.CommitAndPush("first", map[string]string{"projects/a/file": "0"})
	dir := filepath.Join(t.TempDir(), "sources")
	if _, err := source.Update(ctx, dir, r.URL(), "main", nil); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for w := range 4 {
		wg.Go(func() {
			for i := range 5 {
				var err error
				if w%2 == 0 {
					_, err = source.Update(ctx, dir, r.URL(), "main", nil)
				} else {
					err = source.Pull(ctx, dir, nil)
				}
				if err != nil {
					errs <- fmt.Errorf("worker %d round %d: %w", w, i, err)
				}
			}
		})
	}
	for i := 1; i <= 5; i++ {
		r.CommitAndPush(fmt.Sprint("commit ", i), map[string]string{"projects/a/file": fmt.Sprint(i), fmt.Sprintf("projects/a/f%d", i): "x"})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestPullWaitsForLock(t *testing.T) {
	ctx := t.Context()
	r := sourcetest.New(t)
	r.CommitAndPush("first", map[string]string{"f": "1"})
	dir := filepath.Join(t.TempDir(), "sources")
	if _, err := source.Update(ctx, dir, r.URL(), "main", nil); err != nil {
		t.Fatal(err)
	}
	second := r.CommitAndPush("second", map[string]string{"f": "2"})

	// Another process holds the lock, as cb-fetch in the middle of a poll
	// would.
	if _, err := exec.LookPath("flock"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("flock(1) not installed")
		}
		t.Skip("flock(1) not installed")
	}
	holder := exec.Command("flock", source.LockPath(dir), "sleep", "30")
	// flock(1) forks sleep, which inherits the locked descriptor: only
	// killing the whole group releases the lock.
	holder.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	release := func() { syscall.Kill(-holder.Process.Pid, syscall.SIGKILL); holder.Wait() }
	t.Cleanup(func() { syscall.Kill(-holder.Process.Pid, syscall.SIGKILL) })
	waitLocked(t, source.LockPath(dir))

	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if err := source.Pull(short, dir, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Pull while the checkout is locked = %v, want a deadline error", err)
	}

	done := make(chan error, 1)
	go func() { done <- source.Pull(ctx, dir, nil) }()
	select {
	case err := <-done:
		t.Fatalf("Pull finished while another process held the lock: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	release()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Pull did not continue after the lock was released")
	}
	if h, _ := source.Head(ctx, dir); h != second {
		t.Fatalf("head = %s, want %s", h, second)
	}
}

// waitLocked waits until some process holds an exclusive lock on p.
func waitLocked(t *testing.T, p string) {
	t.Helper()
	for range 200 {
		if err := exec.Command("flock", "--nonblock", "--shared", p, "true").Run(); err != nil {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("the lock holder never took the lock")
}

func TestValidateURL(t *testing.T) {
	for _, tc := range []struct {
		url string
		ok  bool
	}{
		{"https://git.example.org/farm/sources.git", true},
		{"ssh://git@git.example.org/farm/sources.git", true},
		{"git@git.example.org:farm/sources.git", true},
		{"file:///srv/git/sources.git", true},
		{"/srv/git/sources.git", true},
		{"ssh://git@[::1]:2222/sources.git", true},
		{"", false},
		{"--upload-pack=touch /tmp/x", false},
		{"ext::sh -c touch% /tmp/pwned", false},
		{"fd::3", false},
		{"https://host/repo\nother", false},
		{"ftp://host/repo", false},
	} {
		t.Run(tc.url, func(t *testing.T) {
			if err := source.ValidateURL(tc.url); (err == nil) != tc.ok {
				t.Fatalf("ValidateURL(%q) = %v, want ok=%v", tc.url, err, tc.ok)
			}
		})
	}
}

func TestValidateBranch(t *testing.T) {
	for _, tc := range []struct {
		b  string
		ok bool
	}{
		{"main", true}, {"release/1.0", true}, {"feature_x-2", true},
		{"", false}, {"-f", false}, {"a..b", false}, {"a/", false}, {"a.lock", false},
		{"a b", false}, {"a/.b", false}, {"a//b", false}, {strings.Repeat("a", 300), false},
	} {
		t.Run(tc.b, func(t *testing.T) {
			if err := source.ValidateBranch(tc.b); (err == nil) != tc.ok {
				t.Fatalf("ValidateBranch(%q) = %v, want ok=%v", tc.b, err, tc.ok)
			}
		})
	}
}

func TestUpdateRejectsBadInput(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "sources")
	if _, err := source.Update(t.Context(), dir, "ext::sh -c id", "main", nil); err == nil {
		t.Fatal("Update accepted an ext:: URL")
	}
	if _, err := source.Update(t.Context(), dir, "file:///nonexistent", "--orphan", nil); err == nil {
		t.Fatal("Update accepted an option as branch")
	}
}
