package buildroot

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloud-builder/cb/internal/cachebudget"
	"github.com/cloud-builder/cb/internal/mirror"
	"github.com/cloud-builder/cb/internal/target"
)

// The tests evict with tiny budgets: never the machine's kiwi cache.
func init() { backendCaches = false }

// release drops this process's use lock of key (the tests' stand-in for
// the end of a job process).
func release(c cache, key string) {
	heldMu.Lock()
	defer heldMu.Unlock()
	if f := held[c.usePath(key)]; f != nil {
		f.Close()
		delete(held, c.usePath(key))
	}
}

func kept(c cache, key string) bool {
	_, err := os.Stat(c.keyDir(key))
	return err == nil
}

func TestBudgetRootsInUseAreNeverEvicted(t *testing.T) {
	ctx := context.Background()
	c := cache{dir: t.TempDir()}
	now := time.Now()
	var keys []string
	for i := 0; i < 5; i++ {
		k, _ := fakeEntry(t, c, i, now.Add(-time.Duration(10-i)*time.Hour))
		must(t, os.WriteFile(filepath.Join(c.keyDir(k), "root-test", "usr", "blob"), make([]byte, 32<<10), 0o644))
		keys = append(keys, k)
	}
	// keys[0], the oldest, is being prepared (key lock); keys[1] has a
	// layout loaded by a process that runs (use lock); keys[2] is
	// pointed at by a target's layout.json; keys[3] and keys[4] are free.
	unlock, ok, err := c.lockKey(ctx, keys[0], false)
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	defer unlock()
	must(t, c.hold(ctx, keys[1]))
	defer release(c, keys[1])
	layoutPath := filepath.Join(t.TempDir(), LayoutFile)
	must(t, writeJSON(layoutPath, Layout{Lower: filepath.Join(c.keyDir(keys[2]), "root-test"), Upper: "/u", Work: "/w", Merged: "/m"}))
	must(t, c.addRef(keys[2], layoutPath))
	// A half-written root of another key: no complete generation.
	half := strings.Repeat("f", 64)
	must(t, os.MkdirAll(filepath.Join(c.keyDir(half), "tmp-123", "usr"), 0o755))

	res, err := cachebudget.Enforce(ctx, c.dir, 1, BudgetSources(c.dir), nil)
	if err != nil {
		t.Fatal(err)
	}
	// Unreferenced first (keys[3] is older than keys[4]), then the
	// referenced one; the locked ones stay.
	want := []string{"root/" + keys[3], "root/" + keys[4], "root/" + keys[2]}
	if strings.Join(res.Evicted, " ") != strings.Join(want, " ") {
		t.Errorf("evicted %v, want %v", res.Evicted, want)
	}
	for i, k := range keys {
		if got := kept(c, k); got != (i <= 1) {
			t.Errorf("entry %d kept=%v", i, got)
		}
	}
	if !kept(c, half) {
		t.Error("half-written entry removed")
	}
	if u := res.State.Kinds[KindRoot]; u.Entries != 2 || u.Evictions != 3 || u.EvictedBytes <= 3*(32<<10) {
		t.Errorf("root usage %+v", u)
	}
	// Once the process holding keys[1] is gone, it may go too.
	release(c, keys[1])
	res, err = cachebudget.Enforce(ctx, c.dir, 1, BudgetSources(c.dir), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Evicted) != 1 || kept(c, keys[1]) || !kept(c, keys[0]) {
		t.Errorf("after release: evicted %v", res.Evicted)
	}
}

func TestBudgetDownloadsLeastRecentlyUsedAndLocked(t *testing.T) {
	ctx := context.Background()
	c := cache{dir: t.TempDir()}
	dl := filepath.Join(c.dir, "downloads", testBackend.Name())
	must(t, os.MkdirAll(dl, 0o755))
	for _, n := range []string{"a.deb", "b.deb", "c.deb"} {
		must(t, os.WriteFile(filepath.Join(dl, n), make([]byte, 16<<10), 0o644))
		time.Sleep(20 * time.Millisecond)
	}
	must(t, os.WriteFile(filepath.Join(dl, "partial.tmp"), make([]byte, 16<<10), 0o644))
	// A root links a.deb, as the native backend does: its ctime moves,
	// it is now the most recently used.
	must(t, os.Link(filepath.Join(dl, "a.deb"), filepath.Join(c.dir, "linked")))
	must(t, os.Remove(filepath.Join(c.dir, "linked")))

	// While a root is created with the downloads, none goes.
	unlock, err := c.useDownloads(ctx, testBackend.Name())
	must(t, err)
	res, err := cachebudget.Enforce(ctx, c.dir, 1, BudgetSources(c.dir), nil)
	must(t, err)
	if len(res.Evicted) != 0 || res.State.Kinds[KindDownloads].Entries != 3 {
		t.Fatalf("evicted %v while in use; usage %+v", res.Evicted, res.State.Kinds[KindDownloads])
	}
	unlock()

	var one int64
	for _, e := range mustList(t, downloadSource{c: c, backend: testBackend.Name()}) {
		one = e.Size
	}
	// Room for one package: b and c go, b first.
	res, err = cachebudget.Enforce(ctx, c.dir, one, BudgetSources(c.dir), nil)
	must(t, err)
	b := testBackend.Name()
	if strings.Join(res.Evicted, " ") != "downloads/"+b+"/b.deb downloads/"+b+"/c.deb" {
		t.Errorf("evicted %v", res.Evicted)
	}
	for n, want := range map[string]bool{"a.deb": true, "b.deb": false, "c.deb": false, "partial.tmp": true} {
		if _, err := os.Stat(filepath.Join(dl, n)); (err == nil) != want {
			t.Errorf("%s exists=%v, want %v", n, err == nil, want)
		}
	}
}

func mustList(t *testing.T, s cachebudget.Source) []cachebudget.Entry {
	t.Helper()
	ents, err := s.List(context.Background())
	must(t, err)
	return ents
}

// TestBudgetEvictVersusPrepare races the evictor against prepares of the
// same key: a prepare holds the key lock from the cache lookup until it
// holds the use lock, so the root it got is never removed under it, and
// the evictor never sees a half-written root.
func TestBudgetEvictVersusPrepare(t *testing.T) {
	requireDpkgQuery(t)
	ctx := context.Background()
	c := cache{dir: t.TempDir()}
	key := strings.Repeat("e", 64)
	prof := &Profile{Name: "p", Packages: []string{"hello"}}
	done := make(chan struct{})
	var wg sync.WaitGroup
	var evictions int
	var evictErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			default:
			}
			res, err := cachebudget.Enforce(ctx, c.dir, 1, []cachebudget.Source{rootSource{c}}, nil)
			if err != nil {
				evictErr = err
				return
			}
			evictions += len(res.Evicted)
		}
	}()
	builds := 0
	for i := 0; i < 30; i++ {
		unlock, _, err := c.lockKey(ctx, key, true)
		must(t, err)
		gen := c.current(key)
		if gen == "" {
			builds++
			gen, err = c.build(ctx, key, func(dir string) (map[string]InstalledPackage, error) {
				// Slow enough for the evictor to look at the tmp-* dir.
				time.Sleep(5 * time.Millisecond)
				return nil, (&statusBackend{}).Create(ctx, CreateRequest{Profile: prof, Dir: dir})
			})
			must(t, err)
		}
		must(t, c.hold(ctx, key))
		unlock()
		// The evictor runs meanwhile; the root must stay.
		time.Sleep(2 * time.Millisecond)
		if _, err := os.Stat(filepath.Join(c.keyDir(key), gen, "var/lib/dpkg/status")); err != nil {
			t.Fatalf("round %d: held root removed: %v", i, err)
		}
		if _, err := c.packages(key, gen); err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		// The build ends.
		release(c, key)
		time.Sleep(2 * time.Millisecond)
	}
	close(done)
	wg.Wait()
	if evictErr != nil {
		t.Fatal(evictErr)
	}
	t.Logf("%d evictions, %d builds in 30 prepares", evictions, builds)
	if evictions == 0 || builds < 2 {
		t.Errorf("no race took place: %d evictions, %d builds", evictions, builds)
	}
}

func requireDpkgQuery(t *testing.T) {
	t.Helper()
	if _, err := os.Stat("/usr/bin/dpkg-query"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("dpkg-query missing under CI")
		}
		t.Skip("dpkg-query not installed")
	}
}

func TestLoadLayoutOfEvictedRoot(t *testing.T) {
	c := cache{dir: t.TempDir()}
	key, gen := fakeEntry(t, c, 3, time.Now())
	work := t.TempDir()
	p := filepath.Join(work, LayoutFile)
	must(t, writeJSON(p, Layout{Lower: filepath.Join(c.keyDir(key), gen), Upper: "/u", Work: "/w", Merged: "/m"}))
	must(t, holdLower(filepath.Join(c.keyDir(key), gen)))
	if removed, _ := (rootSource{c}).Remove(context.Background(), cachebudget.Entry{Name: key}); removed {
		t.Fatal("root of a loaded layout evicted")
	}
	release(c, key)
	if removed, err := (rootSource{c}).Remove(context.Background(), cachebudget.Entry{Name: key}); !removed || err != nil {
		t.Fatal("free root not evicted", err)
	}
	if err := holdLower(filepath.Join(c.keyDir(key), gen)); err == nil || !strings.Contains(err.Error(), "prepare the buildroot again") {
		t.Errorf("layout of an evicted root: %v", err)
	}
	release(c, key)
}

// budgetBackend is statusBackend under a name of its own, so its creates
// do not count as testBackend's.
type budgetBackend struct{ statusBackend }

func (*budgetBackend) Name() string { return "status-budget-test" }

func init() { Register(&budgetBackend{}) }

// Prepare enforces the budget afterwards: an old root nothing uses goes,
// the one just prepared stays, and the prepare log says so.
func TestPrepareKeepsTheBudget(t *testing.T) {
	requireDpkgQuery(t)
	repo := t.TempDir()
	must(t, os.WriteFile(filepath.Join(repo, "Release"), []byte("v1"), 0o644))
	t.Setenv(mirror.EnvOverride, "file://"+repo)
	pkg := filepath.Join(t.TempDir(), "hello")
	must(t, CopyTree("../../examples/projects/Debian/cb-hello", pkg))
	desc, err := os.ReadFile(filepath.Join(pkg, DescriptionFile))
	must(t, err)
	must(t, os.WriteFile(filepath.Join(pkg, DescriptionFile), bytes.ReplaceAll(desc, []byte(`distribution="bookworm" `), nil), 0o644))
	tg, err := target.New(t.TempDir(), "projects/Debian/hello", "bookworm", "x86_64")
	must(t, err)
	opts := Options{Backend: "status-budget-test", Budget: cachebudget.Size{Bytes: 1}, Logger: slog.New(slog.DiscardHandler)}
	var plog bytes.Buffer
	opts.Log = &plog
	first, err := Prepare(context.Background(), opts, pkg, tg)
	must(t, err)
	c := cache{dir: filepath.Join(tg.Root, ".cache", "buildroot")}
	// The job that built with it ended.
	release(c, first.CacheKey)
	defer release(c, first.CacheKey)

	must(t, os.WriteFile(filepath.Join(repo, "Release"), []byte("v2"), 0o644))
	plog.Reset()
	second, err := Prepare(context.Background(), opts, pkg, tg)
	must(t, err)
	defer release(c, second.CacheKey)
	if second.CacheKey == first.CacheKey {
		t.Fatal("same key")
	}
	if kept(c, first.CacheKey) {
		t.Error("old root kept above the budget")
	}
	if _, err := os.Stat(second.Lower); err != nil {
		t.Errorf("root just prepared evicted: %v", err)
	}
	if !strings.Contains(plog.String(), "evicted 1 cache entries to stay within the disk budget of 1 bytes") {
		t.Errorf("prepare log:\n%s", plog.String())
	}
	st, err := cachebudget.ReadState(c.dir)
	must(t, err)
	if u := st.Kinds[KindRoot]; u.Entries != 1 || u.Evictions != 1 || u.Bytes <= 0 || st.Budget != 1 {
		t.Errorf("state %+v", st)
	}
}
