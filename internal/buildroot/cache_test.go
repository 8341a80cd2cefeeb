package buildroot

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeEntry creates a complete cache entry used at the given time.
func fakeEntry(t *testing.T, c cache, i int, used time.Time) (key, gen string) {
	t.Helper()
	key = strings.Repeat(fmt.Sprintf("%x", i%16), 64)
	gen = "root-test"
	kd := c.keyDir(key)
	must(t, os.MkdirAll(filepath.Join(kd, gen, "usr"), 0o755))
	must(t, os.WriteFile(filepath.Join(kd, "current"), []byte(gen+"\n"), 0o644))
	must(t, os.WriteFile(filepath.Join(kd, "used"), nil, 0o644))
	must(t, os.Chtimes(filepath.Join(kd, "used"), used, used))
	return key, gen
}

func TestEvict(t *testing.T) {
	ctx := context.Background()
	c := cache{dir: t.TempDir()}
	now := time.Now()
	var keys []string
	for i := 0; i < 6; i++ {
		k, _ := fakeEntry(t, c, i, now.Add(-time.Duration(i)*time.Hour))
		keys = append(keys, k)
	}
	// keys[4] is old but a target's layout points at it.
	layoutPath := filepath.Join(t.TempDir(), LayoutFile)
	must(t, writeJSON(layoutPath, Layout{Lower: filepath.Join(c.keyDir(keys[4]), "root-test"), Upper: "/u", Work: "/w", Merged: "/m"}))
	must(t, c.addRef(keys[4], layoutPath))
	// keys[3] has a ref whose layout moved on to another key: stale.
	stale := filepath.Join(t.TempDir(), LayoutFile)
	must(t, writeJSON(stale, Layout{Lower: filepath.Join(c.keyDir(keys[0]), "root-test"), Upper: "/u", Work: "/w", Merged: "/m"}))
	must(t, c.addRef(keys[3], stale))
	// keys[5] is being prepared by someone else right now.
	unlock, ok, err := c.lockKey(ctx, keys[5], false)
	if err != nil || !ok {
		t.Fatalf("lock: %v %v", ok, err)
	}
	defer unlock()

	removed, err := c.evict(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{keys[0]: true, keys[1]: true, keys[4]: true, keys[5]: true}
	for _, k := range keys {
		_, err := os.Stat(c.keyDir(k))
		if kept := err == nil; kept != want[k] {
			t.Errorf("entry %s kept=%v, want %v", k[:4], kept, want[k])
		}
	}
	if len(removed) != 2 {
		t.Errorf("removed = %v", removed)
	}
	if c.current(keys[0]) != "root-test" {
		t.Error("kept entry lost its current generation")
	}
}

func TestPruneGenerations(t *testing.T) {
	c := cache{dir: t.TempDir()}
	key, gen := fakeEntry(t, c, 1, time.Now())
	kd := c.keyDir(key)
	for _, g := range []string{"root-old", "root-inuse"} {
		must(t, os.MkdirAll(filepath.Join(kd, g), 0o755))
		must(t, os.WriteFile(filepath.Join(kd, g+".packages.json"), []byte("{}"), 0o644))
	}
	layoutPath := filepath.Join(t.TempDir(), LayoutFile)
	must(t, writeJSON(layoutPath, Layout{Lower: filepath.Join(kd, "root-inuse"), Upper: "/u", Work: "/w", Merged: "/m"}))
	must(t, c.addRef(key, layoutPath))
	must(t, c.pruneGenerations(key))
	for name, want := range map[string]bool{gen: true, "root-inuse": true, "root-inuse.packages.json": true, "root-old": false, "root-old.packages.json": false} {
		if _, err := os.Stat(filepath.Join(kd, name)); (err == nil) != want {
			t.Errorf("%s exists=%v, want %v", name, err == nil, want)
		}
	}
}

func TestLockKeyWaitsAndCancels(t *testing.T) {
	c := cache{dir: t.TempDir()}
	key := strings.Repeat("a", 64)
	unlock, ok, err := c.lockKey(context.Background(), key, true)
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	if _, ok, _ := c.lockKey(context.Background(), key, false); ok {
		t.Fatal("second lock acquired while held")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, _, err := c.lockKey(ctx, key, true); err == nil {
		t.Fatal("wait did not end with the context")
	}
	unlock()
	unlock2, ok, err := c.lockKey(context.Background(), key, false)
	if err != nil || !ok {
		t.Fatal("lock not free after unlock", err)
	}
	unlock2()
}

func TestReadLayoutRejectsMountOptionInjection(t *testing.T) {
	p := filepath.Join(t.TempDir(), LayoutFile)
	must(t, writeJSON(p, Layout{Lower: "/a,upperdir=/etc", Upper: "/u", Work: "/w", Merged: "/m"}))
	if _, err := readLayout(p); err == nil {
		t.Fatal("comma in a layout path accepted")
	}
}
