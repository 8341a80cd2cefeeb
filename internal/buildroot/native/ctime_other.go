//go:build !linux

package native

import (
	"io/fs"
	"time"
)

// ctime is unknown outside Linux, where no buildroot is made: nothing is
// pruned.
func ctime(fs.FileInfo) (time.Time, bool) { return time.Time{}, false }
