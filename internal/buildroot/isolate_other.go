//go:build !linux

package buildroot

import (
	"syscall"

	"github.com/cloud-builder/cb/internal/sandbox"
)

// isolate needs Linux PID namespaces; elsewhere the cgroup (if any) and
// the process group are all there is.
func isolate(*syscall.SysProcAttr) {}

// userNS needs Linux user namespaces; the backends that ask for one only
// run on Linux.
func userNS(*syscall.SysProcAttr, sandbox.IDMap) {}
