// Command cb is Cloud Builder: one binary for every service. Invoked through
// a symlink named cb-<service> it runs that service (multi-call).
package main

import (
	"os"

	"github.com/cloud-builder/cb/internal/cli"
	"github.com/cloud-builder/cb/internal/sandbox"
)

var version = "dev"

func main() {
	// When this process is a build sandbox re-executed by a runner, Init
	// runs the sandbox and exits; it must come before anything else.
	sandbox.Init()
	os.Exit(cli.Main(os.Args, version))
}
