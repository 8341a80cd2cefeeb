package sandbox

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// ShiftOwner moves the owners of every file below dir (dir included) into
// the id range: id n of the host becomes ids.UID+n (ids.GID+n for
// groups), so that root inside a rootless sandbox owns what the host's
// root owned. Files already in the range and ids beyond ids.Count are
// left alone, so shifting twice changes nothing. Set-id bits, which the
// kernel clears on chown, are restored. Symlinks are changed themselves,
// never followed.
func ShiftOwner(dir string, ids IDMap) error {
	if err := ids.Validate(); err != nil {
		return err
	}
	shift := func(id, base uint32) (uint32, bool) {
		if id < ids.Count && !(id >= base && id < base+ids.Count) {
			return base + id, true
		}
		return id, false
	}
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("shift owners: %w", err)
		}
		fi, err := d.Info()
		if err != nil {
			return fmt.Errorf("shift owners: %w", err)
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return fmt.Errorf("shift owners: no owner for %s", p)
		}
		uid, su := shift(st.Uid, ids.UID)
		gid, sg := shift(st.Gid, ids.GID)
		if !su && !sg {
			return nil
		}
		if err := os.Lchown(p, int(uid), int(gid)); err != nil {
			return fmt.Errorf("shift owners: %w", err)
		}
		if fi.Mode()&(fs.ModeSetuid|fs.ModeSetgid) != 0 && fi.Mode()&fs.ModeSymlink == 0 {
			if err := os.Chmod(p, fi.Mode()&(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky)); err != nil {
				return fmt.Errorf("shift owners: %w", err)
			}
		}
		return nil
	})
}
