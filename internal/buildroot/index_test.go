package buildroot

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

func TestIndexDigest(t *testing.T) {
	var mu sync.Mutex
	files := map[string]string{
		"/debian/dists/bookworm/InRelease": "signed release v1",
		"/flat/Release":                    "flat release",
		"/rpm/repodata/repomd.xml":         "<repomd/>",
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		body, ok := files[r.URL.Path]
		mu.Unlock()
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Write([]byte(body))
	}))
	defer srv.Close()
	ctx := context.Background()
	deb := Repository{Type: RepoAptDeb, Path: srv.URL + "/debian/", Distribution: "bookworm"}

	first, err := IndexDigest(ctx, deb)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := IndexDigest(ctx, deb)
	if first != again {
		t.Fatal("digest not stable")
	}
	mu.Lock()
	files["/debian/dists/bookworm/InRelease"] = "signed release v2"
	mu.Unlock()
	changed, err := IndexDigest(ctx, deb)
	if err != nil || changed == first {
		t.Fatalf("archive change not seen: %v", err)
	}

	for name, r := range map[string]Repository{
		"flat repository falls back to Release": {Type: RepoAptDeb, Path: srv.URL + "/flat"},
		"rpm-md":                                {Type: RepoRpmMd, Path: srv.URL + "/rpm"},
	} {
		if _, err := IndexDigest(ctx, r); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := IndexDigest(ctx, Repository{Type: RepoAptDeb, Path: srv.URL + "/nothing", Distribution: "x"}); err == nil {
		t.Error("missing index accepted")
	}

	dir := t.TempDir()
	must(t, os.MkdirAll(filepath.Join(dir, "repodata"), 0o755))
	must(t, os.WriteFile(filepath.Join(dir, "repodata", "repomd.xml"), []byte("<repomd/>"), 0o644))
	local, err := IndexDigest(ctx, Repository{Type: RepoRpmMd, Path: "file://" + dir})
	if err != nil {
		t.Fatal(err)
	}
	remote, _ := IndexDigest(ctx, Repository{Type: RepoRpmMd, Path: srv.URL + "/rpm"})
	if local != remote {
		t.Error("same repomd.xml gives different digests over file:// and http")
	}
}
