package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestLocalBuild runs cb-ctl --build-package-local in package directories,
// without a broker: the good package leaves its binaries next to the
// sources and exits 0; the broken one exits non-zero and leaves none.
func TestLocalBuild(t *testing.T) {
	needRoot(t, "mmdebstrap", "dpkg-deb")
	dir := t.TempDir()
	// The runner root holds the buildroot cache; keeping it between runs
	// makes repeated test runs on one machine fast.
	env := []string{"CB_RUNNER_ROOT=/var/cache/cb-e2e/local-runner", "CB_BROKER_CONFIG=/nonexistent"}
	local := func(pkgDir string) (string, error) {
		cmd := exec.Command(filepath.Join(bin, "cb-ctl"), "--build-package-local", "--dist", "bookworm")
		cmd.Dir = pkgDir
		cmd.Env = append(os.Environ(), env...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}

	hello := filepath.Join(dir, "cb-hello")
	copyTree(t, filepath.Join(repoRoot, "examples/projects/Debian/cb-hello"), hello)
	out, err := local(hello)
	if err != nil {
		t.Fatalf("local build failed: %v\n%s", err, tail(out, 4000))
	}
	if !strings.Contains(out, "dpkg-buildpackage") {
		t.Errorf("the build log was not streamed to the terminal:\n%s", tail(out, 2000))
	}
	debs, _ := filepath.Glob(filepath.Join(hello, "cb-hello@bookworm.x86_64.binaries", "*", "cb-hello_*.deb"))
	if len(debs) != 1 {
		t.Fatalf("binaries next to the sources: %v\n%s", debs, tail(out, 2000))
	}
	if b, err := exec.Command("dpkg-deb", "-I", debs[0]).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb -I: %v\n%s", err, b)
	}

	broken := filepath.Join(dir, "cb-broken")
	copyTree(t, filepath.Join(repoRoot, "e2e/testdata/projects/Debian/cb-broken"), broken)
	copyTree(t, filepath.Join(repoRoot, "examples/projects/Debian/cb-hello/.cb/build_root.kiwi"), filepath.Join(broken, ".cb/build_root.kiwi"))
	out, err = local(broken)
	if err == nil {
		t.Fatalf("a package that does not compile built locally:\n%s", tail(out, 2000))
	}
	if !strings.Contains(out, "undefined_symbol_for_the_test") {
		t.Errorf("the compiler error is not on the terminal:\n%s", tail(out, 2000))
	}
	if _, err := os.Stat(filepath.Join(broken, "cb-broken@bookworm.x86_64.binaries")); err == nil {
		t.Error("a failed local build left a binaries directory")
	}
}
