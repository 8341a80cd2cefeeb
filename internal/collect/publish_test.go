package collect_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/cloud-builder/cb/internal/collect"
	"github.com/cloud-builder/cb/internal/repo"
	"github.com/cloud-builder/cb/internal/repo/repotest"
	"github.com/cloud-builder/cb/internal/upload"
)

// requireRoot skips off-root on a developer box; CI must run as root.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("this test needs root in CI")
		}
		t.Skip("needs root")
	}
}

// aptRoot is a throwaway apt configuration that knows only one source and
// trusts only the key given in its signed-by.
type aptRoot struct {
	dir  string
	conf string
}

func newAptRoot(t *testing.T, sourceLine string) *aptRoot {
	t.Helper()
	d := t.TempDir()
	for _, sub := range []string{"state/lists/partial", "cache/archives/partial", "parts", "prefs", "trusted"} {
		if err := os.MkdirAll(filepath.Join(d, sub), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write := func(name, content string) {
		if err := os.WriteFile(filepath.Join(d, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("status", "")
	write("sources.list", sourceLine+"\n")
	// Read by apt before anything in /etc, so the host's apt.conf.d
	// (proxies, insecure-repository switches) plays no part.
	write("apt.conf", fmt.Sprintf(`Dir::Etc::Parts "%[1]s/parts";
Dir::Etc::PreferencesParts "%[1]s/prefs";
Dir::Etc::Preferences "%[1]s/prefs/none";
Dir::Etc::SourceList "%[1]s/sources.list";
Dir::Etc::SourceParts "/dev/null";
Dir::Etc::Trusted "%[1]s/trusted/none.gpg";
Dir::Etc::TrustedParts "%[1]s/trusted";
Dir::State "%[1]s/state";
Dir::State::status "%[1]s/status";
Dir::Cache "%[1]s/cache";
Debug::NoLocking "true";
APT::Sandbox::User "root";
APT::Get::AllowUnauthenticated "false";
Acquire::AllowInsecureRepositories "false";
Acquire::AllowDowngradeToInsecureRepositories "false";
Acquire::Languages "none";
Acquire::http::Proxy "DIRECT";
`, d))
	return &aptRoot{dir: d, conf: filepath.Join(d, "apt.conf")}
}

func (a *aptRoot) run(t *testing.T, dir string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command("apt-get", append([]string{"-q", "-o", "Debug::NoLocking=true"}, args...)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "APT_CONFIG="+a.conf, "LC_ALL=C")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestDebRepositoryWithApt(t *testing.T) {
	requireRoot(t)
	repotest.RequireTools(t, "dpkg-deb", "apt-get")
	ts := newServer(t, nil)
	ctx := ctxT(t)
	arch, err := exec.Command("dpkg", "--print-architecture").Output()
	if err != nil {
		t.Fatal(err)
	}
	u := debUpload(t, "cb-hello", "1.0-1", strings.TrimSpace(string(arch)), "x86_64", "bookworm")
	res, err := ts.client().UploadResult(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != "published" {
		t.Fatalf("upload answered %+v", res)
	}
	keyring := filepath.Join(t.TempDir(), "cb.gpg")
	if err := os.WriteFile(keyring, get(t, ts.http.URL+"/repo.gpg", 200), 0o644); err != nil {
		t.Fatal(err)
	}
	line := fmt.Sprintf("deb [signed-by=%s] %s/projects/Debian/bookworm bookworm main", keyring, ts.http.URL)

	apt := newAptRoot(t, line)
	if out, err := apt.run(t, "", "update"); err != nil || strings.Contains(out, "W: ") || strings.Contains(out, "E: ") {
		t.Fatalf("apt-get update with signature checking: %v\n%s", err, out)
	}
	dl := t.TempDir()
	if out, err := apt.run(t, dl, "download", "cb-hello"); err != nil {
		t.Fatalf("apt-get download: %v\n%s", err, out)
	}
	got, err := os.ReadFile(filepath.Join(dl, filepath.Base(u.Files[0].Name)))
	if err != nil {
		t.Fatalf("downloaded package: %v", err)
	}
	want, _ := os.ReadFile(u.Files[0].Path)
	if !bytes.Equal(got, want) {
		t.Fatal("apt downloaded different bytes than were uploaded")
	}

	// Install into a throwaway root: dpkg --root keeps the host untouched.
	inst := t.TempDir()
	for _, d := range []string{"var/lib/dpkg/info", "var/lib/dpkg/updates", "var/lib/dpkg/triggers"} {
		if err := os.MkdirAll(filepath.Join(inst, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	status := filepath.Join(inst, "var/lib/dpkg/status")
	if err := os.WriteFile(status, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := apt.run(t, "", "install", "-y", "--no-install-recommends",
		"-o", "Dir::State::status="+status, "-o", "DPkg::Options::=--root="+inst,
		"-o", "DPkg::Options::=--force-script-chrootless", "cb-hello"); err != nil {
		t.Fatalf("apt-get install into a throwaway root: %v\n%s", err, out)
	}
	if v, err := os.ReadFile(filepath.Join(inst, "usr/share/cb-hello/VERSION")); err != nil || string(v) != "1.0-1\n" {
		t.Fatalf("installed file: %q %v", v, err)
	}

	// The check must be able to fail: a Release changed after signing is
	// refused, with nothing from it used.
	t.Run("tampered", func(t *testing.T) {
		suite := filepath.Join(ts.cfg.RepoRoot, "projects/Debian/bookworm/dists/bookworm")
		in, err := os.ReadFile(filepath.Join(suite, "InRelease"))
		if err != nil {
			t.Fatal(err)
		}
		bad := bytes.Replace(in, []byte("Origin: cloud-builder"), []byte("Origin: someone-else"), 1)
		if bytes.Equal(bad, in) {
			t.Fatal("InRelease has no Origin to tamper with")
		}
		if err := os.WriteFile(filepath.Join(suite, "InRelease"), bad, 0o644); err != nil {
			t.Fatal(err)
		}
		fresh := newAptRoot(t, line)
		out, err := fresh.run(t, "", "update")
		t.Logf("tampered update: %v\n%s", err, out)
		if err == nil && !strings.Contains(out, "not signed") && !strings.Contains(out, "BADSIG") {
			t.Fatalf("apt accepted a tampered InRelease:\n%s", out)
		}
		if _, err := fresh.run(t, dl, "download", "cb-hello"); err == nil {
			t.Fatal("a package was available from a repository with a bad signature")
		}
	})
}

func TestRPMRepository(t *testing.T) {
	repotest.RequireTools(t, "rpmbuild", "createrepo_c")
	ts := newServer(t, nil)
	ctx := ctxT(t)
	u := rpmUpload(t, "cb-hello", "1.0")
	if err := ts.client().Upload(ctx, u); err != nil {
		t.Fatal(err)
	}
	// Everything a dnf client would fetch, over HTTP.
	mirror := t.TempDir()
	base := ts.http.URL + "/projects/MS/TW/"
	fetch := func(rel string) string {
		p := filepath.Join(mirror, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, get(t, base+rel, 200), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	md := fetch("repodata/repomd.xml")
	fetch("repodata/repomd.xml.asc")
	parsed, err := repo.ReadRepomd(mirror)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range parsed.Data {
		fetch(d.Location.Href)
	}
	pkgs := repotest.Primary(t, mirror)
	data, _ := os.ReadFile(u.Files[0].Path)
	sum := sha256.Sum256(data)
	if len(pkgs) != 1 || pkgs[0].Name != "cb-hello" || pkgs[0].Location.Href != u.Files[0].Name ||
		pkgs[0].Checksum.Type != "sha256" || pkgs[0].Checksum.Value != hex.EncodeToString(sum[:]) {
		t.Fatalf("primary.xml lists %+v, want cb-hello at %s with sha256 %x", pkgs, u.Files[0].Name, sum)
	}
	if !bytes.Equal(get(t, base+u.Files[0].Name, 200), data) {
		t.Fatal("served package differs from the upload")
	}
	key := filepath.Join(mirror, "repo.key")
	if err := os.WriteFile(key, get(t, ts.http.URL+"/repo.key", 200), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := gpgVerify(t, key, md+".asc", md); err != nil {
		t.Fatalf("gpg --verify repomd.xml.asc: %v\n%s", err, out)
	}
	if err := os.WriteFile(md, bytes.Replace(mustRead(t, md), []byte("<revision>"), []byte("<revision>1"), 1), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := gpgVerify(t, key, md+".asc", md); err == nil {
		t.Fatalf("a modified repomd.xml verifies:\n%s", out)
	}
}

func gpgVerify(t *testing.T, key string, args ...string) (string, error) {
	t.Helper()
	home := t.TempDir()
	if out, err := exec.Command("gpg", "--batch", "--homedir", home, "--import", key).CombinedOutput(); err != nil {
		t.Fatalf("import key: %v\n%s", err, out)
	}
	defer exec.Command("gpgconf", "--homedir", home, "--kill", "all").Run()
	out, err := exec.Command("gpg", append([]string{"--batch", "--homedir", home, "--verify"}, args...)...).CombinedOutput()
	return string(out), err
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// Builds finishing at the same moment into one repository serialise on its
// lock; every one of them ends up in the metadata.
func TestConcurrentUploadsOneRepository(t *testing.T) {
	repotest.RequireTools(t, "rpmbuild", "createrepo_c")
	ts := newServer(t, nil)
	ctx := ctxT(t)
	names := []string{"alpha", "beta", "gamma", "delta"}
	ups := make([]upload.Upload, len(names))
	for i, n := range names {
		ups[i] = rpmUpload(t, n, "1.0")
	}
	start := make(chan struct{})
	errs := make([]error, len(ups))
	var wg sync.WaitGroup
	for i := range ups {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			errs[i] = ts.client().Upload(ctx, ups[i])
		}()
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("upload %s: %v", names[i], err)
		}
	}
	got := map[string]bool{}
	for _, p := range repotest.Primary(t, filepath.Join(ts.cfg.RepoRoot, "projects/MS/TW")) {
		got[p.Name] = true
	}
	for _, n := range names {
		if !got[n] {
			t.Errorf("%s missing from primary.xml (has %v)", n, got)
		}
	}
}

// With SignRPMs the served rpm carries the repository key's signature,
// rpm accepts it with that key, the metadata lists the signed file, and a
// repeated delivery is still recognised as the same build.
func TestSignedRPMs(t *testing.T) {
	repotest.RequireTools(t, "rpmbuild", "createrepo_c", "rpmsign", "rpmkeys")
	ts := newServer(t, func(c *collect.Config) { c.SignRPMs = true })
	ctx := ctxT(t)
	u := rpmUpload(t, "cb-signed", "1.0")
	if err := ts.client().Upload(ctx, u); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	served := filepath.Join(dir, "served.rpm")
	if err := os.WriteFile(served, get(t, ts.http.URL+"/projects/MS/TW/"+u.Files[0].Name, 200), 0o644); err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(dir, "repo.key")
	if err := os.WriteFile(key, get(t, ts.http.URL+"/repo.key", 200), 0o644); err != nil {
		t.Fatal(err)
	}
	db := filepath.Join(dir, "rpmdb")
	if out, err := exec.Command("rpmkeys", "--dbpath", db, "--import", key).CombinedOutput(); err != nil {
		t.Fatalf("rpmkeys --import: %v\n%s", err, out)
	}
	out, err := exec.Command("rpmkeys", "--dbpath", db, "--checksig", served).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "signatures OK") {
		t.Fatalf("rpmkeys --checksig: %v\n%s", err, out)
	}
	unsigned, err := exec.Command("rpmkeys", "--dbpath", db, "--checksig", u.Files[0].Path).CombinedOutput()
	if strings.Contains(string(unsigned), "signatures OK") {
		t.Fatalf("the unsigned original passes too, the check proves nothing:\n%s", unsigned)
	}
	sum := sha256.Sum256(mustRead(t, served))
	if p := repotest.Primary(t, filepath.Join(ts.cfg.RepoRoot, "projects/MS/TW")); len(p) != 1 || p[0].Checksum.Value != hex.EncodeToString(sum[:]) {
		t.Fatalf("primary.xml does not list the signed file: %+v", p)
	}
	res, err := ts.client().UploadResult(ctx, u)
	if err != nil || res.Status != "unchanged" {
		t.Fatalf("repeated delivery: %+v %v, want unchanged", res, err)
	}
}
