package kiwi

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/cloud-builder/cb/internal/cachebudget"
)

func TestSharedCacheEvictedOnlyWhenNoRunHoldsIt(t *testing.T) {
	ctx := context.Background()
	base := t.TempDir()
	s := sharedSource{dir: filepath.Join(base, "shared"), lock: filepath.Join(base, "shared.lock")}
	if ents, err := s.List(ctx); err != nil || len(ents) != 0 {
		t.Fatalf("missing cache listed: %v %v", ents, err)
	}
	archives := filepath.Join(s.dir, "apt-get", "archives")
	if err := os.MkdirAll(archives, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(archives, "x.deb"), make([]byte, 64<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	ents, err := s.List(ctx)
	if err != nil || len(ents) != 1 || ents[0].Size < 64<<10 || ents[0].Used.IsZero() {
		t.Fatalf("List = %+v, %v", ents, err)
	}
	// A kiwi run holds the lock (kiwi.go's lock).
	unlock, err := lock(ctx, s.lock)
	if err != nil {
		t.Fatal(err)
	}
	res, err := cachebudget.Enforce(ctx, t.TempDir(), 1, []cachebudget.Source{s}, nil)
	if err != nil || len(res.Evicted) != 0 {
		t.Fatalf("evicted %v while kiwi runs: %v", res.Evicted, err)
	}
	unlock()
	res, err = cachebudget.Enforce(ctx, t.TempDir(), 1, []cachebudget.Source{s}, nil)
	if err != nil || len(res.Evicted) != 1 {
		t.Fatalf("evicted %v: %v", res.Evicted, err)
	}
	if _, err := os.Stat(s.dir); !os.IsNotExist(err) {
		t.Errorf("shared cache still there: %v", err)
	}
}
