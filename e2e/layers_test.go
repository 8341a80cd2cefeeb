package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// layerLine finds the prepare log's word on a layer: the cache decision
// and the layer's directory.
var layerLine = regexp.MustCompile(`buildroot cache (hit|miss) \((base|target) layer[^)]*\)(?:: reusing (\S+))?`)

// TestLayeredBuilds builds two packages with different build dependencies
// on one runner: the second reuses the first one's base layer and installs
// only its own build dependency (zlib1g-dev) in a target layer; both
// build, and the zlib one links against the library of its layer.
func TestLayeredBuilds(t *testing.T) {
	needRoot(t, "mmdebstrap", "dpkg-deb", "bwrap")
	dir := t.TempDir()
	// The runner root of TestLocalBuild: its base layer is reused.
	env := []string{"CB_RUNNER_ROOT=/var/cache/cb-e2e/local-runner", "CB_BROKER_CONFIG=/nonexistent"}
	local := func(pkgDir string) (string, time.Duration) {
		t.Helper()
		cmd := exec.Command(filepath.Join(bin, "cb-ctl"), "--build-package-local", "--dist", "bookworm")
		cmd.Dir = pkgDir
		cmd.Env = append(os.Environ(), env...)
		start := time.Now()
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("local build in %s failed: %v\n%s", pkgDir, err, tail(string(out), 4000))
		}
		return string(out), time.Since(start)
	}
	decisions := func(out string) map[string]string {
		d := map[string]string{}
		for _, m := range layerLine.FindAllStringSubmatch(out, -1) {
			d[m[2]] = m[1]
		}
		return d
	}

	hello := filepath.Join(dir, "cb-hello")
	copyTree(t, filepath.Join(repoRoot, "examples/projects/Debian/cb-hello"), hello)
	out, took := local(hello)
	t.Logf("cb-hello: %v, layers %v", took.Round(time.Millisecond), decisions(out))
	if decisions(out)["base"] == "" {
		t.Fatalf("the prepare log shows no base layer:\n%s", tail(out, 4000))
	}

	zlib := filepath.Join(dir, "cb-zlib")
	copyTree(t, filepath.Join(repoRoot, "e2e/testdata/projects/Debian/cb-zlib"), zlib)
	copyTree(t, filepath.Join(repoRoot, "examples/projects/Debian/cb-hello/.cb/build_root.kiwi"), filepath.Join(zlib, ".cb/build_root.kiwi"))
	out, took = local(zlib)
	d := decisions(out)
	t.Logf("cb-zlib: %v, layers %v", took.Round(time.Millisecond), d)
	if d["base"] != "hit" || d["target"] == "" {
		t.Errorf("cb-zlib did not build on the cached base layer with a target layer of its own (%v):\n%s", d, tail(out, 4000))
	}
	if !strings.Contains(out, "zlib1g-dev") {
		t.Errorf("the prepare log does not name the build dependency zlib1g-dev:\n%s", tail(out, 4000))
	}
	for pkg, dir := range map[string]string{"cb-hello": hello, "cb-zlib": zlib} {
		debs, _ := filepath.Glob(filepath.Join(dir, pkg+"@bookworm.x86_64.binaries", "*", pkg+"_*.deb"))
		if len(debs) != 1 {
			t.Fatalf("%s binaries: %v", pkg, debs)
		}
		info, err := exec.Command("dpkg-deb", "-I", debs[0]).CombinedOutput()
		if err != nil {
			t.Fatalf("dpkg-deb -I: %v\n%s", err, info)
		}
		// dh_shlibdeps saw the library the binary links against.
		if pkg == "cb-zlib" && !strings.Contains(string(info), "zlib1g") {
			t.Errorf("cb-zlib does not depend on zlib1g:\n%s", info)
		}
	}

	// A rebuild of cb-zlib is warm: both layers come from the cache.
	out, took = local(zlib)
	d = decisions(out)
	t.Logf("cb-zlib again: %v, layers %v", took.Round(time.Millisecond), d)
	if d["base"] != "hit" || d["target"] != "hit" {
		t.Errorf("warm rebuild: layers %v, want both hits:\n%s", d, tail(out, 4000))
	}
}
