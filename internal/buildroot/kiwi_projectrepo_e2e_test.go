package buildroot_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cloud-builder/cb/internal/buildroot"
)

// A kiwi buildroot gets the project repository, signed by the collector's
// key, and installs the project's package from it; the bootstrap still
// comes from the description's base repository.
func TestPrepareKiwiProjectRepository(t *testing.T) {
	if testing.Short() {
		t.Skip("kiwi-ng needs minutes")
	}
	requireRootTools(t, "kiwi-ng", "debootstrap", "dpkg-query", "dpkg-deb", "gpg", "gpgconf")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()

	// The project repository, signed as the collector signs it, and a
	// package that build-depends on its package; the image packages are
	// cut to it to keep kiwi's install short.
	pr := serveProjectRepo(t, ctx, projectDeb(t, "cb-projdep", "1.2-3", "", ""), "cb-projdep")
	pkgDir := dependentPackage(t, "cb-user", "cb-projdep", "cb-projdep (>= 1.2)")

	root := t.TempDir()
	tg := newTarget(t, root, "projects/T/cb-user")
	var log syncBuffer
	opts := buildroot.Options{
		CacheDir:        filepath.Join(root, ".cache", "buildroot"),
		Backend:         buildroot.BackendKiwi,
		Log:             &log,
		ProjectRepos:    pr,
		NoDownloadCache: true,
	}
	start := time.Now()
	l, err := buildroot.Prepare(ctx, opts, pkgDir, tg)
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	t.Logf("cold prepare (kiwi, project repository): %v", time.Since(start).Round(time.Millisecond))
	out := log.String()
	if l.Backend != buildroot.BackendKiwi || !strings.Contains(out, "project repository "+pr.URL+"/projects/T/bookworm (signed-by") {
		t.Fatalf("project repository not added (backend %s):\n%s", l.Backend, out)
	}
	solved, err := buildroot.ReadSolved(tg.SolverFile())
	if err != nil {
		t.Fatal(err)
	}
	if solved.CacheKey != l.CacheKey || solved.Backend != buildroot.BackendKiwi {
		t.Errorf("solver file header = %+v, layout %+v", solved, l)
	}
	if v := solved.Packages["cb-projdep"].Version; v != "1.2-3" {
		t.Errorf("cb-projdep %q in the root, want 1.2-3 from the project repository", v)
	}
	// The bootstrap came from the description's base repository.
	if solved.Packages["dpkg"].Version == "" || solved.Packages["base-files"].Version == "" {
		t.Errorf("no Debian base system in the root: %v", solved.Packages)
	}
	t.Logf("kiwi's repositories:\n%s", grepLines(out, "repository"))
}
