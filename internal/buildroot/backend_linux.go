package buildroot

import "syscall"

// privateMounts gives a tool its own mount namespace. With CLONE_NEWNS the
// Go runtime also remounts / recursively private in the child, so nothing
// propagates back to the host.
func privateMounts() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
}
