//go:build !linux

package buildroot

import "syscall"

// isolate needs Linux PID namespaces; elsewhere the cgroup (if any) and
// the process group are all there is.
func isolate(*syscall.SysProcAttr) {}
