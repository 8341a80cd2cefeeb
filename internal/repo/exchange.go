package repo

import (
	"errors"
	"io/fs"
	"os"
)

// exchangeByRename swaps a and b with a short window in which b is
// missing; used where the kernel cannot exchange atomically.
func exchangeByRename(a, b string) error {
	tmp := b + ".old"
	if err := os.Rename(b, tmp); err != nil {
		return err
	}
	if err := os.Rename(a, b); err != nil {
		return errors.Join(err, os.Rename(tmp, b))
	}
	return os.Rename(tmp, a)
}

// swapIn makes the directory fresh take the place of current. Afterwards
// fresh holds the previous content (or nothing) and may be removed.
func swapIn(fresh, current string) error {
	if _, err := os.Lstat(current); errors.Is(err, fs.ErrNotExist) {
		return os.Rename(fresh, current)
	}
	return exchange(fresh, current)
}
