package image

import "syscall"

// namespaces gives kiwi its own PID and mount namespace. With CLONE_NEWNS
// the Go runtime also makes / recursively private in the child, so no
// mount propagates back.
func namespaces() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID, Unshareflags: syscall.CLONE_NEWNS}
}
