//go:build !linux

package buildroot

import "errors"

// inNewNetns needs Linux network namespaces.
func inNewNetns(f func() error) error {
	return errors.New("a private network for buildroot tools needs Linux")
}
