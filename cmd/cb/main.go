// Command cb is Cloud Builder: one binary for every service. Invoked through
// a symlink named cb-<service> it runs that service (multi-call).
package main

import (
	"os"

	"github.com/cloud-builder/cb/internal/cli"
)

var version = "dev"

func main() {
	os.Exit(cli.Main(os.Args, version))
}
