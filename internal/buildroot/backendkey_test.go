package buildroot

import (
	"context"
	"testing"
)

type keyedBackend struct{ opts string }

func (keyedBackend) Name() string                                { return "native" }
func (keyedBackend) Create(context.Context, CreateRequest) error { return nil }
func (b keyedBackend) KeyOptions() string                        { return b.opts }

type plainBackend struct{}

func (plainBackend) Name() string                                { return "native" }
func (plainBackend) Create(context.Context, CreateRequest) error { return nil }

// A backend's own options are part of the cache key: a root made under
// other options (say, without manuals) is never reused.
func TestCacheKeyCoversBackendOptions(t *testing.T) {
	p := &Profile{Name: "bookworm.x86_64", Arch: "x86_64", PackageManager: "apt", Repositories: []Repository{
		{Type: RepoAptDeb, Path: "http://deb.example/debian", Distribution: "bookworm", Components: []string{"main"}, KeyDigest: "abc"},
	}}
	key := func(b Backend) string {
		t.Helper()
		k, err := cacheKey(context.Background(), backendKey(b), []byte("<image/>"), p, []string{"debhelper"}, nil, func(string, ...any) {})
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	a := key(keyedBackend{"--dpkgopt=path-exclude=/usr/share/man/*"})
	if again := key(keyedBackend{"--dpkgopt=path-exclude=/usr/share/man/*"}); again != a {
		t.Errorf("same options, different keys %s %s", a, again)
	}
	if other := key(keyedBackend{"--dpkgopt=path-exclude=/usr/share/doc/*"}); other == a {
		t.Errorf("other options, same key %s", a)
	}
	if plain := key(plainBackend{}); plain == a {
		t.Errorf("a backend without options has the key of one with options: %s", a)
	}
}
