//go:build !linux

package buildroot

import "errors"

// threadNS needs Linux namespaces.
type threadNS struct {
	net   func() error
	binds []Bind
}

func (threadNS) start(func() error) error {
	return errors.New("private namespaces for buildroot tools need Linux")
}
