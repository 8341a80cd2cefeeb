package cachebudget

import (
	"io/fs"
	"syscall"
	"time"
)

// Ctime is the inode change time of fi (linking a file changes it), or
// the zero time.
func Ctime(fi fs.FileInfo) time.Time {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return time.Unix(st.Ctim.Sec, st.Ctim.Nsec)
	}
	return time.Time{}
}

// Atime is the access time of fi, or the zero time.
func Atime(fi fs.FileInfo) time.Time {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return time.Unix(st.Atim.Sec, st.Atim.Nsec)
	}
	return time.Time{}
}
