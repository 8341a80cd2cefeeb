//go:build linux

package buildroot

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cloud-builder/cb/internal/cgroup"
	"github.com/cloud-builder/cb/internal/sandbox"
)

// An overlay Bind, as a target layer is made: the command, root of a user
// namespace of the id range, changes the root through the overlay; every
// change lands in the upper dir as overlayfs records it for the build's
// later mount (new files of the range, whiteouts, opaque directories),
// the lower dir is untouched and no mount outlives the command.
func TestExecOverlayBind(t *testing.T) {
	if os.Geteuid() != 0 || cgroup.Version() == 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("needs root and cgroups under CI")
		}
		t.Skip("needs root and cgroups")
	}
	ids := sandbox.DefaultIDs
	dir := t.TempDir()
	lower, upper, work := filepath.Join(dir, "lower"), filepath.Join(dir, "upper"), filepath.Join(dir, "work")
	for _, d := range []string{lower + "/d", upper, work} {
		must(t, os.MkdirAll(d, 0o755))
	}
	must(t, os.WriteFile(filepath.Join(lower, "f"), []byte("f"), 0o644))
	must(t, os.WriteFile(filepath.Join(lower, "d", "x"), []byte("x"), 0o644))
	for _, p := range []string{lower, lower + "/d", lower + "/f", lower + "/d/x", upper} {
		must(t, os.Lchown(p, int(ids.UID), int(ids.GID)))
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var log bytes.Buffer
	err := Exec(ctx, &log, ExecOptions{PrivateMounts: true, Isolate: true, UserNS: ids,
		Binds: []Bind{{Source: upper, Name: "root", Lower: lower, Work: work}}},
		"sh", "-ec", `test "$(id -u)" = 0; r=`+BindPath("root")+`; test "$(cat $r/f)" = f
echo new >$r/new; rm $r/f; rm -r $r/d; mkdir $r/d; echo y >$r/d/y`)
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	for _, p := range []string{"f", "d/x"} {
		if _, err := os.Stat(filepath.Join(lower, p)); err != nil {
			t.Errorf("lower dir changed: %v", err)
		}
	}
	var st syscall.Stat_t
	must(t, syscall.Lstat(filepath.Join(upper, "new"), &st))
	if st.Uid != ids.UID || st.Gid != ids.GID {
		t.Errorf("new file owned by %d:%d, want the range's root", st.Uid, st.Gid)
	}
	must(t, syscall.Lstat(filepath.Join(upper, "f"), &st))
	if st.Mode&syscall.S_IFMT != syscall.S_IFCHR || st.Rdev != 0 {
		t.Errorf("removed lower file is no whiteout in the upper dir: mode %o rdev %d", st.Mode, st.Rdev)
	}
	buf := make([]byte, 8)
	n, err := unix.Lgetxattr(filepath.Join(upper, "d"), "trusted.overlay.opaque", buf)
	if err != nil || string(buf[:n]) != "y" {
		t.Errorf("recreated directory not opaque for the host's overlay: %q %v", buf[:n], err)
	}
	if _, err := os.Stat(filepath.Join(upper, "d", "y")); err != nil {
		t.Error(err)
	}
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	must(t, err)
	if bytes.Contains(mounts, []byte(dir)) {
		t.Errorf("a mount outlived the command:\n%s", mounts)
	}

	// A layer path overlayfs cannot take is refused.
	err = Exec(ctx, &log, ExecOptions{PrivateMounts: true, Isolate: true, UserNS: ids,
		Binds: []Bind{{Source: upper, Name: "root", Lower: lower + ",upperdir=/etc", Work: work}}}, "true")
	if err == nil {
		t.Error("a lower dir with a comma was mounted")
	}
}
