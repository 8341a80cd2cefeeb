//go:build !linux

package buildroot

import "syscall"

// privateMounts: buildroots are made on Linux only; elsewhere the tools
// (mmdebstrap, kiwi-ng) do not exist.
func privateMounts() *syscall.SysProcAttr { return &syscall.SysProcAttr{} }
