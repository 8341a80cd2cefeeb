package build

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cloud-builder/cb/internal/buildroot"
	"github.com/cloud-builder/cb/internal/sandbox"
	"github.com/cloud-builder/cb/internal/target"
)

func TestMain(m *testing.M) {
	sandbox.Init()
	os.Exit(m.Run())
}

// copyTree copies a source tree from testdata.
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		out := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(out, 0o755)
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(out, data, info.Mode().Perm())
	})
	if err != nil {
		t.Fatal(err)
	}
}

// tarball writes dir as a .tar.gz with dir's base name as top directory.
func tarball(t *testing.T, dir, out string) {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	base := filepath.Dir(dir)
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		hdr, err := tar.FileInfoHeader(info, "")
		if err != nil {
			return err
		}
		hdr.Name, _ = filepath.Rel(base, p)
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		_, err = tw.Write(data)
		return err
	})
	if err == nil {
		err = errors.Join(tw.Close(), gz.Close())
	}
	if err == nil {
		err = os.WriteFile(out, buf.Bytes(), 0o644)
	}
	if err != nil {
		t.Fatal(err)
	}
}

// fixture is a prepared target: base root as lower layer, the package
// sources in the upper layer, as the buildroot preparation leaves it.
type fixture struct {
	t      target.Target
	layout *buildroot.Layout
	src    string // package dir in the upper layer
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	lower := baseRoot(t)
	tg, err := target.New(t.TempDir(), "projects/test/hello", "bookworm", "x86_64")
	if err != nil {
		t.Fatal(err)
	}
	l := &buildroot.Layout{
		Lower: lower, Upper: filepath.Join(tg.Work(), "upper"), Work: filepath.Join(tg.Work(), "work"),
		Merged: tg.Dir(), PackageDir: "/" + tg.Name(),
	}
	f := &fixture{t: tg, layout: l, src: filepath.Join(l.Upper, tg.Name())}
	for _, d := range []string{l.Upper, l.Work, l.Merged, f.src} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		data, _ := os.ReadFile("/proc/self/mountinfo")
		if bytes.Contains(data, []byte(tg.Root)) {
			t.Errorf("mount left below %s:\n%s", tg.Root, data)
		}
	})
	return f
}

// stale plants a binary of an imagined previous build.
func (f *fixture) stale(t *testing.T) string {
	t.Helper()
	p := filepath.Join(f.t.Binaries(), "projects", "test", "bookworm", "amd64", "old_0.1_amd64.deb")
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func (f *fixture) run(t *testing.T, o Options) (*Result, string, error) {
	t.Helper()
	logPath := f.t.BuildLog()
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	o.Target, o.Layout, o.Log = f.t, f.layout, logf
	// The sources belong to root inside the build, as after a prepare.
	if err := sandbox.ShiftOwner(f.layout.Upper, sandbox.DefaultIDs); err != nil {
		t.Fatal(err)
	}
	if o.Timeout == 0 {
		o.Timeout = 10 * time.Minute
	}
	res, err := Run(context.Background(), o)
	data, rerr := os.ReadFile(logPath)
	if rerr != nil {
		t.Fatal(rerr)
	}
	return res, string(data), err
}

// relBinaries lists result paths relative to the target's binaries dir.
func (f *fixture) relBinaries(t *testing.T, res *Result) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	for _, b := range res.Binaries {
		rel, err := filepath.Rel(f.t.Binaries(), b)
		if err != nil || strings.HasPrefix(rel, "..") {
			t.Errorf("binary %s is not below %s", b, f.t.Binaries())
		}
		if _, err := os.Stat(b); err != nil {
			t.Errorf("binary %s: %v", b, err)
		}
		out[filepath.ToSlash(rel)] = true
	}
	return out
}

func validate(t *testing.T, argv ...string) string {
	t.Helper()
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		t.Errorf("%s: %v\n%s", strings.Join(argv, " "), err, out)
	}
	return string(out)
}

func TestBuildDebianTree(t *testing.T) {
	needTool(t, "dpkg-deb")
	f := newFixture(t)
	copyTree(t, "testdata/deb", f.src)
	old := f.stale(t)
	res, log, err := f.run(t, Options{})
	if err != nil || res.ExitCode != 0 {
		t.Fatalf("exit %v err %v\n%s", res, err, log)
	}
	if res.Engine != "dpkg-buildpackage" || res.RepoType != RepoDeb {
		t.Errorf("engine %q repo type %q", res.Engine, res.RepoType)
	}
	bins := f.relBinaries(t, res)
	for _, want := range []string{
		"projects/test/bookworm/amd64/hello_1.0_amd64.deb",
		"projects/test/bookworm/all/hello-doc_1.0_all.deb",
	} {
		if !bins[want] {
			t.Errorf("missing %s in %v", want, bins)
		}
	}
	for _, b := range res.Binaries {
		if strings.HasSuffix(b, "hello_1.0_amd64.deb") {
			info := validate(t, "dpkg-deb", "-I", b)
			if !strings.Contains(info, "Package: hello") || !strings.Contains(info, "Architecture: amd64") {
				t.Errorf("dpkg-deb -I:\n%s", info)
			}
			if files := validate(t, "dpkg-deb", "-c", b); !strings.Contains(files, "./usr/bin/hello") {
				t.Errorf("package lacks the program:\n%s", files)
			}
		}
	}
	if _, err := os.Stat(old); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("binary of the previous build survived: %v", err)
	}
	for _, want := range []string{"with dpkg-buildpackage", "dpkg-buildpackage -us -uc -b", "exit code 0", "dh_builddeb"} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q", want)
		}
	}
}

func TestBuildDSC(t *testing.T) {
	needTool(t, "dpkg-source", "dpkg-deb")
	f := newFixture(t)
	f.addSourcePackage(t)
	res, log, err := f.run(t, Options{})
	if err != nil || res.ExitCode != 0 {
		t.Fatalf("exit %v err %v\n%s", res, err, log)
	}
	if res.Engine != "dpkg-source" {
		t.Errorf("engine %q", res.Engine)
	}
	bins := f.relBinaries(t, res)
	if !bins["projects/test/bookworm/amd64/hello_1.0_amd64.deb"] {
		t.Fatalf("binaries %v", bins)
	}
	validate(t, "dpkg-deb", "-I", filepath.Join(f.t.Binaries(), "projects/test/bookworm/amd64/hello_1.0_amd64.deb"))
}

func TestBuildRPM(t *testing.T) {
	needTool(t, "rpm")
	f := newFixture(t)
	data, err := os.ReadFile("testdata/rpm/hello.spec")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(f.src, "hello.spec"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	tarball(t, "testdata/rpm/hello-1.0", filepath.Join(f.src, "hello-1.0.tar.gz"))
	res, log, err := f.run(t, Options{})
	if err != nil || res.ExitCode != 0 {
		t.Fatalf("exit %v err %v\n%s", res, err, log)
	}
	if res.Engine != "rpmbuild" || res.RepoType != RepoRPM {
		t.Errorf("engine %q repo type %q", res.Engine, res.RepoType)
	}
	bins := f.relBinaries(t, res)
	want := map[string]string{
		"projects/test/bookworm/x86_64/hello-1.0-1.x86_64.rpm":     "Architecture: x86_64",
		"projects/test/bookworm/noarch/hello-doc-1.0-1.noarch.rpm": "Architecture: noarch",
		"projects/test/bookworm/src/hello-1.0-1.src.rpm":           "Name        : hello",
	}
	for rel, field := range want {
		if !bins[rel] {
			t.Errorf("missing %s in %v", rel, bins)
			continue
		}
		if info := validate(t, "rpm", "-qip", "--nosignature", filepath.Join(f.t.Binaries(), rel)); !strings.Contains(info, field) {
			t.Errorf("rpm -qip %s lacks %q:\n%s", rel, field, info)
		}
	}
	if testing.Verbose() {
		t.Log(log)
	}
	if !strings.Contains(log, "rpmbuild -ba --nodeps") {
		t.Errorf("log lacks the rpmbuild command:\n%s", log)
	}
	// the sandbox's host name must resolve without a network
	if strings.Contains(log, "Could not canonicalize hostname") {
		t.Errorf("rpmbuild could not resolve the host name:\n%s", log)
	}
}

func TestBuildCompileError(t *testing.T) {
	f := newFixture(t)
	copyTree(t, "testdata/deb", f.src)
	broken := "int main(void)\n{\n\treturn undeclared_variable;\n}\n"
	if err := os.WriteFile(filepath.Join(f.src, "hello.c"), []byte(broken), 0o644); err != nil {
		t.Fatal(err)
	}
	old := f.stale(t)
	res, log, err := f.run(t, Options{})
	if err != nil {
		t.Fatalf("a failing build is a result, not an error: %v", err)
	}
	if res.ExitCode == 0 || len(res.Binaries) != 0 {
		t.Errorf("exit code %d binaries %v, want a failure without binaries", res.ExitCode, res.Binaries)
	}
	if !strings.Contains(log, "hello.c") || !strings.Contains(log, "error:") || !strings.Contains(log, "undeclared_variable") {
		t.Errorf("log lacks the compiler error:\n%s", log)
	}
	if _, err := os.Stat(old); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("binary of the previous build survived a failed build: %v", err)
	}
}

func TestBuildLogCap(t *testing.T) {
	f := newFixture(t)
	copyTree(t, "testdata/deb", f.src)
	const max = 512
	res, log, err := f.run(t, Options{MaxLogBytes: max})
	if err != nil || res.ExitCode != 0 || len(res.Binaries) == 0 {
		t.Fatalf("result %+v err %v: the build must go on past the cap\n%s", res, err, log)
	}
	if !strings.Contains(log, "build log truncated") {
		t.Errorf("log lacks the truncation marker:\n%s", log)
	}
	if !strings.Contains(log, "exit code 0") {
		t.Errorf("log lacks the footer:\n%s", log)
	}
	if len(log) > max+1024 {
		t.Errorf("log is %d bytes, cap %d", len(log), max)
	}
}

// sleeper is an engine that never finishes.
type sleeper struct{}

func (sleeper) Name() string                    { return "sleeper" }
func (sleeper) Detect(*Package) bool            { return true }
func (sleeper) ResultDirs(*Package) []ResultDir { return nil }
func (sleeper) Steps(*Package) ([]Step, error) {
	return []Step{{Argv: []string{"sleep", "1000"}, Dir: "/"}}, nil
}

func TestBuildTimeout(t *testing.T) {
	f := newFixture(t)
	copyTree(t, "testdata/deb", f.src)
	start := time.Now()
	res, log, err := f.run(t, Options{Timeout: time.Second, Engines: []Engine{sleeper{}}})
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("err %v, want timeout", err)
	}
	if res == nil || res.ExitCode != -1 {
		t.Errorf("result %+v, want exit code -1", res)
	}
	if time.Since(start) > 20*time.Second {
		t.Errorf("timeout took %s", time.Since(start))
	}
	if !strings.Contains(log, "timeout") {
		t.Errorf("log does not say why the build ended:\n%s", log)
	}
}

// TestBuildLogIdle ends a build that prints nothing for longer than the log
// idle limit, with a log line that says why.
func TestBuildLogIdle(t *testing.T) {
	f := newFixture(t)
	copyTree(t, "testdata/deb", f.src)
	start := time.Now()
	res, log, err := f.run(t, Options{LogIdle: time.Second, Engines: []Engine{sleeper{}}})
	if !errors.Is(err, sandbox.ErrIdle) {
		t.Fatalf("err %v, want the log idle limit", err)
	}
	if res == nil || res.ExitCode != -1 {
		t.Errorf("result %+v, want exit code -1", res)
	}
	if time.Since(start) > 30*time.Second {
		t.Errorf("idle limit took %s", time.Since(start))
	}
	if !strings.Contains(log, "no output for 1s (log idle limit)") {
		t.Errorf("log does not say why the build ended:\n%s", log)
	}
}

// TestBuildOBS builds a .dsc with the OBS build script, selected by a build
// config the package ships in .cb/root (here already merged into the upper
// layer, as the buildroot preparation does).
func TestBuildOBS(t *testing.T) {
	needTool(t, "dpkg-source", "dpkg-deb")
	f := newFixture(t)
	f.addSourcePackage(t)
	conf := filepath.Join(f.layout.Upper, "usr/lib/obs-build/configs/default.conf")
	if err := os.MkdirAll(filepath.Dir(conf), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(conf, []byte("Type: dsc\nBinarytype: deb\nRepotype: debian\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	res, log, err := f.run(t, Options{})
	if err != nil || res.ExitCode != 0 {
		t.Fatalf("exit %+v err %v\n%s", res, err, log)
	}
	if res.Engine != "obs-build" {
		t.Errorf("engine %q", res.Engine)
	}
	bins := f.relBinaries(t, res)
	if !bins["projects/test/bookworm/amd64/hello_1.0_amd64.deb"] {
		t.Fatalf("binaries %v\n%s", bins, log)
	}
	if !strings.Contains(log, "--no-init --dist default --root /") {
		t.Errorf("log lacks the build command:\n%s", log)
	}
}

// addSourcePackage puts hello_1.0.dsc and its tarball into the package
// sources, made the way a maintainer would, with dpkg-source -b from the
// testdata tree.
func (f *fixture) addSourcePackage(t *testing.T) {
	t.Helper()
	work := t.TempDir()
	copyTree(t, "testdata/deb", filepath.Join(work, "hello-1.0"))
	cmd := exec.Command("dpkg-source", "-b", "hello-1.0")
	cmd.Dir = work
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("dpkg-source -b: %v\n%s", err, out)
	}
	for _, n := range []string{"hello_1.0.dsc", "hello_1.0.tar.xz"} {
		data, err := os.ReadFile(filepath.Join(work, n))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(f.src, n), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
