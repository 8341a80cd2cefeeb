package buildroot

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/cloud-builder/cb/internal/mirror"
	"github.com/cloud-builder/cb/internal/sandbox"
	"github.com/cloud-builder/cb/internal/target"
)

// statusBackend stands in for mmdebstrap in tests of the cache and staging
// logic that must run without root or network: it writes a dpkg database
// the real dpkg-query reads, and a /tmp with the mode a real root has.
// The real backends are covered by the end-to-end tests.
type statusBackend struct{ creates atomic.Int32 }

func (*statusBackend) Name() string { return "status-test" }

func (b *statusBackend) Create(ctx context.Context, r CreateRequest) error {
	p, deps, dir := r.Profile, r.Deps, r.Dir
	b.creates.Add(1)
	var st bytes.Buffer
	seen := map[string]bool{}
	for _, name := range append(append([]string{"dpkg"}, p.Packages...), deps...) {
		if seen[name] {
			continue
		}
		seen[name] = true
		fmt.Fprintf(&st, "Package: %s\nStatus: install ok installed\nMaintainer: Test <test@example.org>\n"+
			"Version: 1.0-%d\nArchitecture: amd64\nDescription: test\n\n", name, len(name))
	}
	if err := os.MkdirAll(filepath.Join(dir, "var", "lib", "dpkg"), 0o755); err != nil {
		return err
	}
	if err := os.Mkdir(filepath.Join(dir, "tmp"), 0o755); err != nil {
		return err
	}
	if err := os.Chmod(filepath.Join(dir, "tmp"), 0o777|os.ModeSticky); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "var", "lib", "dpkg", "status"), st.Bytes(), 0o644)
}

var testBackend = &statusBackend{}

func init() { Register(testBackend) }

func TestPrepareCacheAndStaging(t *testing.T) {
	if _, err := os.Stat("/usr/bin/dpkg-query"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("dpkg-query missing under CI")
		}
		t.Skip("dpkg-query not installed")
	}
	// A local flat repository stands in for the archive; its Release is
	// the index whose change must invalidate the cache.
	repo := t.TempDir()
	must(t, os.WriteFile(filepath.Join(repo, "Release"), []byte("v1"), 0o644))
	t.Setenv(mirror.EnvOverride, "file://"+repo)

	pkg := filepath.Join(t.TempDir(), "hello")
	must(t, CopyTree("../../examples/projects/Debian/cb-hello", pkg))
	desc, err := os.ReadFile(filepath.Join(pkg, DescriptionFile))
	must(t, err)
	must(t, os.WriteFile(filepath.Join(pkg, DescriptionFile), bytes.ReplaceAll(desc, []byte(`distribution="bookworm" `), nil), 0o644))
	mustWrite(t, filepath.Join(pkg, ".cb", "root", "tmp", "marker"), "x", 0o644)
	mustWrite(t, filepath.Join(pkg, ".cb", "root", "etc", "build.conf"), "conf", 0o644)
	mustWrite(t, filepath.Join(pkg, ".git", "HEAD"), "ref", 0o644)

	tg, err := target.New(t.TempDir(), "projects/Debian/hello", "bookworm", "x86_64")
	must(t, err)
	var logs bytes.Buffer
	opts := Options{Backend: "status-test", Logger: slog.New(slog.NewTextHandler(&logs, nil))}
	prepare := func() *Layout {
		t.Helper()
		var plog bytes.Buffer
		opts.Log = &plog
		l, err := Prepare(context.Background(), opts, pkg, tg)
		if err != nil {
			t.Fatalf("%v\n%s", err, plog.String())
		}
		return l
	}

	cold := prepare()
	if cold.CacheHit || testBackend.creates.Load() != 1 {
		t.Fatalf("first prepare: hit=%v creates=%d", cold.CacheHit, testBackend.creates.Load())
	}
	if os.Geteuid() == 0 {
		// Builds run as root of a user namespace mapped to the id range:
		// the cached root and the staged sources must belong to it.
		if got := rangeOf(cold.Lower); got != rangeString(sandbox.DefaultIDs) {
			t.Errorf("cached root marked %q, want %q", got, rangeString(sandbox.DefaultIDs))
		}
		for _, p := range []string{cold.Lower, filepath.Join(cold.Lower, "var/lib/dpkg/status"), cold.Upper, filepath.Join(cold.Upper, "hello", "debian", "control")} {
			var st syscall.Stat_t
			must(t, syscall.Lstat(p, &st))
			if st.Uid != sandbox.DefaultIDs.UID || st.Gid != sandbox.DefaultIDs.GID {
				t.Errorf("%s owned by %d:%d, want the range's root %d:%d", p, st.Uid, st.Gid, sandbox.DefaultIDs.UID, sandbox.DefaultIDs.GID)
			}
		}
	}
	fi, err := os.Stat(filepath.Join(cold.Upper, "tmp"))
	must(t, err)
	if fi.Mode()&os.ModeSticky == 0 || fi.Mode().Perm() != 0o777 {
		t.Errorf("overlay /tmp mode %v, want the lower root's drwxrwxrwt", fi.Mode())
	}
	if data, err := os.ReadFile(filepath.Join(cold.Upper, "etc", "build.conf")); err != nil || string(data) != "conf" {
		t.Errorf(".cb/root not staged: %v", err)
	}
	if _, err := os.Stat(filepath.Join(cold.Upper, "hello", ".git")); err == nil {
		t.Error(".git staged")
	}
	solved, err := ReadSolved(tg.SolverFile())
	must(t, err)
	if solved.Packages["debhelper-compat"].Version != "1.0-16" || solved.Packages["dpkg"].Arch != "amd64" {
		t.Errorf("solver packages = %+v", solved.Packages)
	}

	if warm := prepare(); !warm.CacheHit || warm.Lower != cold.Lower || testBackend.creates.Load() != 1 {
		t.Fatalf("second prepare: hit=%v creates=%d", warm.CacheHit, testBackend.creates.Load())
	}
	if !strings.Contains(logs.String(), "buildroot cache hit") {
		t.Errorf("no hit logged: %s", logs.String())
	}

	// A changed archive index is a new key.
	must(t, os.WriteFile(filepath.Join(repo, "Release"), []byte("v2"), 0o644))
	if changed := prepare(); changed.CacheHit || changed.CacheKey == cold.CacheKey {
		t.Fatalf("archive change: hit=%v same key=%v", changed.CacheHit, changed.CacheKey == cold.CacheKey)
	}
	// Changed build dependencies are a new key too.
	ctl := filepath.Join(pkg, "debian", "control")
	data, err := os.ReadFile(ctl)
	must(t, err)
	must(t, os.WriteFile(ctl, bytes.Replace(data, []byte("debhelper-compat (= 13)"), []byte("debhelper-compat (= 13), zlib1g-dev"), 1), 0o644))
	if deps := prepare(); deps.CacheHit {
		t.Fatal("new build dependency hit the cache")
	}

	// A runner root inside the package directory is not copied into itself.
	nested, err := target.New(filepath.Join(pkg, "state"), "projects/Debian/hello", "bookworm", "x86_64")
	must(t, err)
	opts.Log = io.Discard
	nl, err := Prepare(context.Background(), opts, pkg, nested)
	must(t, err)
	if _, err := os.Stat(filepath.Join(nl.Upper, "hello", "state")); err == nil {
		t.Error("runner root inside the package directory was staged")
	}
	must(t, os.RemoveAll(filepath.Join(pkg, "state")))

	// An untrusted tree that escapes is refused and says so in the log.
	must(t, os.Symlink("/etc", filepath.Join(pkg, ".cb", "root", "hostetc")))
	var plog bytes.Buffer
	opts.Log = &plog
	if _, err := Prepare(context.Background(), opts, pkg, tg); !errors.Is(err, ErrUnsafeTree) {
		t.Fatalf("escaping symlink: err = %v", err)
	}
	if !strings.Contains(plog.String(), "FAILED") {
		t.Errorf("failure not in the prepare log:\n%s", plog.String())
	}
}

func TestPrepareRejects(t *testing.T) {
	t.Setenv(mirror.EnvOverride, "http://archive.example.org/debian")
	tests := []struct {
		name, profile, backend, want string
	}{
		{"undeclared profile", "sid.x86_64", "", "not declared"},
		{"unknown backend", "bookworm.x86_64", "chroot", "not available"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dist, arch, _ := strings.Cut(tc.profile, ".")
			tg, err := target.New(t.TempDir(), "projects/Debian/cb-hello", dist, arch)
			must(t, err)
			_, err = Prepare(context.Background(), Options{Backend: tc.backend, Log: io.Discard}, "../../examples/projects/Debian/cb-hello", tg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}
