package kiwi

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/cloud-builder/cb/internal/buildroot"
	"github.com/cloud-builder/cb/internal/cachebudget"
)

// KindShared is the kind of kiwi's shared cache in the disk budget.
const KindShared = "kiwi"

var _ buildroot.CacheOwner = Backend{}

// CacheSources implements buildroot.CacheOwner: the persistent shared
// cache (downloaded packages, kiwi's keyring) is one entry, removed
// whole when no kiwi run holds its lock.
func (Backend) CacheSources() []cachebudget.Source {
	return []cachebudget.Source{sharedSource{dir: filepath.Join(SharedCacheBase, "shared"), lock: filepath.Join(SharedCacheBase, "shared.lock")}}
}

type sharedSource struct{ dir, lock string }

func (sharedSource) Kind() string { return KindShared }

func (s sharedSource) List(ctx context.Context) ([]cachebudget.Entry, error) {
	if _, err := os.Lstat(s.dir); errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	} else if err != nil {
		return nil, err
	}
	// kiwi only writes to it: the newest change is the last use.
	size, used := cachebudget.Scan(s.dir)
	return []cachebudget.Entry{{Name: "shared", Paths: []string{s.dir}, Used: used, Size: size, Measured: true}}, ctx.Err()
}

func (s sharedSource) Remove(ctx context.Context, e cachebudget.Entry) (bool, error) {
	unlock, ok, err := cachebudget.TryLock(s.lock)
	if err != nil || !ok {
		return false, err
	}
	defer unlock()
	if err := os.RemoveAll(s.dir); err != nil {
		return false, err
	}
	return true, nil
}
