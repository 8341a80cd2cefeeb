// Package sandbox runs one command inside a buildroot, isolated in its own
// mount, PID, IPC, UTS and (by default) network namespaces.
//
// The guarantee is structural rather than a matter of careful cleanup: the
// command runs below a small init process that is PID 1 of a fresh PID
// namespace and the only holder of a fresh mount namespace. Every mount the
// sandbox makes (the overlay, /proc, /dev, …) lives only in that namespace,
// and when the init process dies — because the command ended, because of a
// timeout, or because the caller was killed with SIGKILL (the init process
// has a parent-death signal and watches a lifeline pipe) — the kernel kills
// every process left in the namespace and drops all of its mounts. Nothing
// can outlive a sandbox.
//
// The init process is the calling program itself, re-executed through
// /proc/self/exe with a marker in its environment. That is why every program
// that calls Run must call Init first thing in main (and every test binary
// first thing in TestMain): Init recognises the marker, runs the init part
// and exits; in a normal process it returns at once.
//
// Run needs root (CAP_SYS_ADMIN for the namespaces and mounts) and an
// upper layer on a file system overlayfs accepts as upperdir (ext4, xfs,
// btrfs, tmpfs — not another overlayfs).
//
// The sandbox isolates a build from the host's mounts, processes and
// network; it is not a security boundary against a hostile root user, since
// the command runs as root with full capabilities.
package sandbox

import (
	"errors"
	"io"
	"time"
)

// Spec describes one command to run in a sandbox.
type Spec struct {
	// Lower, Upper and Work are the overlay layers mounted on Root. Lower
	// may name several read-only layers separated by ':' (topmost first).
	// If Lower is empty, Root is used as a plain directory.
	Lower, Upper, Work string
	// Root is the overlay mountpoint, or the root directory itself.
	Root string
	// Dir is the working directory inside the root (absolute).
	Dir  string
	Argv []string
	// Env is the complete environment of the command; nothing is inherited
	// from the caller, so a build cannot depend on who started it.
	Env            []string
	Stdout, Stderr io.Writer
	// Timeout ends the command (SIGTERM, then SIGKILL after KillGrace);
	// zero means no timeout besides the context.
	Timeout time.Duration
	// KillGrace is the time between SIGTERM and SIGKILL on timeout or
	// cancel; zero means DefaultKillGrace.
	KillGrace time.Duration
	// Network keeps the host network. When false the command gets a new
	// network namespace with only the loopback interface.
	Network bool
	// PrivateTmp mounts an empty tmpfs on /tmp inside the root, so
	// scratch files of the build never land in the overlay's upper layer.
	PrivateTmp bool
	// Hostname is the host name inside the sandbox; empty means "cb-build".
	// A root without /etc/hosts gets one that resolves it and localhost.
	Hostname string
}

// DefaultKillGrace is how long a command may take to exit after SIGTERM
// before the whole sandbox is killed.
const DefaultKillGrace = 10 * time.Second

// ErrTimeout is returned (wrapped) by Run when the command was killed
// because Spec.Timeout expired.
var ErrTimeout = errors.New("sandbox timeout")

// ExitSetup is the exit status of the init process when the sandbox could
// not be set up (the command never ran). Run turns it into an error.
const ExitSetup = 125

// envMarker marks the re-executed init process.
const envMarker = "CB_SANDBOX_INIT"

// initName is argv[0] of the init process; it shows in ps and as
// /proc/1/cmdline inside the sandbox.
const initName = "cb-sandbox-init"

// Fds of the init process: 3 carries the spec (and stays open as the
// lifeline to the caller), 4 carries the result back.
const (
	specFd   = 3
	resultFd = 4
)

// childSpec is what the caller passes to the init process as JSON.
type childSpec struct {
	Lower, Upper, Work, Root, Dir string
	Argv, Env                     []string
	Network, PrivateTmp           bool
	Hostname                      string
}

// childResult is what the init process reports back.
type childResult struct {
	ExitCode int    `json:"exit_code"`
	Signal   int    `json:"signal,omitempty"`
	Error    string `json:"error,omitempty"`
}
