package artifact

import (
	"bytes"
	"errors"
	"os"
	"strconv"
	"syscall"
)

// Running reads a target's pid file (SPEC §5: <T>.pid, the process group
// leader of the running build) and reports the pid and whether that process
// is alive. A missing or garbled pid file, a dead process and a zombie all
// count as "not running".
func Running(pidFile string) (int, bool) {
	data, err := os.ReadFile(pidFile)
	if err != nil {
		return 0, false
	}
	return pidAlive(data)
}

func runningIn(root *os.Root, pidFile string) bool {
	data, err := root.ReadFile(pidFile)
	if err != nil {
		return false
	}
	_, ok := pidAlive(data)
	return ok
}

func pidAlive(data []byte) (int, bool) {
	pid, err := strconv.Atoi(string(bytes.TrimSpace(data)))
	if err != nil || pid <= 1 {
		return 0, false
	}
	// Signal 0 checks existence; EPERM means it exists under another
	// user.
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return pid, false
	}
	// A zombie still answers kill(pid, 0) until its parent reaps it, but
	// its build is over.
	if stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat"); err == nil {
		if i := bytes.LastIndexByte(stat, ')'); i >= 0 && i+2 < len(stat) && stat[i+2] == 'Z' {
			return pid, false
		}
	}
	return pid, true
}
