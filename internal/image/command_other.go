//go:build !linux

package image

import "syscall"

// namespaces: image builds run on Linux only; elsewhere kiwi gets no
// namespaces (and is not installed).
func namespaces() *syscall.SysProcAttr { return &syscall.SysProcAttr{} }
