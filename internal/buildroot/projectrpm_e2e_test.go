package buildroot

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"net/http"
	"net/http/httptest"

	"github.com/cloud-builder/cb/internal/mirror"
	"github.com/cloud-builder/cb/internal/repo"
	"github.com/cloud-builder/cb/internal/repo/repotest"
	"github.com/cloud-builder/cb/internal/sandbox"
	"github.com/cloud-builder/cb/internal/target"
)

// A spec's BuildRequires are taken from the project's signed rpm-md
// repository, as published by the collector's code: the newest version,
// installed with rpm into a root as the id range's root.
func TestInstallProjectRPMs(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("needs root under CI")
		}
		t.Skip("needs root")
	}
	repotest.RequireTools(t, "rpm", "rpmbuild", "createrepo_c", "gpg", "gpgv")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	// The collector's repository projects/T/bookworm with two versions.
	s, _ := newSigner(t)
	collector := t.TempDir()
	if err := s.ExportPublicKey(ctx, collector); err != nil {
		t.Fatal(err)
	}
	r, err := repo.Open(collector, "projects/T/bookworm")
	if err != nil {
		t.Fatal(err)
	}
	built := t.TempDir()
	for i, v := range []string{"1.10", "1.9"} {
		rpm := repotest.RPM(t, built, "greet-devel", v)
		data, err := os.ReadFile(rpm)
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(data)
		f := repo.File{Name: "noarch/" + filepath.Base(rpm), Size: int64(len(data)), SHA256: hex.EncodeToString(sum[:])}
		// Two builds of different packages keep both files.
		name := []string{"greet", "greet-old"}[i]
		if _, err := r.Install(repo.RPM, repo.Build{Project: "projects/T/" + name, Name: name, Arch: "noarch",
			RequestID: name, Files: []repo.File{f}}, map[string]string{f.Name: rpm}); err != nil {
			t.Fatal(err)
		}
	}
	if err := (&repo.Publisher{Signer: s}).Publish(ctx, r); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.FileServer(http.Dir(collector)))
	defer srv.Close()
	pr := &ProjectRepos{URL: srv.URL, KeyFile: filepath.Join(collector, repo.PublicKeyArmored)}

	pkgDir := t.TempDir()
	spec := "Name: greet-tool\nVersion: 1\nRelease: 1\nBuildRequires: greet-devel >= 1.0, gcc\n"
	if err := os.WriteFile(filepath.Join(pkgDir, "greet-tool.spec"), []byte(spec), 0o644); err != nil {
		t.Fatal(err)
	}
	tg, err := target.New(t.TempDir(), "projects/T/greet-tool", "bookworm", "x86_64")
	if err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	step := func(f string, a ...any) { log.WriteString(strings.TrimSpace(fmt.Sprintf(f, a...)) + "\n") }
	cacheDir := t.TempDir()
	set, err := projectRPMRepositories(ctx, pr, cacheDir, pkgDir, tg, &Profile{PackageManager: "apt", Arch: "x86_64"}, step)
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	if set == nil || len(set.Packages) != 1 || set.Packages[0].EVR() != "1.10-1" {
		t.Fatalf("chosen: %+v\n%s", set, log.String())
	}
	if got := set.installed()["greet-devel"]; got.Version != "1.10-1" || got.Arch != "noarch" {
		t.Fatalf("solver entry: %+v", got)
	}

	// Install into a root that belongs to the range, as the native
	// backend leaves it.
	ids := sandbox.DefaultIDs
	root := filepath.Join(t.TempDir(), "root")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(root, int(ids.UID), int(ids.GID)); err != nil {
		t.Fatal(err)
	}
	if err := installProjectRPMs(ctx, set, root, "", cacheDir, ids, &log); err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	f := filepath.Join(root, "usr/share/greet-devel/VERSION")
	data, err := os.ReadFile(f)
	if err != nil || strings.TrimSpace(string(data)) != "1.10" {
		t.Fatalf("installed file: %q %v\n%s", data, err, log.String())
	}
	fi, _ := os.Stat(f)
	if st := fi.Sys().(*syscall.Stat_t); st.Uid != ids.UID {
		t.Errorf("installed file belongs to %d, not the range's root %d", st.Uid, ids.UID)
	}
	if _, err := os.Stat(filepath.Join(root, rpmDBPath)); err != nil {
		t.Errorf("no rpm database at %s: %v", rpmDBPath, err)
	}
	if left, _ := filepath.Glob(filepath.Join(cacheDir, "rpms-*")); len(left) != 0 {
		t.Errorf("downloads left behind: %v", left)
	}

	// Into a layer: the upper dir of an overlay on a base, which rpm
	// never writes to.
	base := filepath.Join(t.TempDir(), "base")
	layer := filepath.Join(t.TempDir(), "layer")
	for _, d := range []string{base, layer} {
		must(t, os.Mkdir(d, 0o755))
		must(t, os.Chown(d, int(ids.UID), int(ids.GID)))
	}
	mustWrite(t, filepath.Join(base, "etc", "base-marker"), "base", 0o644)
	must(t, sandbox.ShiftOwner(base, ids))
	if err := installProjectRPMs(ctx, set, layer, base, cacheDir, ids, &log); err != nil {
		t.Fatalf("into a layer: %v\n%s", err, log.String())
	}
	if data, err := os.ReadFile(filepath.Join(layer, "usr/share/greet-devel/VERSION")); err != nil || strings.TrimSpace(string(data)) != "1.10" {
		t.Fatalf("layer holds %q (%v)\n%s", data, err, log.String())
	}
	if ents, _ := os.ReadDir(base); len(ents) != 1 {
		t.Errorf("the base layer was written to: %v", ents)
	}
	if _, err := os.Stat(filepath.Join(layer, "etc", "base-marker")); err == nil {
		t.Error("an unchanged base file was copied into the layer")
	}
	if left, _ := filepath.Glob(layer + ".work"); len(left) != 0 {
		t.Errorf("overlay workdir left behind: %v", left)
	}
	if err := installProjectRPMs(ctx, set, layer, base, cacheDir, sandbox.IDMap{}, &log); err == nil {
		t.Error("a layer install without an id range succeeded")
	}
}

// layerStatusBackend is statusBackend as a LayerBackend, its roots made
// as the id range's as the native backend makes them. A spec's target
// layer holds only project rpm packages, which Prepare installs itself:
// CreateLayer is never called for it.
type layerStatusBackend struct{ statusBackend }

func (*layerStatusBackend) Name() string { return "status-layer-test" }

func (b *layerStatusBackend) Create(ctx context.Context, r CreateRequest) error {
	if err := b.statusBackend.Create(ctx, r); err != nil {
		return err
	}
	return sandbox.ShiftOwner(r.Dir, r.IDs)
}

func (*layerStatusBackend) CreateLayer(context.Context, LayerRequest) error {
	return fmt.Errorf("status-layer-test: no apt build dependencies expected")
}

func init() { Register(&layerStatusBackend{}) }

// Prepare of a spec's target takes its BuildRequires from the project's
// rpm-md repository into the cached root; a new version of the
// dependency gives a new root, an unchanged repository the cached one.
func TestPrepareProjectRPMs(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("needs root under CI")
		}
		t.Skip("needs root")
	}
	repotest.RequireTools(t, "rpm", "rpmbuild", "createrepo_c", "gpg", "gpgv", "dpkg-query")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	flat := t.TempDir()
	must(t, os.WriteFile(filepath.Join(flat, "Release"), []byte("v1"), 0o644))
	t.Setenv(mirror.EnvOverride, "file://"+flat)

	s, _ := newSigner(t)
	collector := t.TempDir()
	must(t, s.ExportPublicKey(ctx, collector))
	r, err := repo.Open(collector, "projects/RPM/bookworm")
	must(t, err)
	publish := func(version string) {
		t.Helper()
		rpm := repotest.RPM(t, t.TempDir(), "greet-devel", version)
		data, err := os.ReadFile(rpm)
		must(t, err)
		sum := sha256.Sum256(data)
		f := repo.File{Name: "noarch/" + filepath.Base(rpm), Size: int64(len(data)), SHA256: hex.EncodeToString(sum[:])}
		if _, err := r.Install(repo.RPM, repo.Build{Project: "projects/RPM/greet", Name: "greet", Arch: "noarch",
			RequestID: version, Files: []repo.File{f}}, map[string]string{f.Name: rpm}); err != nil {
			t.Fatal(err)
		}
		must(t, (&repo.Publisher{Signer: s}).Publish(ctx, r))
	}
	publish("1.0")
	srv := httptest.NewServer(http.FileServer(http.Dir(collector)))
	defer srv.Close()

	pkg := filepath.Join(t.TempDir(), "greet-tool")
	must(t, CopyTree("../../examples/projects/RPM/cb-hello-rpm", pkg))
	desc, err := os.ReadFile(filepath.Join(pkg, DescriptionFile))
	must(t, err)
	must(t, os.WriteFile(filepath.Join(pkg, DescriptionFile), bytes.ReplaceAll(desc, []byte(`distribution="bookworm" `), nil), 0o644))
	specs, _ := filepath.Glob(filepath.Join(pkg, "*.spec"))
	for _, sp := range specs {
		must(t, os.Remove(sp))
	}
	must(t, os.WriteFile(filepath.Join(pkg, "greet-tool.spec"),
		[]byte("Name: greet-tool\nVersion: 1\nRelease: 1\nBuildRequires: greet-devel >= 1.0, gcc\n"), 0o644))
	tg, err := target.New(t.TempDir(), "projects/RPM/greet-tool", "bookworm", "x86_64")
	must(t, err)
	// As root the root comes in layers: the project packages in a target
	// layer on the base.
	opts := Options{Backend: "status-layer-test", CacheDir: t.TempDir(),
		ProjectRepos: &ProjectRepos{URL: srv.URL, KeyFile: filepath.Join(collector, repo.PublicKeyBinary)}}
	prepare := func(want string) *Layout {
		t.Helper()
		var plog bytes.Buffer
		opts.Log = &plog
		l, err := Prepare(ctx, opts, pkg, tg)
		if err != nil {
			t.Fatalf("%v\n%s", err, plog.String())
		}
		solved, err := ReadSolved(tg.SolverFile())
		must(t, err)
		if got := solved.Packages["greet-devel"]; got.Version != want || got.Arch != "noarch" || solved.Packages["dpkg"].Version == "" {
			t.Fatalf("solver file: greet-devel %+v, want %s; %v\n%s", got, want, solved.Packages, plog.String())
		}
		lowers := l.lowers()
		data, err := os.ReadFile(filepath.Join(lowers[0], "usr/share/greet-devel/VERSION"))
		if err != nil || strings.TrimSpace(string(data)) != strings.TrimSuffix(want, "-1") {
			t.Fatalf("root holds greet-devel %q (%v)\n%s", data, err, plog.String())
		}
		if len(lowers) != 2 {
			t.Fatalf("layered root %q: want a target layer on a base", l.Lower)
		}
		if _, err := os.Stat(filepath.Join(lowers[1], "usr/share/greet-devel")); err == nil {
			t.Fatalf("the project package was installed into the shared base layer %s", lowers[1])
		}
		return l
	}
	first := prepare("1.0-1")
	again := prepare("1.0-1")
	if first.CacheHit || !again.CacheHit || again.CacheKey != first.CacheKey {
		t.Fatalf("unchanged repository: first %s hit=%v, again %s hit=%v", first.CacheKey, first.CacheHit, again.CacheKey, again.CacheHit)
	}
	publish("1.1")
	newer := prepare("1.1-1")
	if newer.CacheHit || newer.CacheKey == first.CacheKey {
		t.Fatalf("new dependency version: key %s hit=%v, before %s", newer.CacheKey, newer.CacheHit, first.CacheKey)
	}
	// A new version of a project package makes only a new target layer:
	// the base is shared.
	if fl, nl := first.lowers(), newer.lowers(); nl[1] != fl[1] {
		t.Fatalf("new dependency version: layers %q, before %q: want the same base", newer.Lower, first.Lower)
	}
}
