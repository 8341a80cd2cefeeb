package build

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cloud-builder/cb/internal/mirror"
	"github.com/cloud-builder/cb/internal/sandbox"
)

// rootCacheDir holds bootstrapped base roots shared by test runs. A root
// is keyed by its package set and the day it was made, so it is rebuilt
// at most daily and follows the archive.
const rootCacheDir = "/var/cache/cb-test-roots"

// baseIncludes are the extra packages of the test base root: debhelper for
// Debian builds, rpm for rpmbuild, obs-build for the OBS engine.
var baseIncludes = []string{"debhelper", "rpm", "obs-build"}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("build tests need root; CI runs as root")
	}
	t.Skip("build tests need root")
}

func needTool(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s missing: %v", tool, err)
			}
			t.Skipf("%s missing: %v", tool, err)
		}
	}
}

// baseRoot returns a Debian bookworm buildd root made by mmdebstrap from
// the machine's own Debian mirror, creating it on first use of the day.
func baseRoot(t *testing.T) string {
	t.Helper()
	needRoot(t)
	needTool(t, "mmdebstrap")
	// Builds run as root of a user namespace mapped to the id range, so
	// the root belongs to the range (as the buildroot cache's roots do).
	name := "rootless-bookworm-buildd-" + strings.Join(baseIncludes, "+") + "-" + time.Now().UTC().Format("20060102")
	dir := filepath.Join(rootCacheDir, name)
	if _, err := os.Stat(filepath.Join(dir, "usr", "bin", "dpkg-buildpackage")); err == nil {
		return dir
	}
	if err := os.MkdirAll(rootCacheDir, 0o755); err != nil {
		t.Fatal(err)
	}
	// Parallel test binaries (go test ./...) must not bootstrap twice.
	lock, err := os.OpenFile(filepath.Join(rootCacheDir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	if _, err := os.Stat(filepath.Join(dir, "usr", "bin", "dpkg-buildpackage")); err == nil {
		return dir
	}
	url, err := mirror.Debian()
	if err != nil {
		t.Fatalf("find the Debian mirror: %v", err)
	}
	tmp := filepath.Join(rootCacheDir, ".tmp-"+name)
	os.RemoveAll(tmp)
	t.Logf("bootstrapping %s from %s (once a day)", dir, url)
	cmd := exec.Command("mmdebstrap", "--variant=buildd", "--include="+strings.Join(baseIncludes, ","), "bookworm", tmp, url)
	if out, err := cmd.CombinedOutput(); err != nil {
		os.RemoveAll(tmp)
		t.Fatalf("mmdebstrap: %v\n%s", err, out)
	}
	if err := sandbox.ShiftOwner(tmp, sandbox.DefaultIDs); err != nil {
		os.RemoveAll(tmp)
		t.Fatal(err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		t.Fatal(err)
	}
	// Roots of other days are stale now.
	old, _ := filepath.Glob(filepath.Join(rootCacheDir, "rootless-bookworm-buildd-"+strings.Join(baseIncludes, "+")+"-*"))
	for _, o := range old {
		if o != dir {
			os.RemoveAll(o)
		}
	}
	return dir
}
