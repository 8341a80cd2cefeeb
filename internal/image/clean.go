package image

import "github.com/cloud-builder/cb/internal/mountinfo"

// removeAll deletes dir. kiwi runs in a mount namespace of its own, so
// nothing should be mounted below an image root in ours; if something is
// anyway (a kiwi started by hand, an older runner), it is detached first,
// because os.RemoveAll would otherwise descend into a bind-mounted /dev
// or /proc of the host and empty it.
func removeAll(dir string) error { return mountinfo.RemoveAll(dir) }
