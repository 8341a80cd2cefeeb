package buildroot

import (
	"syscall"

	"github.com/cloud-builder/cb/internal/sandbox"
)

// isolate makes the command PID 1 of a new PID namespace: when it ends,
// the kernel ends every process it left behind.
func isolate(attr *syscall.SysProcAttr) {
	attr.Cloneflags |= syscall.CLONE_NEWPID
}

// userNS makes the command root of a new user namespace that maps ids
// 0..Count-1 to the range. The namespaces created with it (mount, PID)
// belong to the new user namespace, so the command may mount proc and
// bind mounts there; the network namespace, if any, stays the host's
// root's, so it cannot change interfaces or routes.
func userNS(attr *syscall.SysProcAttr, ids sandbox.IDMap) {
	attr.Cloneflags |= syscall.CLONE_NEWUSER
	attr.UidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: int(ids.UID), Size: int(ids.Count)}}
	attr.GidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: int(ids.GID), Size: int(ids.Count)}}
	attr.GidMappingsEnableSetgroups = true
	attr.Credential = &syscall.Credential{Uid: 0, Gid: 0}
}
