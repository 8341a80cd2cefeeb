package collect_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cloud-builder/cb/internal/collect"
	"github.com/cloud-builder/cb/internal/repo/repotest"
)

func decodeJSON(t *testing.T, data []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatalf("decode %s: %v", data, err)
	}
}

func TestServingIsReadOnlyAndHidesBookkeeping(t *testing.T) {
	repotest.RequireTools(t, "dpkg-deb")
	ts := newServer(t, nil)
	ctx := ctxT(t)
	u := debUpload(t, "hello", "1.0", "amd64", "x86_64", "bookworm")
	if err := ts.client().Upload(ctx, u); err != nil {
		t.Fatal(err)
	}
	outside := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(outside, []byte("secret"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(ts.cfg.RepoRoot, "escape")); err != nil {
		t.Fatal(err)
	}
	base := ts.http.URL
	listing := string(get(t, base+"/projects/Debian/bookworm/", 200))
	for _, want := range []string{"x86_64/", "dists/"} {
		if !strings.Contains(listing, want) {
			t.Fatalf("listing lacks %s:\n%s", want, listing)
		}
	}
	if strings.Contains(listing, ".project") || strings.Contains(listing, ".package_") {
		t.Fatalf("listing shows bookkeeping:\n%s", listing)
	}
	for _, p := range []string{
		"/projects/Debian/bookworm/.project/files",
		"/projects/Debian/bookworm/.package_x86_64.hello",
		"/projects/Debian/bookworm/.updaterepo",
		"/escape",
		"/projects/../../state/upload.token",
	} {
		get(t, base+p, 404)
	}
	get(t, base+"/projects/Debian/bookworm/"+u.Files[0].Name, 200)
	if body := string(get(t, base+"/healthz", 200)); !strings.Contains(body, "ok") {
		t.Fatalf("healthz: %s", body)
	}
	metrics := string(get(t, base+"/metrics", 200))
	for _, m := range []string{`cb_uploads_total{result="published"}`, "cb_repo_publish_duration_seconds_bucket"} {
		if !strings.Contains(metrics, m) {
			t.Fatalf("metrics lack %s", m)
		}
	}
	var st collect.Status
	decodeJSON(t, get(t, base+"/api/v1/status", 200), &st)
	if len(st.Repositories) != 1 {
		t.Fatalf("status: %+v", st)
	}
	r := st.Repositories[0]
	if r.Path != "projects/Debian/bookworm" || r.Type != "deb" || r.Packages != 1 || r.Files != 1 ||
		r.LastUpdate == nil || r.LastError != "" || r.Pending || st.SigningKey != ts.SigningKey() {
		t.Fatalf("status entry: %+v", r)
	}
}

// A crash between installing files and publishing leaves .updaterepo; the
// next start publishes. Files the crash left unrecorded are deleted.
func TestRestartRepairsPendingRepository(t *testing.T) {
	repotest.RequireTools(t, "dpkg-deb")
	ts := newServer(t, nil)
	ctx := ctxT(t)
	u := debUpload(t, "hello", "1.0", "amd64", "x86_64", "bookworm")
	if err := ts.client().Upload(ctx, u); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(ts.cfg.RepoRoot, "projects/Debian/bookworm")
	if err := os.RemoveAll(filepath.Join(dir, "dists")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, ".updaterepo"), []byte("deb\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	orphan := filepath.Join(dir, "x86_64", "half_1.0_amd64.deb")
	if err := os.WriteFile(orphan, []byte("half"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := ts.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	if exists(orphan) || exists(filepath.Join(dir, ".updaterepo")) || !exists(filepath.Join(dir, "dists/bookworm/InRelease")) {
		t.Fatal("cleanup did not repair the repository")
	}
}
