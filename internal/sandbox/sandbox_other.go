//go:build !linux

package sandbox

import (
	"context"
	"errors"
)

// ErrUnsupported is returned by Run on systems without Linux namespaces.
var ErrUnsupported = errors.New("sandbox: only supported on linux")

// Init does nothing outside Linux.
func Init() {}

// Run always fails outside Linux.
func Run(ctx context.Context, s Spec) (int, error) { return -1, ErrUnsupported }
