package repo_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cloud-builder/cb/internal/repo"
	"github.com/cloud-builder/cb/internal/repo/repotest"
)

func TestValidateFileName(t *testing.T) {
	for _, tc := range []struct {
		name string
		t    repo.Type
		ok   bool
	}{
		{"x86_64/hello_1.0_amd64.deb", repo.Deb, true},
		{"noarch/hello-1.0-1.noarch.rpm", repo.RPM, true},
		{"src/hello-1.0-1.src.rpm", repo.RPM, true},
		{"x86_64/hello.rpm", repo.Deb, false},
		{"hello.deb", repo.Deb, false},
		{"../x.deb", repo.Deb, false},
		{"x86_64/../x.deb", repo.Deb, false},
		{"/abs/x.deb", repo.Deb, false},
		{"a/b/x.deb", repo.Deb, false},
		{"x86_64/.hidden.deb", repo.Deb, false},
		{"repodata/x.rpm", repo.RPM, false},
		{"dists/x.deb", repo.Deb, false},
		{"x86_64/a\nb.deb", repo.Deb, false},
		{"x86_64/.deb", repo.Deb, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := repo.ValidateFileName(tc.name, tc.t)
			if (err == nil) != tc.ok {
				t.Fatalf("ValidateFileName(%q, %s) = %v, want ok=%v", tc.name, tc.t, err, tc.ok)
			}
		})
	}
}

// stage writes content to a fresh file and returns the repo file record.
func stage(t *testing.T, name, content string) (repo.File, string) {
	t.Helper()
	p := filepath.Join(t.TempDir(), filepath.Base(name))
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return fileOf(t, name, p), p
}

func fileOf(t *testing.T, name, p string) repo.File {
	t.Helper()
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	return repo.File{Name: name, Size: int64(len(data)), SHA256: hex.EncodeToString(sum[:])}
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

func TestInstallReplaceRemove(t *testing.T) {
	r, err := repo.Open(t.TempDir(), "projects/Debian/bookworm")
	if err != nil {
		t.Fatal(err)
	}
	install := func(name, arch, req string, files ...string) (bool, error) {
		b := repo.Build{Project: "projects/Debian/" + name, Name: name, Arch: arch, RequestID: req}
		staged := map[string]string{}
		for _, f := range files {
			rec, p := stage(t, f, f+req)
			b.Files = append(b.Files, rec)
			staged[f] = p
		}
		return r.Install(repo.Deb, b, staged)
	}
	if ch, err := install("hello", "x86_64", "r1", "x86_64/hello_1.0_amd64.deb"); err != nil || !ch {
		t.Fatalf("first install: changed=%v err=%v", ch, err)
	}
	if !r.Dirty() {
		t.Fatal("install did not mark the repository for an update")
	}
	if ch, err := install("hello", "x86_64", "r1", "x86_64/hello_1.0_amd64.deb"); err != nil || ch {
		t.Fatalf("same build again: changed=%v err=%v, want unchanged", ch, err)
	}
	if ch, err := install("hello", "x86_64", "r2", "x86_64/hello_1.1_amd64.deb"); err != nil || !ch {
		t.Fatalf("newer build: changed=%v err=%v", ch, err)
	}
	if exists(filepath.Join(r.Dir(), "x86_64", "hello_1.0_amd64.deb")) {
		t.Fatal("newer build left the older file in place")
	}
	if !exists(filepath.Join(r.Dir(), ".package_x86_64.hello")) {
		t.Fatal("no .package_<arch>.<name> bookkeeping")
	}
	if _, err := install("other", "x86_64", "r3", "x86_64/hello_1.1_amd64.deb"); !errors.Is(err, repo.ErrFileConflict) {
		t.Fatalf("file of another package: err=%v, want ErrFileConflict", err)
	}
	rec, p := stage(t, "x86_64/x.rpm", "x")
	if _, err := r.Install(repo.RPM, repo.Build{Name: "x", Arch: "x86_64", RequestID: "r", Files: []repo.File{rec}},
		map[string]string{rec.Name: p}); !errors.Is(err, repo.ErrTypeMismatch) {
		t.Fatalf("rpm into deb repository: err=%v, want ErrTypeMismatch", err)
	}
	if _, err := install("hello", "aarch64", "r4", "aarch64/hello_1.1_arm64.deb"); err != nil {
		t.Fatal(err)
	}
	if rm, err := r.Remove("hello", "aarch64"); err != nil || !rm {
		t.Fatalf("remove arch: removed=%v err=%v", rm, err)
	}
	if exists(filepath.Join(r.Dir(), "aarch64", "hello_1.1_arm64.deb")) || !exists(filepath.Join(r.Dir(), "x86_64", "hello_1.1_amd64.deb")) {
		t.Fatal("removing one arch must remove exactly that arch's files")
	}
	halfBuilt := filepath.Join(r.Dir(), ".dists-123", "bookworm")
	if err := os.MkdirAll(halfBuilt, 0o755); err != nil {
		t.Fatal(err)
	}
	orphan := filepath.Join(r.Dir(), "x86_64", "lost_1_amd64.deb")
	if err := os.WriteFile(orphan, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if gone, err := r.SweepOrphans(); err != nil || !slices.Equal(gone, []string{"x86_64/lost_1_amd64.deb"}) {
		t.Fatalf("sweep: %v %v", gone, err)
	}
	if exists(filepath.Dir(halfBuilt)) {
		t.Fatal("sweep left half-built metadata behind")
	}
	builds, err := r.Builds()
	if err != nil || len(builds) != 1 || builds[0].RequestID != "r2" {
		t.Fatalf("builds after all that: %+v %v", builds, err)
	}
}

func newSigner(t *testing.T) *repo.Signer {
	t.Helper()
	repotest.RequireTools(t, "gpg", "gpgconf")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := repo.NewSigner(ctx, filepath.Join(t.TempDir(), "gnupg"), "", slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func gpgVerify(t *testing.T, key string, args ...string) error {
	t.Helper()
	home := t.TempDir()
	if out, err := exec.Command("gpg", "--batch", "--homedir", home, "--import", key).CombinedOutput(); err != nil {
		t.Fatalf("import key: %v\n%s", err, out)
	}
	defer exec.Command("gpgconf", "--homedir", home, "--kill", "all").Run()
	out, err := exec.Command("gpg", append([]string{"--batch", "--homedir", home, "--verify"}, args...)...).CombinedOutput()
	if err != nil {
		return errors.New(string(out))
	}
	return nil
}

func TestPublishRPM(t *testing.T) {
	repotest.RequireTools(t, "rpmbuild", "createrepo_c")
	ctx := context.Background()
	s := newSigner(t)
	root := t.TempDir()
	if err := s.ExportPublicKey(ctx, root); err != nil {
		t.Fatal(err)
	}
	r, err := repo.Open(root, "projects/MS/TW")
	if err != nil {
		t.Fatal(err)
	}
	pub := &repo.Publisher{Signer: s}
	src := t.TempDir()
	add := func(name, version string) repo.File {
		p := repotest.RPM(t, src, name, version)
		f := fileOf(t, "noarch/"+filepath.Base(p), p)
		if _, err := r.Install(repo.RPM, repo.Build{Project: "projects/MS/" + name, Name: name, Arch: "x86_64",
			RequestID: name + version, Files: []repo.File{f}}, map[string]string{f.Name: p}); err != nil {
			t.Fatal(err)
		}
		if err := pub.Publish(ctx, r); err != nil {
			t.Fatal(err)
		}
		return f
	}
	a := add("alpha", "1.0")
	first, err := repo.ReadRepomd(r.Dir())
	if err != nil {
		t.Fatal(err)
	}
	b := add("beta", "2.0")
	if r.Dirty() {
		t.Fatal("publish left .updaterepo behind")
	}
	got := map[string]string{}
	for _, p := range repotest.Primary(t, r.Dir()) {
		if p.Checksum.Type != "sha256" {
			t.Fatalf("checksum type %s", p.Checksum.Type)
		}
		got[p.Location.Href] = p.Checksum.Value
	}
	want := map[string]string{a.Name: a.SHA256, b.Name: b.SHA256}
	if len(got) != 2 || got[a.Name] != a.SHA256 || got[b.Name] != b.SHA256 {
		t.Fatalf("primary lists %v, want %v", got, want)
	}
	md := filepath.Join(r.Dir(), "repodata", "repomd.xml")
	if err := gpgVerify(t, filepath.Join(root, repo.PublicKeyArmored), md+".asc", md); err != nil {
		t.Fatalf("repomd.xml.asc does not verify: %s", err)
	}
	// The first generation's files stay for clients that read the old
	// repomd.xml just before the swap.
	for _, d := range first.Data {
		if !exists(filepath.Join(r.Dir(), filepath.FromSlash(d.Location.Href))) {
			t.Fatalf("previous generation's %s is gone", d.Location.Href)
		}
	}
	if err := os.WriteFile(md, append(mustRead(t, md), ' '), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := gpgVerify(t, filepath.Join(root, repo.PublicKeyArmored), md+".asc", md); err == nil {
		t.Fatal("a modified repomd.xml still verifies")
	}
	if _, err := r.Remove("alpha", ""); err != nil {
		t.Fatal(err)
	}
	if err := pub.Publish(ctx, r); err != nil {
		t.Fatal(err)
	}
	if p := repotest.Primary(t, r.Dir()); len(p) != 1 || p[0].Name != "beta" {
		t.Fatalf("after removing alpha primary lists %+v", p)
	}
	if _, err := r.Remove("beta", ""); err != nil {
		t.Fatal(err)
	}
	if err := pub.Publish(ctx, r); err != nil {
		t.Fatal(err)
	}
	if exists(r.Dir()) {
		t.Fatal("an empty repository must disappear")
	}
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestPublishDeb(t *testing.T) {
	repotest.RequireTools(t, "dpkg-deb")
	ctx := context.Background()
	s := newSigner(t)
	root := t.TempDir()
	r, err := repo.Open(root, "projects/Debian/bookworm")
	if err != nil {
		t.Fatal(err)
	}
	pub := &repo.Publisher{Signer: s}
	src := t.TempDir()
	var files []repo.File
	for _, p := range []struct{ name, arch, dir string }{{"hello", "amd64", "x86_64"}, {"doc", "all", "noarch"}} {
		f := repotest.Deb(t, src, p.name, "1.0", p.arch)
		rec := fileOf(t, p.dir+"/"+filepath.Base(f), f)
		files = append(files, rec)
		if _, err := r.Install(repo.Deb, repo.Build{Name: p.name, Arch: "x86_64", RequestID: p.name,
			Files: []repo.File{rec}}, map[string]string{rec.Name: f}); err != nil {
			t.Fatal(err)
		}
	}
	if err := pub.Publish(ctx, r); err != nil {
		t.Fatal(err)
	}
	suite := filepath.Join(r.Dir(), "dists", "bookworm")
	packages := string(mustRead(t, filepath.Join(suite, "main", "binary-amd64", "Packages")))
	for _, f := range files {
		if !strings.Contains(packages, "Filename: "+f.Name+"\n") || !strings.Contains(packages, "SHA256: "+f.SHA256+"\n") {
			t.Fatalf("Packages lacks %s with its checksum:\n%s", f.Name, packages)
		}
	}
	release := string(mustRead(t, filepath.Join(suite, "Release")))
	sum := sha256.Sum256([]byte(packages))
	if !strings.Contains(release, hex.EncodeToString(sum[:])) || !strings.Contains(release, "Architectures: amd64\n") {
		t.Fatalf("Release does not match Packages:\n%s", release)
	}
	if err := s.ExportPublicKey(ctx, root); err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(root, repo.PublicKeyArmored)
	if err := gpgVerify(t, key, filepath.Join(suite, "InRelease")); err != nil {
		t.Fatalf("InRelease: %s", err)
	}
	if err := gpgVerify(t, key, filepath.Join(suite, "Release.gpg"), filepath.Join(suite, "Release")); err != nil {
		t.Fatalf("Release.gpg: %s", err)
	}
}
