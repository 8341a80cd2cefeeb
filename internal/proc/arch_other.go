//go:build !linux

package proc

import "runtime"

// HostArch is the machine name as uname -m prints it on Linux, derived
// from the Go architecture: builds run on Linux runners only, but
// clients name targets by the arch of the machine they sit at.
func HostArch() string {
	switch runtime.GOARCH {
	case "amd64":
		return "x86_64"
	case "arm64":
		return "aarch64"
	case "386":
		return "i686"
	case "arm":
		return "armv7l"
	}
	return runtime.GOARCH
}
