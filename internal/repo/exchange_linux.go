//go:build linux && (amd64 || arm64)

package repo

import (
	"os"
	"syscall"
	"unsafe"
)

const renameExchange = 1 << 1 // RENAME_EXCHANGE from <linux/fs.h>

// exchange swaps two existing paths in one step (renameat2 with
// RENAME_EXCHANGE), so a metadata directory is never missing for a reader.
// File systems without support fall back to two renames.
func exchange(a, b string) error {
	pa, err := syscall.BytePtrFromString(a)
	if err != nil {
		return err
	}
	pb, err := syscall.BytePtrFromString(b)
	if err != nil {
		return err
	}
	const atFDCWD = -100
	fd := atFDCWD
	_, _, errno := syscall.Syscall6(sysRenameat2, uintptr(fd), uintptr(unsafe.Pointer(pa)),
		uintptr(fd), uintptr(unsafe.Pointer(pb)), renameExchange, 0)
	if errno == 0 {
		return nil
	}
	if errno == syscall.EINVAL || errno == syscall.ENOSYS {
		return exchangeByRename(a, b)
	}
	return &os.LinkError{Op: "renameat2", Old: a, New: b, Err: errno}
}
