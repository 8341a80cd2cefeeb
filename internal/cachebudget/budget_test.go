package cachebudget

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// dirSource is a cache whose entries are the directories below dir; an
// entry named in busy is in use.
type dirSource struct {
	dir        string
	used       map[string]time.Time
	referenced map[string]bool
	busy       map[string]bool
	stable     bool
}

func (dirSource) Kind() string { return "test" }

func (s dirSource) List(ctx context.Context) ([]Entry, error) {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, err
	}
	var out []Entry
	for _, e := range ents {
		out = append(out, Entry{Name: e.Name(), Paths: []string{filepath.Join(s.dir, e.Name())},
			Used: s.used[e.Name()], Referenced: s.referenced[e.Name()], Stable: s.stable})
	}
	return out, nil
}

func (s dirSource) Remove(ctx context.Context, e Entry) (bool, error) {
	if s.busy[e.Name] {
		return false, nil
	}
	return true, os.RemoveAll(filepath.Join(s.dir, e.Name))
}

// entry creates dir/name holding one file of size bytes (written, so
// blocks are allocated) and returns its measured size.
func entry(t *testing.T, dir, name string, size int) int64 {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(p, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(p, "data"), make([]byte, size), 0o644); err != nil {
		t.Fatal(err)
	}
	return Measure(p)
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func TestEnforceEvictsLeastRecentlyUsedFirst(t *testing.T) {
	dir := t.TempDir()
	state := t.TempDir()
	now := time.Now()
	src := dirSource{dir: dir, used: map[string]time.Time{}, referenced: map[string]bool{"old-ref": true},
		busy: map[string]bool{"oldest-busy": true}}
	sizes := map[string]int64{}
	for i, name := range []string{"newest", "new", "middle", "old", "old-ref", "oldest-busy"} {
		sizes[name] = entry(t, dir, name, 64<<10)
		src.used[name] = now.Add(-time.Duration(i) * time.Hour)
	}
	// old-ref is older than old but referenced, so it goes after every
	// unreferenced entry; oldest-busy is in use and must stay.
	src.used["old-ref"] = now.Add(-10 * time.Hour)
	var total int64
	for _, n := range sizes {
		total += n
	}
	// Room for two entries: the busy one stays, the unreferenced go
	// oldest first (the newest too), the referenced one only then.
	budget := sizes["newest"] + sizes["oldest-busy"]
	res, err := Enforce(context.Background(), state, budget, []Source{src}, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"test/old", "test/middle", "test/new", "test/newest"}
	if len(res.Evicted) != len(want) {
		t.Fatalf("evicted %v, want %v", res.Evicted, want)
	}
	for i := range want {
		if res.Evicted[i] != want[i] {
			t.Errorf("eviction %d: %s, want %s (order %v)", i, res.Evicted[i], want[i], res.Evicted)
		}
	}
	for _, name := range []string{"old-ref", "oldest-busy"} {
		if !exists(filepath.Join(dir, name)) {
			t.Errorf("%s removed", name)
		}
	}
	rest := sizes["old-ref"] + sizes["oldest-busy"]
	u := res.State.Kinds["test"]
	if res.State.Total != rest || u.Bytes != rest || u.Entries != 2 {
		t.Errorf("state after eviction: total %d, kind %+v; want %d bytes in 2 entries", res.State.Total, u, rest)
	}
	if u.Evictions != 4 || u.EvictedBytes != total-rest {
		t.Errorf("evictions %d (%d bytes), want 4 (%d bytes)", u.Evictions, u.EvictedBytes, total-rest)
	}
	// A smaller budget: now the referenced entry goes, the last one not
	// in use. The state file has it, and the counts add up.
	budget = sizes["oldest-busy"]
	res, err = Enforce(context.Background(), state, budget, []Source{src}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Evicted) != 1 || res.Evicted[0] != "test/old-ref" {
		t.Errorf("second run evicted %v, want the referenced entry", res.Evicted)
	}
	st, err := ReadState(state)
	if err != nil {
		t.Fatal(err)
	}
	if k := st.Kinds["test"]; k.Evictions != 5 || k.Entries != 1 || st.Budget != budget || st.Total != budget {
		t.Errorf("state file: %+v", st)
	}
}

func TestEnforceBusyEntryKeepsTotalAboveBudget(t *testing.T) {
	dir := t.TempDir()
	entry(t, dir, "a", 8<<10)
	src := dirSource{dir: dir, busy: map[string]bool{"a": true}}
	res, err := Enforce(context.Background(), t.TempDir(), 1, []Source{src}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Evicted) != 0 || !exists(filepath.Join(dir, "a")) || res.State.Total <= 1 {
		t.Errorf("busy entry: evicted %v, total %d", res.Evicted, res.State.Total)
	}
}

func TestEnforceUnderBudgetRemovesNothing(t *testing.T) {
	dir := t.TempDir()
	n := entry(t, dir, "a", 8<<10)
	res, err := Enforce(context.Background(), t.TempDir(), n, []Source{dirSource{dir: dir}}, nil)
	if err != nil || len(res.Evicted) != 0 || !exists(filepath.Join(dir, "a")) {
		t.Fatalf("evicted %v, err %v", res.Evicted, err)
	}
}

func TestEnforceSkipsWhileAnotherEnforces(t *testing.T) {
	state := t.TempDir()
	unlock, ok, err := TryLock(filepath.Join(state, "budget.lock"))
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	defer unlock()
	dir := t.TempDir()
	entry(t, dir, "a", 8<<10)
	res, err := Enforce(context.Background(), state, 1, []Source{dirSource{dir: dir}}, nil)
	if err != nil || !res.Skipped || !exists(filepath.Join(dir, "a")) {
		t.Fatalf("res %+v, err %v", res, err)
	}
}

func TestStableSizesAreRemembered(t *testing.T) {
	dir, state := t.TempDir(), t.TempDir()
	first := entry(t, dir, "a", 16<<10)
	src := dirSource{dir: dir, stable: true}
	if _, err := Enforce(context.Background(), state, 1<<40, []Source{src}, nil); err != nil {
		t.Fatal(err)
	}
	// A stable path is not walked again: growing it behind the cache's
	// back does not change the measured size.
	entry(t, dir, "a", 1<<20)
	res, err := Enforce(context.Background(), state, 1<<40, []Source{src}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := res.State.Kinds["test"].Bytes; got != first {
		t.Errorf("stable size %d, want the remembered %d", got, first)
	}
	// An unstable one is.
	res, err = Enforce(context.Background(), state, 1<<40, []Source{dirSource{dir: dir}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := res.State.Kinds["test"].Bytes; got <= first {
		t.Errorf("unstable size %d, want it measured again (> %d)", got, first)
	}
}

func TestMeasureCountsHardLinksOnce(t *testing.T) {
	dir := t.TempDir()
	a := filepath.Join(dir, "a")
	if err := os.WriteFile(a, make([]byte, 256<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(a, &st); err != nil {
		t.Fatal(err)
	}
	file := st.Blocks * 512
	var dirSt syscall.Stat_t
	if err := syscall.Stat(dir, &dirSt); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"b", "c"} {
		if err := os.Link(a, filepath.Join(dir, n)); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := Measure(dir), file+dirSt.Blocks*512; got != want {
		t.Errorf("Measure = %d, want %d (the file once plus the directory)", got, want)
	}
	// Across entries of one Enforce a shared inode counts once too.
	other := filepath.Join(dir, "other")
	if err := os.Mkdir(other, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(a, filepath.Join(other, "d")); err != nil {
		t.Fatal(err)
	}
	seen := map[inode]bool{}
	first := measure(a, seen)
	second := measure(other, seen)
	if first != file || second != Measure(other)-file {
		t.Errorf("shared inode: %d + %d, want %d + the directory only", first, second, file)
	}
}

func TestScanNewest(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "x")
	if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	size, newest := Scan(dir)
	if size <= 0 || time.Since(newest) > time.Minute {
		t.Errorf("Scan = %d, %v", size, newest)
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]Size{
		"": {Percent: 50}, "50%": {Percent: 50}, "12.5 %": {Percent: 12.5}, "100%": {Percent: 100},
		"1024": {Bytes: 1024}, "200G": {Bytes: 200 << 30}, "1.5TiB": {Bytes: 3 << 39}, "500M": {Bytes: 500 << 20},
		"64k": {Bytes: 64 << 10}, "2 GB": {Bytes: 2 << 30},
	} {
		got, err := ParseSize(in)
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %+v, %v; want %+v", in, got, err, want)
		}
		if err == nil && in != "" {
			back, err := ParseSize(got.String())
			if err != nil || back != got {
				t.Errorf("ParseSize(%q.String() = %q) = %+v, %v", in, got.String(), back, err)
			}
		}
	}
	for _, in := range []string{"0", "-5G", "0%", "101%", "abc", "5X", "%", "G", "1e30"} {
		if _, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) accepted", in)
		}
	}
}

func TestResolveDefaultIsHalfTheFileSystem(t *testing.T) {
	dir := t.TempDir()
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	fsBytes := int64(st.Blocks) * int64(st.Bsize)
	def, _ := ParseSize("")
	got, err := def.Resolve(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got != fsBytes/2 {
		t.Errorf("default budget %d, want half of %d", got, fsBytes)
	}
	// A cache directory that does not exist yet takes its parent's file
	// system.
	got, err = Size{Percent: 25}.Resolve(filepath.Join(dir, "not", "yet"))
	if err != nil || got != fsBytes/4 {
		t.Errorf("25%% of a missing dir's file system = %d, %v; want %d", got, err, fsBytes/4)
	}
	if got, err := (Size{Bytes: 42}).Resolve(dir); err != nil || got != 42 {
		t.Errorf("fixed budget = %d, %v", got, err)
	}
}

func TestListErrorIsReported(t *testing.T) {
	src := dirSource{dir: filepath.Join(t.TempDir(), "missing")}
	_, err := Enforce(context.Background(), t.TempDir(), 1, []Source{src}, nil)
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("err = %v, want the list error", err)
	}
}
