//go:build !linux

package mountinfo

import (
	"errors"
	"fmt"
)

// ErrUnsupported: there is no mount table to read outside Linux, and no
// build that could have left a mount.
var ErrUnsupported = errors.New("mount table: runs on Linux only")

// Below fails outside Linux.
func Below(dir string) ([]string, error) {
	return nil, fmt.Errorf("mounts below %s: %w", dir, ErrUnsupported)
}

// RemoveAll fails outside Linux rather than remove a tree it cannot check
// for mounts.
func RemoveAll(dir string) error {
	return fmt.Errorf("remove %s: %w", dir, ErrUnsupported)
}
