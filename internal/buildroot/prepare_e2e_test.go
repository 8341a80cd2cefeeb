package buildroot_test

import (
	"bufio"
	"bytes"
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloud-builder/cb/internal/buildroot"
	_ "github.com/cloud-builder/cb/internal/buildroot/kiwi"
	_ "github.com/cloud-builder/cb/internal/buildroot/native"
	"github.com/cloud-builder/cb/internal/target"
)

const debianExample = "../../examples/projects/Debian/cb-hello"

// requireRootTools skips off-root or without the tools on a developer box,
// but never under CI, where a skipped end-to-end test would hide a gap.
func requireRootTools(t testing.TB, tools ...string) {
	t.Helper()
	ci := os.Getenv("CI") == "true"
	if os.Geteuid() != 0 {
		if ci {
			t.Fatal("end-to-end buildroot tests need root under CI")
		}
		t.Skip("needs root")
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			if ci {
				t.Fatalf("%s missing under CI", tool)
			}
			t.Skipf("%s not installed", tool)
		}
	}
}

// syncBuffer is a log sink shared by slog and the prepare log.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newTarget(t testing.TB, root, project string) target.Target {
	t.Helper()
	tg, err := target.New(root, project, "bookworm", "x86_64")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(tg.Dir()), 0o755); err != nil {
		t.Fatal(err)
	}
	return tg
}

func assertNoMountsBelow(t *testing.T, dir string) {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) > 4 && strings.HasPrefix(fields[4], dir) {
			t.Errorf("mount left behind: %s", fields[4])
		}
	}
}

// checkRoot asserts what a prepared Debian example buildroot must hold and
// that its layout mounts as an overlay in a private namespace.
func checkRoot(t *testing.T, ctx context.Context, l *buildroot.Layout, tg target.Target, wantPkgs ...string) {
	t.Helper()
	solved, err := buildroot.ReadSolved(tg.SolverFile())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range wantPkgs {
		if solved.Packages[p].Version == "" {
			t.Errorf("solver file lacks %s with a version", p)
		}
	}
	if solved.CacheKey != l.CacheKey || solved.Profile != "bookworm.x86_64" {
		t.Errorf("solver file header = %+v", solved)
	}
	if fi, err := os.Stat(filepath.Join(l.Upper, tg.Name(), "debian", "control")); err != nil || !fi.Mode().IsRegular() {
		t.Errorf("package sources not staged: %v", err)
	}
	if _, err := os.Stat(filepath.Join(l.Upper, tg.Name(), ".git")); err == nil {
		t.Error(".git staged")
	}
	if ents, err := os.ReadDir(l.Merged); err != nil || len(ents) != 0 {
		t.Errorf("merged mount point not an empty directory: %v %v", ents, err)
	}
	loaded, err := buildroot.LoadLayout(tg)
	if err != nil || !reflect.DeepEqual(loaded, l) {
		t.Errorf("LoadLayout = %+v, %v; want %+v", loaded, err, l)
	}
	var out bytes.Buffer
	err = buildroot.Exec(ctx, &out, buildroot.ExecOptions{PrivateMounts: true}, "sh", "-ec",
		`mount -t overlay overlay -o "$1" "$2"; test -x "$2/usr/bin/gcc"; test -x "$2/usr/bin/dh"; test -f "$2$3/debian/rules"`,
		"sh", l.OverlayOptions(), l.Merged, l.PackageDir)
	if err != nil {
		t.Errorf("overlay of the layout is not a usable buildroot: %v\n%s", err, out.String())
	}
	if l.Backend == buildroot.BackendNative {
		checkSlim(t, ctx, l)
	}
	assertNoMountsBelow(t, tg.Root)
}

// checkSlim checks the native backend's path excludes in the root of l:
// no manuals, translations or docs but the copyright files, also from
// the essential set (dpkg's own). kiwi installs what the packages hold.
func checkSlim(t *testing.T, ctx context.Context, l *buildroot.Layout) {
	t.Helper()
	var out, found bytes.Buffer
	err := buildroot.Exec(ctx, &out, buildroot.ExecOptions{PrivateMounts: true, Stdout: &found}, "sh", "-ec",
		`mount -t overlay overlay -o "$1" "$2"; test -f "$2/usr/share/doc/dpkg/copyright"; test -f "$2/usr/share/doc/gcc-12-base/copyright"
		find "$2/usr/share/man" "$2/usr/share/locale" "$2/usr/share/doc/dpkg" "$2/usr/share/doc/gcc-12-base" ! -type d ! -name copyright`,
		"sh", l.OverlayOptions(), l.Merged)
	if err != nil || found.Len() != 0 {
		t.Errorf("excluded paths in the buildroot or copyright files missing: %v\n%s%s", err, out.String(), found.String())
	}
}

// loggedLayer reports whether log has a line with msg for a layer of the
// kind.
func loggedLayer(log, msg, kind string) bool {
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, msg) && strings.Contains(line, " layer="+kind+" ") {
			return true
		}
	}
	return false
}

func TestPrepareNativeCache(t *testing.T) {
	requireRootTools(t, "mmdebstrap", "dpkg-query", "bwrap", "dpkg-deb", "gpg", "gpgconf")
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	root := t.TempDir()
	tg := newTarget(t, root, "projects/Debian/cb-hello")
	var slogBuf, prepLog syncBuffer
	opts := buildroot.Options{
		CacheDir: filepath.Join(root, ".cache", "buildroot"),
		Backend:  buildroot.BackendAuto,
		Log:      &prepLog,
		Logger:   slog.New(slog.NewTextHandler(&slogBuf, nil)),
	}

	// Two targets with the same description prepared at once: the per-key
	// lock makes one build the root and the other reuse it.
	other := newTarget(t, root, "projects/Other/cb-hello")
	start := time.Now()
	var wg sync.WaitGroup
	layouts := make([]*buildroot.Layout, 2)
	errs := make([]error, 2)
	for i, tgt := range []target.Target{tg, other} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			layouts[i], errs[i] = buildroot.Prepare(ctx, opts, debianExample, tgt)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatalf("%v\n%s", err, prepLog.String())
		}
	}
	t.Logf("cold prepare (native): %v", time.Since(start).Round(time.Millisecond))
	cold, shared := layouts[0], layouts[1]
	if cold.CacheHit == shared.CacheHit || cold.Lower != shared.Lower || cold.Backend != buildroot.BackendNative {
		t.Fatalf("concurrent cold prepares: hit %v/%v, lower %s/%s, backend %s",
			cold.CacheHit, shared.CacheHit, cold.Lower, shared.Lower, cold.Backend)
	}
	// cb-hello needs only debhelper-compat, which debhelper of the base
	// layer provides: one miss, for the base layer, and no target layer.
	if n := strings.Count(slogBuf.String(), "buildroot cache miss"); n != 1 || !strings.Contains(slogBuf.String(), "layer=base") {
		t.Errorf("%d cache misses logged, want 1 of the base layer:\n%s", n, slogBuf.String())
	}
	if strings.Contains(cold.Lower, ":") || !strings.Contains(prepLog.String(), "no target layer") {
		t.Fatalf("lower = %s, want the base layer alone", cold.Lower)
	}
	base := cold.Lower
	if !strings.Contains(prepLog.String(), "buildroot cache miss") {
		t.Error("prepare log does not show the cache decision")
	}
	checkRoot(t, ctx, cold, tg, "build-essential", "dpkg", "debhelper", "gcc")

	// Another package on the same base: only its own build dependencies
	// are installed, in a target layer on the cached base layer.
	zlibPkg := dependentPackage(t, "cb-zlib", "", "debhelper-compat (= 13), zlib1g-dev")
	other2 := newTarget(t, root, "projects/Debian/cb-zlib")
	slogBuf = syncBuffer{}
	start = time.Now()
	second, err := buildroot.Prepare(ctx, opts, zlibPkg, other2)
	if err != nil {
		t.Fatalf("%v\n%s", err, prepLog.String())
	}
	t.Logf("prepare of a second package on the cached base: %v", time.Since(start).Round(time.Millisecond))
	secondLayers := strings.Split(second.Lower, ":")
	if second.CacheHit || len(secondLayers) != 2 || secondLayers[1] != base || second.CacheKey == cold.CacheKey {
		t.Fatalf("second package: hit=%v lower=%s, want a new target layer on %s", second.CacheHit, second.Lower, base)
	}
	if n := strings.Count(slogBuf.String(), "buildroot cache miss"); n != 1 ||
		!loggedLayer(slogBuf.String(), "buildroot cache miss", "target") || !loggedLayer(slogBuf.String(), "buildroot cache hit", "base") {
		t.Errorf("second package: %d misses (want only the target layer's), base layer not reused:\n%s", n, slogBuf.String())
	}
	if _, err := os.Stat(filepath.Join(secondLayers[0], "usr/include/zlib.h")); err != nil {
		t.Errorf("the target layer lacks the package's build dependency: %v", err)
	}
	if _, err := os.Stat(filepath.Join(secondLayers[0], "usr/bin/gcc")); err == nil {
		t.Error("the target layer holds a copy of the base layer")
	}
	if solved, err := buildroot.ReadSolved(other2.SolverFile()); err != nil || solved.Packages["zlib1g-dev"].Version == "" ||
		solved.Packages["gcc"].Version == "" || solved.CacheKey != second.CacheKey {
		t.Errorf("solver file of the layered root: %+v, %v", solved, err)
	}
	var out bytes.Buffer
	err = buildroot.Exec(ctx, &out, buildroot.ExecOptions{PrivateMounts: true}, "sh", "-ec",
		`mount -t overlay overlay -o "$1" "$2"; test -x "$2/usr/bin/gcc"; test -f "$2/usr/include/zlib.h"; test -f "$2$3/debian/control"`,
		"sh", second.OverlayOptions(), second.Merged, second.PackageDir)
	if err != nil {
		t.Errorf("overlay of the layered layout is not a usable buildroot: %v\n%s", err, out.String())
	}

	// A package that build-depends on a package of its project's signed
	// repository: its target layer adds the repository, on the same base.
	pr := serveProjectRepo(t, ctx, projectDeb(t, "cb-projdep", "1.2-3", "", ""), "cb-projdep")
	userPkg := dependentPackage(t, "cb-user", "", "debhelper-compat (= 13), cb-projdep (>= 1.2)")
	userTg := newTarget(t, root, "projects/T/cb-user")
	popts := opts
	popts.ProjectRepos = pr
	slogBuf = syncBuffer{}
	start = time.Now()
	user, err := buildroot.Prepare(ctx, popts, userPkg, userTg)
	if err != nil {
		t.Fatalf("%v\n%s", err, prepLog.String())
	}
	t.Logf("prepare of a package with a project repository on the cached base: %v", time.Since(start).Round(time.Millisecond))
	userLayers := strings.Split(user.Lower, ":")
	if user.CacheHit || len(userLayers) != 2 || userLayers[1] != base {
		t.Fatalf("project package: hit=%v lower=%s, want a new target layer on %s", user.CacheHit, user.Lower, base)
	}
	if solved, err := buildroot.ReadSolved(userTg.SolverFile()); err != nil || solved.Packages["cb-projdep"].Version != "1.2-3" {
		t.Errorf("cb-projdep from the project repository not in the root: %v", err)
	}

	// Leftovers of the build step in the target must not survive a prepare.
	if err := os.WriteFile(filepath.Join(cold.Upper, "leftover"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	slogBuf = syncBuffer{}
	start = time.Now()
	warm, err := buildroot.Prepare(ctx, opts, debianExample, tg)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("warm prepare: %v", time.Since(start).Round(time.Millisecond))
	if !warm.CacheHit || warm.Lower != cold.Lower || warm.CacheKey != cold.CacheKey {
		t.Fatalf("second prepare: hit=%v lower=%s (cold %s)", warm.CacheHit, warm.Lower, cold.Lower)
	}
	if !strings.Contains(slogBuf.String(), "buildroot cache hit") {
		t.Errorf("cache hit not logged:\n%s", slogBuf.String())
	}
	if _, err := os.Stat(filepath.Join(warm.Upper, "leftover")); err == nil {
		t.Error("upper dir not reset")
	}
	checkRoot(t, ctx, warm, tg, "build-essential", "dpkg")

	slogBuf = syncBuffer{}
	opts.Fresh = true
	fresh, err := buildroot.Prepare(ctx, opts, debianExample, tg)
	if err != nil {
		t.Fatal(err)
	}
	// A fresh root is a new generation of the base layer.
	if fresh.CacheHit || fresh.Lower == base || filepath.Dir(fresh.Lower) != filepath.Dir(base) || fresh.CacheKey != cold.CacheKey {
		t.Fatalf("fresh prepare: hit=%v lower=%s", fresh.CacheHit, fresh.Lower)
	}
	if !strings.Contains(slogBuf.String(), "buildroot cache miss") {
		t.Errorf("fresh prepare did not log a miss:\n%s", slogBuf.String())
	}
	// The old generation is still the other targets' lower dir: kept.
	if _, err := os.Stat(base); err != nil {
		t.Errorf("generation in use by another target was removed: %v", err)
	}
	// Once no layout points at it any more, it goes.
	opts.Fresh = false
	for _, tgt := range []target.Target{other, other2, userTg} {
		if err := os.RemoveAll(tgt.Work()); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := buildroot.Prepare(ctx, opts, debianExample, other); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(base); err == nil {
		t.Error("unreferenced old generation kept")
	}
	checkRoot(t, ctx, fresh, tg, "build-essential", "dpkg")
}

func TestPrepareKiwi(t *testing.T) {
	if testing.Short() {
		t.Skip("kiwi-ng needs minutes")
	}
	requireRootTools(t, "kiwi-ng", "debootstrap", "dpkg-query")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	root := t.TempDir()
	tg := newTarget(t, root, "projects/Debian/cb-hello")
	var prepLog syncBuffer
	// No persistent download cache: the test leaves nothing outside its temp dir.
	opts := buildroot.Options{Backend: buildroot.BackendKiwi, NoDownloadCache: true, Log: &prepLog}
	start := time.Now()
	l, err := buildroot.Prepare(ctx, opts, debianExample, tg)
	if err != nil {
		t.Fatalf("%v\n%s", err, prepLog.String())
	}
	t.Logf("cold prepare (kiwi): %v", time.Since(start).Round(time.Millisecond))
	if l.CacheHit || l.Backend != buildroot.BackendKiwi || filepath.Dir(filepath.Dir(l.Lower)) != filepath.Join(root, ".cache", "buildroot") {
		t.Fatalf("layout = %+v", l)
	}
	if !strings.Contains(prepLog.String(), "kiwi-ng --profile bookworm.x86_64") {
		t.Error("prepare log does not show the kiwi-ng command")
	}
	checkRoot(t, ctx, l, tg, "build-essential", "dpkg", "debhelper")
}

func TestPrepareNativeRPMExample(t *testing.T) {
	requireRootTools(t, "mmdebstrap", "dpkg-query")
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	root := t.TempDir()
	tg := newTarget(t, root, "projects/RPM/cb-hello-rpm")
	var prepLog syncBuffer
	l, err := buildroot.Prepare(ctx, buildroot.Options{Log: &prepLog}, "../../examples/projects/RPM/cb-hello-rpm", tg)
	if err != nil {
		t.Fatalf("%v\n%s", err, prepLog.String())
	}
	if l.SourceKind != buildroot.KindSpec || l.Backend != buildroot.BackendNative {
		t.Fatalf("layout = %+v", l)
	}
	solved, err := buildroot.ReadSolved(tg.SolverFile())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"rpm", "gcc", "make"} {
		if solved.Packages[p].Version == "" {
			t.Errorf("solver file lacks %s", p)
		}
	}
	for _, f := range []string{"cb-hello-rpm.spec", "cb-hello-rpm-1.0.0.tar.gz"} {
		if _, err := os.Stat(filepath.Join(l.Upper, tg.Name(), f)); err != nil {
			t.Errorf("source not staged: %v", err)
		}
	}
	var out bytes.Buffer
	err = buildroot.Exec(ctx, &out, buildroot.ExecOptions{PrivateMounts: true}, "sh", "-ec",
		`mount -t overlay overlay -o "$1" "$2"; test -x "$2/usr/bin/rpmbuild"`, "sh", l.OverlayOptions(), l.Merged)
	if err != nil {
		t.Errorf("rpmbuild missing in the overlay: %v\n%s", err, out.String())
	}
	assertNoMountsBelow(t, root)
}

// A prepare cancelled mid-install leaves no partial root, no mount and no
// process behind.
func TestPrepareCancelled(t *testing.T) {
	requireRootTools(t, "mmdebstrap")
	root := t.TempDir()
	tg := newTarget(t, root, "projects/Debian/cb-hello")
	var prepLog syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := buildroot.Prepare(ctx, buildroot.Options{Backend: buildroot.BackendNative, Log: &prepLog}, debianExample, tg)
		done <- err
	}()
	// Cancel once mmdebstrap is busy installing.
	deadline := time.Now().Add(3 * time.Minute)
	for !strings.Contains(prepLog.String(), "I: extracting archives") {
		if time.Now().After(deadline) {
			t.Fatalf("mmdebstrap did not get going:\n%s", prepLog.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("cancelled prepare succeeded")
		}
	case <-time.After(time.Minute):
		t.Fatal("cancelled prepare did not return")
	}
	cacheDir := filepath.Join(root, ".cache", "buildroot")
	leftovers, _ := filepath.Glob(filepath.Join(cacheDir, "*", "tmp-*"))
	current, _ := filepath.Glob(filepath.Join(cacheDir, "*", "current"))
	if len(leftovers)+len(current) != 0 {
		t.Errorf("partial root left behind: %v %v", leftovers, current)
	}
	assertNoMountsBelow(t, root)
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		if data, err := os.ReadFile(p); err == nil && bytes.Contains(data, []byte(root)) {
			t.Errorf("process left behind: %s", bytes.ReplaceAll(data, []byte{0}, []byte{' '}))
		}
	}
}
