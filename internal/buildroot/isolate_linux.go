package buildroot

import "syscall"

// isolate makes the command PID 1 of a new PID namespace: when it ends,
// the kernel ends every process it left behind.
func isolate(attr *syscall.SysProcAttr) {
	attr.Cloneflags |= syscall.CLONE_NEWPID
}
