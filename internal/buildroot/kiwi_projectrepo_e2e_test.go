package buildroot_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cloud-builder/cb/internal/buildroot"
	"github.com/cloud-builder/cb/internal/repo"
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

	// The project repository, signed as the collector signs it.
	s, err := repo.NewSigner(ctx, filepath.Join(t.TempDir(), "gnupg"), "", slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	collector := t.TempDir()
	if err := s.ExportPublicKey(ctx, collector); err != nil {
		t.Fatal(err)
	}
	r, err := repo.Open(collector, "projects/T/bookworm")
	if err != nil {
		t.Fatal(err)
	}
	deb := projectDeb(t, "cb-projdep", "1.2-3")
	data, err := os.ReadFile(deb)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	f := repo.File{Name: "all/" + filepath.Base(deb), Size: int64(len(data)), SHA256: hex.EncodeToString(sum[:])}
	if _, err := r.Install(repo.Deb, repo.Build{Project: "projects/T/cb-projdep", Name: "cb-projdep", Arch: "x86_64",
		RequestID: "projdep", Files: []repo.File{f}}, map[string]string{f.Name: deb}); err != nil {
		t.Fatal(err)
	}
	if err := (&repo.Publisher{Signer: s}).Publish(ctx, r); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.FileServer(http.Dir(collector)))
	defer srv.Close()

	// A package that build-depends on it; the image packages are cut to
	// it to keep kiwi's install short.
	pkgDir := t.TempDir()
	desc, err := os.ReadFile(filepath.Join(debianExample, ".cb", "build_root.kiwi"))
	if err != nil {
		t.Fatal(err)
	}
	image := regexp.MustCompile(`(?s)<packages type="image">.*?</packages>`).
		ReplaceAllString(string(desc), `<packages type="image"><package name="cb-projdep"/></packages>`)
	for name, content := range map[string]string{
		".cb/build_root.kiwi": image,
		"debian/control":      "Source: cb-user\nBuild-Depends: cb-projdep (>= 1.2)\n\nPackage: cb-user\nArchitecture: any\nDescription: x\n x\n",
	} {
		os.MkdirAll(filepath.Dir(filepath.Join(pkgDir, name)), 0o755)
		if err := os.WriteFile(filepath.Join(pkgDir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	root := t.TempDir()
	tg := newTarget(t, root, "projects/T/cb-user")
	var log syncBuffer
	opts := buildroot.Options{
		CacheDir:        filepath.Join(root, ".cache", "buildroot"),
		Backend:         buildroot.BackendKiwi,
		Log:             &log,
		ProjectRepos:    &buildroot.ProjectRepos{URL: srv.URL, KeyFile: filepath.Join(collector, repo.PublicKeyBinary)},
		NoDownloadCache: true,
	}
	start := time.Now()
	l, err := buildroot.Prepare(ctx, opts, pkgDir, tg)
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	t.Logf("cold prepare (kiwi, project repository): %v", time.Since(start).Round(time.Millisecond))
	out := log.String()
	if l.Backend != buildroot.BackendKiwi || !strings.Contains(out, "project repository "+srv.URL+"/projects/T/bookworm (signed-by") {
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

// projectDeb builds an empty architecture-independent package.
func projectDeb(t *testing.T, name, version string) string {
	t.Helper()
	tree := t.TempDir()
	if err := os.MkdirAll(filepath.Join(tree, "DEBIAN"), 0o755); err != nil {
		t.Fatal(err)
	}
	control := "Package: " + name + "\nVersion: " + version + "\nArchitecture: all\nMaintainer: Test <test@example.org>\n" +
		"Description: a package of the project\n x\n"
	if err := os.WriteFile(filepath.Join(tree, "DEBIAN", "control"), []byte(control), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), name+"_"+version+"_all.deb")
	if b, err := exec.Command("dpkg-deb", "--root-owner-group", "-Zgzip", "--build", tree, out).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb: %v\n%s", err, b)
	}
	return out
}
