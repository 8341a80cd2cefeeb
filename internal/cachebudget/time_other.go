//go:build !linux

package cachebudget

import (
	"io/fs"
	"time"
)

// Ctime is the zero time where the inode change time is not read.
func Ctime(fs.FileInfo) time.Time { return time.Time{} }

// Atime is the zero time where the access time is not read.
func Atime(fs.FileInfo) time.Time { return time.Time{} }
