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
	"testing"

	"github.com/cloud-builder/cb/internal/buildroot"
	"github.com/cloud-builder/cb/internal/repo"
)

// projectDeb builds an architecture-independent package with dpkg-deb;
// depends and postinst are left out when empty.
func projectDeb(t *testing.T, name, version, depends, postinst string) string {
	t.Helper()
	tree := t.TempDir()
	if err := os.MkdirAll(filepath.Join(tree, "DEBIAN"), 0o755); err != nil {
		t.Fatal(err)
	}
	control := "Package: " + name + "\nVersion: " + version + "\nArchitecture: all\nMaintainer: Test <test@example.org>\n"
	if depends != "" {
		control += "Depends: " + depends + "\n"
	}
	control += "Description: a package of the project\n x\n"
	if err := os.WriteFile(filepath.Join(tree, "DEBIAN", "control"), []byte(control), 0o644); err != nil {
		t.Fatal(err)
	}
	if postinst != "" {
		if err := os.WriteFile(filepath.Join(tree, "DEBIAN", "postinst"), []byte(postinst), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	out := filepath.Join(t.TempDir(), name+"_"+version+"_all.deb")
	if b, err := exec.Command("dpkg-deb", "--root-owner-group", "-Zgzip", "--build", tree, out).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb: %v\n%s", err, b)
	}
	return out
}

// serveProjectRepo publishes deb (package name) into projects/T/bookworm,
// signed as the collector signs it, serves the tree over HTTP for the
// test's lifetime and returns it as the project repositories of a prepare.
func serveProjectRepo(t *testing.T, ctx context.Context, deb, name string) *buildroot.ProjectRepos {
	t.Helper()
	s, err := repo.NewSigner(ctx, filepath.Join(t.TempDir(), "gnupg"), "", slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	collector := t.TempDir()
	if err := s.ExportPublicKey(ctx, collector); err != nil {
		t.Fatal(err)
	}
	r, err := repo.Open(collector, "projects/T/bookworm")
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(deb)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	f := repo.File{Name: "all/" + filepath.Base(deb), Size: int64(len(data)), SHA256: hex.EncodeToString(sum[:])}
	if _, err := r.Install(repo.Deb, repo.Build{Project: "projects/T/" + name, Name: name, Arch: "x86_64",
		RequestID: name, Files: []repo.File{f}}, map[string]string{f.Name: deb}); err != nil {
		t.Fatal(err)
	}
	if err := (&repo.Publisher{Signer: s}).Publish(ctx, r); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.FileServer(http.Dir(collector)))
	t.Cleanup(srv.Close)
	return &buildroot.ProjectRepos{URL: srv.URL, KeyFile: filepath.Join(collector, repo.PublicKeyBinary)}
}

// dependentPackage writes a Debian package directory named source whose
// buildroot installs imagePackage (the example's description with its
// image packages cut to it; the example's own with "") and whose source
// build-depends on buildDepends.
func dependentPackage(t *testing.T, source, imagePackage, buildDepends string) string {
	t.Helper()
	pkgDir := t.TempDir()
	desc, err := os.ReadFile(filepath.Join(debianExample, ".cb", "build_root.kiwi"))
	if err != nil {
		t.Fatal(err)
	}
	// Without an image package the description is the example's: the
	// package asks for the example's base.
	image := string(desc)
	if imagePackage != "" {
		image = regexp.MustCompile(`(?s)<packages type="image">.*?</packages>`).
			ReplaceAllString(image, `<packages type="image"><package name="`+imagePackage+`"/></packages>`)
	}
	for name, content := range map[string]string{
		".cb/build_root.kiwi": image,
		"debian/control": "Source: " + source + "\nBuild-Depends: " + buildDepends + "\n\nPackage: " + source +
			"\nArchitecture: any\nDescription: x\n x\n",
	} {
		p := filepath.Join(pkgDir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return pkgDir
}
