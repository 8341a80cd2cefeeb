package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cloud-builder/cb/internal/message"
)

// TestImageBuild builds the shipped KIWI image through the broker and
// checks the collector publishes it as an rpm holding the image; then an
// image whose selection names a profile the description lacks fails with
// KIWI's error in the build log and publishes nothing.
func TestImageBuild(t *testing.T) {
	needRoot(t, "kiwi-ng", "rpm", "createrepo_c")
	s := newSystem(t)
	bad := filepath.Join(s.work, "projects/images/debian/cb-image-badprofile")
	copyTree(t, filepath.Join(repoRoot, "examples/projects/images/debian/cb-image-tbz"), bad)
	meta := "schema_version: 0.1\nname: cb-image-badprofile\nimages:\n  - arch: x86_64\n    runner_group: debian\n    selection:\n      name: standard\n      profiles: [NoSuchProfile]\n"
	if err := os.WriteFile(filepath.Join(bad, ".cb/cloud_builder.yml"), []byte(meta), 0o644); err != nil {
		t.Fatal(err)
	}
	git(t, s.work, "add", "-A")
	git(t, s.work, "commit", "-q", "-m", "an image with a missing profile")
	git(t, s.work, "push", "-q", "origin", "HEAD:main")
	s.startScheduler()
	repo := filepath.Join(s.repoRoot, "projects/images/debian/standard")

	t.Run("example image", func(t *testing.T) {
		id, code, progress := s.imageAndWait("images/debian", "cb-image-tbz", "standard")
		got := codes(s.resp.of(id))
		if code != 0 || !hasCode(got, message.ImageRequestAccepted) || !hasCode(got, message.ImageBuildSucceeded) {
			t.Fatalf("cb-ctl --wait exit %d, responses %s\n%s\nbuild log:\n%s", code, joinCodes(got), progress,
				tail(readFile(filepath.Join(s.runnerRoot, "projects/images/debian/cb-image-tbz@standard.x86_64.build.log")), 4000))
		}
		var rpms []string
		waitFor(t, buildTimeout, "the image rpm in the repository", func() bool {
			rpms, _ = filepath.Glob(filepath.Join(repo, "*", "*.rpm"))
			b, err := os.ReadFile(filepath.Join(repo, "repodata", "repomd.xml"))
			return len(rpms) > 0 && err == nil && len(b) > 0
		})
		out, err := exec.Command("rpm", "-qlp", rpms[0]).CombinedOutput()
		if err != nil {
			t.Fatalf("rpm -qlp %s: %v\n%s", rpms[0], err, out)
		}
		if !strings.Contains(string(out), ".tar.xz") {
			t.Fatalf("the bundled rpm holds no image file:\n%s", out)
		}
	})

	t.Run("missing profile", func(t *testing.T) {
		id, code, progress := s.imageAndWait("images/debian", "cb-image-badprofile", "standard")
		final := s.resp.waitFinal(t, id, buildTimeout)
		if final.ResponseCode != message.ImageBuildFailed || code != 1 {
			t.Fatalf("final %q, cb-ctl exit %d\n%s", final.ResponseCode, code, progress)
		}
		log := readFile(filepath.Join(s.runnerRoot, "projects/images/debian/cb-image-badprofile@standard.x86_64.build.log"))
		if !strings.Contains(log, "NoSuchProfile") {
			t.Fatalf("the build log does not show KIWI's error about the profile:\n%s", tail(log, 3000))
		}
		matches, _ := filepath.Glob(filepath.Join(repo, "*", "*badprofile*"))
		if len(matches) > 0 {
			t.Fatalf("a failed image was published: %v", matches)
		}
	})
}
