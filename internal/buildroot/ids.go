package buildroot

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/cloud-builder/cb/internal/sandbox"
)

// idsXattr marks a cached root whose owners were shifted into an id range;
// the value is "uid:gid:count". trusted.* is invisible to builds.
const idsXattr = "trusted.cloud-builder.ids"

func rangeString(ids sandbox.IDMap) string {
	return fmt.Sprintf("%d:%d:%d", ids.UID, ids.GID, ids.Count)
}

// rangeOf reports the range a cached root was shifted to ("" if none).
func rangeOf(dir string) string {
	buf := make([]byte, 64)
	n, err := unix.Getxattr(dir, idsXattr, buf)
	if err != nil {
		return ""
	}
	return string(buf[:n])
}

// ownByRange makes a cached root belong to the sandbox's id range, once
// per root: backends create roots as the host's root (and roots cached by
// earlier versions are so too), while builds run as root of a user
// namespace that maps ids. Builds then own the root's files exactly as
// root, _apt, man, … own them in a normal installation. The caller holds
// the key lock.
func ownByRange(dir string, ids sandbox.IDMap) error {
	want := rangeString(ids)
	switch got := rangeOf(dir); got {
	case want:
		return nil
	case "":
	default:
		return fmt.Errorf("cached root %s belongs to id range %s, not %s", dir, got, want)
	}
	if err := sandbox.ShiftOwner(dir, ids); err != nil {
		return err
	}
	return markRange(dir, ids)
}

// markRange records that the root dir belongs to the id range: after a
// shift, or when a backend created it as the range (no walk needed).
func markRange(dir string, ids sandbox.IDMap) error {
	if err := unix.Setxattr(dir, idsXattr, []byte(rangeString(ids)), 0); err != nil {
		return fmt.Errorf("mark %s as owned by id range: %w", dir, err)
	}
	return nil
}
