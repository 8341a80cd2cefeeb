package cli

import (
	"context"
	"fmt"
)

// LocalBuild are the options of cb-ctl --build-package-local and
// --build-image-local: a build in the current directory without a broker.
type LocalBuild struct {
	Dir       string // package or image description directory (cwd)
	Dist      string // packages
	Selection string // images
	Arch      string // defaults to the host arch
	Clean     bool
}

// buildPackageLocal builds the package in o.Dir without a broker.
func buildPackageLocal(ctx context.Context, env *Env, c *Common, o LocalBuild) int {
	fmt.Fprintln(env.Stderr, "cb-ctl: --build-package-local: not implemented yet")
	return ExitUnavailable
}

// buildImageLocal builds the image in o.Dir without a broker.
func buildImageLocal(ctx context.Context, env *Env, c *Common, o LocalBuild) int {
	fmt.Fprintln(env.Stderr, "cb-ctl: --build-image-local: not implemented yet")
	return ExitUnavailable
}
