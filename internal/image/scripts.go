package image

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Bwrap is the bubblewrap program that confines the description's
// scripts.
var Bwrap = "bwrap"

// descriptionScripts are the scripts of an image description that kiwi
// runs in the image root (kiwi/defaults.py); kiwi calls each as
// "chroot ROOT [bash] image/NAME" (relative: kiwi's IMAGE_METADATA_DIR).
var descriptionScripts = []string{"post_bootstrap.sh", "config.sh", "images.sh", "pre_disk_sync.sh", "disk.sh"}

// chrootWrapper is the chroot kiwi finds first in its PATH. kiwi runs the
// description's scripts (untrusted, from git) with chroot, as root, where
// a chroot escape, /proc/1/root, a device node or a write to /proc/sys
// reach the runner. This chroot runs those scripts with bubblewrap
// instead: the image root becomes the root of a new mount namespace
// (pivot_root, so there is no outside to escape to), with a minimal /dev,
// a /proc of a new PID namespace whose kernel tunables are read-only, an
// empty /sys, and only the capabilities a script needs to work on files
// it owns (no CAP_SYS_ADMIN, CAP_SYS_CHROOT, CAP_MKNOD, CAP_SYS_PTRACE,
// CAP_DAC_READ_SEARCH, CAP_NET_ADMIN…), with no_new_privs. Every other
// chroot call of kiwi and debootstrap (package installation from the
// runner's repositories) goes to the real chroot. %[1]s is the pattern of
// the script paths (scriptPattern), %[2]s bwrap's path.
const chrootWrapper = `#!/bin/sh
# Written by cloud-builder for one image build; see internal/image/scripts.go.
set -eu
script=
case "${2-}" in
%[1]s) script=1 ;;
bash)
	case "${3-}" in
	%[1]s) script=1 ;;
	esac ;;
esac
if [ -z "$script" ]; then
	exec /usr/sbin/chroot "$@"
fi
root=$1
shift
# Noted for the build log (see confinedScripts).
printf '%%s\n' "$*" >> "${0%%/*}/confined"
# bwrap finds its sandbox's namespaces through /proc by PID: kiwi's
# /proc is the host's, not its PID namespace's, so bwrap gets a PID
# namespace with a /proc of its own first.
exec unshare --pid --fork --kill-child --mount --mount-proc -- %[2]s --bind "$root" / --dev /dev --proc /proc \
	--ro-bind /proc/sys /proc/sys --ro-bind-try /proc/sysrq-trigger /proc/sysrq-trigger \
	--ro-bind-try /proc/irq /proc/irq --ro-bind-try /proc/bus /proc/bus --ro-bind-try /proc/fs /proc/fs \
	--tmpfs /sys --chdir / \
	--unshare-pid --unshare-ipc --unshare-uts --new-session \
	--cap-drop ALL --cap-add CAP_CHOWN --cap-add CAP_DAC_OVERRIDE --cap-add CAP_FOWNER \
	--cap-add CAP_FSETID --cap-add CAP_SETUID --cap-add CAP_SETGID --cap-add CAP_KILL \
	--cap-add CAP_SETFCAP --cap-add CAP_AUDIT_WRITE \
	-- "$@"
`

// installChroot writes the chroot wrapper into dir, which goes first in
// kiwi's PATH.
func installChroot(dir string) error {
	bwrap, err := exec.LookPath(Bwrap)
	if err != nil {
		return fmt.Errorf("confine the image description's scripts: %w (install bubblewrap)", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("confine the image description's scripts: %w", err)
	}
	p := filepath.Join(dir, "chroot")
	if err := os.WriteFile(p, []byte(fmt.Sprintf(chrootWrapper, scriptPattern(), shellQuote(bwrap))), 0o755); err != nil {
		return fmt.Errorf("confine the image description's scripts: %w", err)
	}
	return os.Chmod(p, 0o755)
}

// scriptPattern is the sh case pattern of the description scripts as
// kiwi names them, relative and, should a kiwi do so, absolute.
func scriptPattern() string {
	var alts []string
	for _, s := range descriptionScripts {
		alts = append(alts, "image/"+s, "/image/"+s)
	}
	return strings.Join(alts, "|")
}

// shellQuote quotes s for sh.
func shellQuote(s string) string {
	out := "'"
	for _, c := range s {
		if c == '\'' {
			out += `'\''`
		} else {
			out += string(c)
		}
	}
	return out + "'"
}

// confinedScripts are the script calls the chroot wrapper in dir ran
// confined, one command line each, for the build log.
func confinedScripts(dir string) []string {
	data, err := os.ReadFile(filepath.Join(dir, "confined"))
	if err != nil {
		return nil
	}
	var out []string
	for _, l := range strings.Split(string(data), "\n") {
		if l != "" {
			out = append(out, l)
		}
	}
	return out
}
