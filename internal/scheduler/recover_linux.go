package scheduler

import (
	"bytes"
	"fmt"
	"os"
	"syscall"
)

// jobAlive reports whether pid is a live job process working on the entry
// at path (and not an unrelated process that got the pid later).
func jobAlive(pid int, path string) bool {
	if pid <= 1 {
		return false
	}
	if err := syscall.Kill(pid, 0); err != nil {
		return false
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	return bytes.Contains(cmdline, []byte(path))
}
