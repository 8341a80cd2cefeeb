package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cloud-builder/cb/internal/journal"
	"github.com/cloud-builder/cb/internal/message"
)

const buildTimeout = 20 * time.Minute

// TestPackageBuilds builds the shipped Debian and rpm examples through the
// broker, then rebuilds one from the buildroot cache, then a package that
// does not compile.
func TestPackageBuilds(t *testing.T) {
	needRoot(t, "mmdebstrap", "dpkg-deb", "rpm", "createrepo_c", "gpg")
	s := newSystem(t)
	s.startScheduler("--build-limit", "2")
	before := mounts(t, s.runnerRoot)

	debID := s.requestPackage("Debian", "cb-hello")
	rpmID := s.requestPackage("RPM", "cb-hello-rpm")

	t.Run("debian", func(t *testing.T) {
		final := s.resp.waitFinal(t, debID, buildTimeout)
		got := codes(s.resp.of(debID))
		if final.ResponseCode != message.PackageBuildSucceeded {
			t.Fatalf("responses %s\nbuild log:\n%s", joinCodes(got), tail(s.buildLog("projects/Debian/cb-hello"), 4000))
		}
		for _, want := range []string{message.PackageRequestAccepted, message.BuildRootSetupSucceeded, message.PackageBuildSucceeded} {
			if !hasCode(got, want) {
				t.Errorf("responses %s lack %q", joinCodes(got), want)
			}
		}
		debs := 0
		for _, p := range final.Package.BinaryPackages {
			if strings.HasSuffix(p, ".deb") {
				debs++
				if out, err := exec.Command("dpkg-deb", "-I", p).CombinedOutput(); err != nil {
					t.Errorf("dpkg-deb -I %s: %v\n%s", p, err, out)
				}
			}
		}
		if debs == 0 {
			t.Fatalf("no .deb among %v", final.Package.BinaryPackages)
		}
		for _, f := range []string{".prepare.log", ".build.log", ".solver.json", ".result.yml", ".sh", ".run.log"} {
			if _, err := os.Stat(s.target("projects/Debian/cb-hello") + f); err != nil {
				t.Errorf("runner-state file %s: %v", f, err)
			}
		}
	})

	t.Run("apt installs it from the collector", func(t *testing.T) {
		var out string
		waitFor(t, 2*time.Minute, "cb-hello in the repository", func() bool {
			return strings.Contains(repoIndex(t, filepath.Join(s.repoRoot, "projects/Debian/bookworm")), "Package: cb-hello\n")
		})
		out = s.aptInstall(t, "projects/Debian/cb-hello", "projects/Debian/bookworm", "cb-hello", "cb-hello")
		if !strings.Contains(strings.ToLower(out), "hello") {
			t.Fatalf("installed cb-hello printed %q", out)
		}
	})

	t.Run("rpm", func(t *testing.T) {
		final := s.resp.waitFinal(t, rpmID, buildTimeout)
		if final.ResponseCode != message.PackageBuildSucceeded {
			t.Fatalf("responses %s\nbuild log:\n%s", joinCodes(codes(s.resp.of(rpmID))), tail(s.buildLog("projects/RPM/cb-hello-rpm"), 4000))
		}
		var bin, src int
		for _, p := range final.Package.BinaryPackages {
			switch {
			case strings.HasSuffix(p, ".src.rpm"):
				src++
			case strings.HasSuffix(p, ".rpm"):
				bin++
			default:
				continue
			}
			if out, err := exec.Command("rpm", "-qip", p).CombinedOutput(); err != nil {
				t.Errorf("rpm -qip %s: %v\n%s", p, err, out)
			}
		}
		if bin == 0 || src == 0 {
			t.Fatalf("want a binary and a source rpm, got %v", final.Package.BinaryPackages)
		}
		// The collector's rpm-md repository lists it and its signature
		// verifies with the published key.
		repodata := filepath.Join(s.repoRoot, "projects/RPM/bookworm/repodata")
		waitFor(t, 2*time.Minute, "rpm repository metadata", func() bool {
			b, err := os.ReadFile(filepath.Join(repodata, "repomd.xml"))
			return err == nil && strings.Contains(string(b), "primary")
		})
		gnupg := t.TempDir()
		key := filepath.Join(gnupg, "repo.key")
		if err := os.WriteFile(key, httpGet(t, s.collectorURL+"/repo.key"), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("gpg", "--homedir", gnupg, "--batch", "--import", key).CombinedOutput(); err != nil {
			t.Fatalf("import key: %v\n%s", err, out)
		}
		if out, err := exec.Command("gpg", "--homedir", gnupg, "--batch", "--verify",
			filepath.Join(repodata, "repomd.xml.asc"), filepath.Join(repodata, "repomd.xml")).CombinedOutput(); err != nil {
			t.Fatalf("repomd.xml.asc does not verify: %v\n%s", err, out)
		}
	})
	if t.Failed() {
		return
	}

	t.Run("warm rebuild hits the buildroot cache", func(t *testing.T) {
		id, code, progress := s.buildAndWait("Debian", "cb-hello")
		final := s.resp.waitFinal(t, id, buildTimeout)
		if final.ResponseCode != message.PackageBuildSucceeded || code != 0 {
			t.Fatalf("rebuild: cb-ctl --wait exit %d, %s\n%s", code, joinCodes(codes(s.resp.of(id))), progress)
		}
		for _, stage := range []string{"accepted", "buildroot", "build"} {
			if !strings.Contains(progress, stage) {
				t.Errorf("--wait progress lacks the %s stage:\n%s", stage, progress)
			}
		}
		e, err := journal.Load(filepath.Join(s.runnerRoot, "journal", id+".yml"))
		if err != nil {
			t.Fatal(err)
		}
		if e.CacheHit == nil || !*e.CacheHit {
			t.Fatalf("second build did not reuse the cached buildroot (journal: %+v)\nprepare log:\n%s", e, readFile(s.target("projects/Debian/cb-hello")+".prepare.log"))
		}
		if e.State != journal.Responded {
			t.Fatalf("journal state = %s, want responded", e.State)
		}
	})

	t.Run("compile error", func(t *testing.T) {
		id, code, progress := s.buildAndWait("Debian", "cb-broken")
		final := s.resp.waitFinal(t, id, buildTimeout)
		if final.ResponseCode != message.PackageBuildFailed {
			t.Fatalf("responses %s, want %q", joinCodes(codes(s.resp.of(id))), message.PackageBuildFailed)
		}
		if code != 1 {
			t.Fatalf("cb-ctl --wait exited %d for a failing build, want 1\n%s", code, progress)
		}
		log := s.buildLog("projects/Debian/cb-broken")
		if !strings.Contains(log, "error:") || !strings.Contains(log, "broken.c") {
			t.Fatalf("build log lacks the compiler error:\n%s", tail(log, 3000))
		}
	})

	t.Run("no mount left behind", func(t *testing.T) {
		if after := mounts(t, s.runnerRoot); len(after) > len(before) {
			t.Fatalf("mounts left below the runner root:\n%s", strings.Join(after, "\n"))
		}
	})
}

func readFile(p string) string {
	b, _ := os.ReadFile(p)
	return string(b)
}
