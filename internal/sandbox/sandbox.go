// Package sandbox runs one command inside a buildroot, isolated in its own
// user, mount, PID, IPC, UTS and (by default) network namespaces, in a
// control group of its own, below a seccomp filter.
//
// The guarantee is structural rather than a matter of careful cleanup: the
// command runs below a small init process that is PID 1 of a fresh PID
// namespace and the only holder of a fresh mount namespace. Every mount the
// sandbox makes (the overlay, /proc, /dev, …) lives only in that namespace,
// and when the init process dies — because the command ended, because of a
// timeout, or because the caller was killed with SIGKILL (the init process
// has a parent-death signal and watches a lifeline pipe) — the kernel kills
// every process left in the namespace and drops all of its mounts. The
// control group catches anything else and bounds memory, processes and CPU.
//
// The init process is the calling program itself, re-executed through
// /proc/self/exe with a marker in its environment. That is why every program
// that calls Run must call Init first thing in main (and every test binary
// first thing in TestMain): Init recognises the marker, runs the init part
// and exits; in a normal process it returns at once.
//
// # Rootless commands
//
// The init process keeps the host's root: it mounts the root, /proc, /sys
// and a minimal /dev, masks the /proc files that describe the host, and
// switches to the new root with pivot_root (not chroot), detaching the old
// root entirely. The command itself is started in a new user namespace
// whose root is the first id of an unprivileged subordinate range on the
// host (IDs, DefaultIDs 100000:65536), as sbuild's unshare mode, podman
// and bubblewrap do. It is root over its own files, but holds no
// capability in the host's user namespace, and the mount, PID, network and
// UTS namespaces belong to the host's user namespace: it can neither mount
// nor unmount anything, nor change the host name or the network. Before the
// command is executed a second re-exec of this program (the exec stage) sets
// no_new_privs, the file size limit, and a seccomp filter in the spirit of
// the container runtimes' default profile (no kexec, modules, bpf, keyring,
// mount, new namespaces or i386 system calls).
//
// Files of the root must belong to the range for the command to own them
// (a cached buildroot is shifted into the range once, see ShiftOwner);
// files of other host users show up as nobody.
//
// bubblewrap was considered for the namespace work: it maps only a single
// id into its user namespace (a buildroot needs the whole range: root, _apt,
// man, …), takes the seccomp program as a compiled BPF blob anyway, and
// cannot put the command in a cgroup, so the ~300 lines here stay.
//
// Run needs root (CAP_SYS_ADMIN for the namespaces and mounts) and an
// upper layer on a file system overlayfs accepts as upperdir (ext4, xfs,
// btrfs, tmpfs — not another overlayfs).
//
// HostRoot turns the user namespace and the filter off, for buildroot tools
// that must mount and chroot themselves; such a sandbox isolates mounts,
// processes and network but is not a security boundary.
package sandbox

import (
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/cloud-builder/cb/internal/cgroup"
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

	// IDs is the host id range the command's user namespace maps; root in
	// the sandbox is IDs.UID on the host. The zero value means DefaultIDs.
	IDs IDMap
	// HostRoot runs the command as the host's root with all capabilities,
	// without user namespace and seccomp filter. Only for trusted tools.
	HostRoot bool
	// Limits are the cgroup limits of the sandbox. Every sandbox gets a
	// group of its own where the host has cgroups; Run fails if limits are
	// set and it has none.
	Limits cgroup.Limits
	// MaxWrite caps the bytes the command may store in the writable layer
	// (Upper, or Root without overlay), in the private /tmp and /dev/shm,
	// and in any one file; zero means no cap. A file larger than the cap
	// fails at once (EFBIG/SIGXFSZ); the total is checked every
	// DiskPollInterval and ends the command with ErrWriteLimit.
	MaxWrite int64
	// IdleTimeout ends the command with ErrIdle when it wrote nothing to
	// Stdout or Stderr for that long; zero means no limit.
	IdleTimeout time.Duration
}

// IDMap is a range of host user and group ids.
type IDMap struct {
	UID   uint32 `yaml:"uid"`
	GID   uint32 `yaml:"gid"`
	Count uint32 `yaml:"count"`
}

// DefaultIDs is the range a sandbox maps when Spec.IDs is zero: the first
// range Debian's useradd would hand out in /etc/subuid. A runner reserves it
// with an entry for the user cb-build (scripts/setup writes one), so that
// no login user gets the same ids.
var DefaultIDs = IDMap{UID: 100000, GID: 100000, Count: 65536}

// Validate refuses ranges that would include the host's root or wrap.
func (m IDMap) Validate() error {
	switch {
	case m.Count == 0:
		return fmt.Errorf("id range: count is 0")
	case m.UID == 0 || m.GID == 0:
		return fmt.Errorf("id range %d:%d: must not start at the host's root", m.UID, m.GID)
	case uint64(m.UID)+uint64(m.Count) > 1<<32-1 || uint64(m.GID)+uint64(m.Count) > 1<<32-1:
		return fmt.Errorf("id range %d:%d+%d: beyond the last id", m.UID, m.GID, m.Count)
	}
	return nil
}

// ErrIdle is returned (wrapped) by Run when the command was killed because
// it wrote no output for Spec.IdleTimeout.
var ErrIdle = errors.New("no output")

// ErrWriteLimit is returned (wrapped) by Run when the command was killed
// because it stored more than Spec.MaxWrite bytes.
var ErrWriteLimit = errors.New("writable layer size limit reached")

// ErrMemoryLimit is returned (wrapped) by Run when the kernel's OOM killer
// ended a process of the sandbox because of Spec.Limits.Memory.
var ErrMemoryLimit = errors.New("memory limit reached")

// DiskPollInterval is how often the writable layer's size is measured when
// Spec.MaxWrite is set.
var DiskPollInterval = time.Second

// DefaultKillGrace is how long a command may take to exit after SIGTERM
// before the whole sandbox is killed.
const DefaultKillGrace = 10 * time.Second

// ErrAbandoned, as (or wrapped in) the cause of a cancelled context, ends
// the sandbox with SIGKILL at once instead of SIGTERM and KillGrace:
// nobody wants the result of its work any more, and another machine may
// already be doing it again (a fenced runner).
var ErrAbandoned = errors.New("work abandoned")

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

// execMarker marks the exec stage: the process in the user namespace that
// installs the seccomp filter and executes the command. Its value is the
// file size limit.
const execMarker = "CB_SANDBOX_EXEC"

// execName is argv[0] of the exec stage.
const execName = "cb-sandbox-exec"

// Fds of the init process: 3 carries the spec (and stays open as the
// lifeline to the caller), 4 carries the result back. The exec stage gets
// a pipe on 3 to report why it could not execute the command.
const (
	specFd    = 3
	resultFd  = 4
	execErrFd = 3
)

// childSpec is what the caller passes to the init process as JSON.
type childSpec struct {
	Lower, Upper, Work, Root, Dir string
	Argv, Env                     []string
	Network, PrivateTmp           bool
	Hostname                      string
	HostRoot                      bool
	IDs                           IDMap
	MaxWrite                      int64
}

// childResult is what the init process reports back.
type childResult struct {
	ExitCode int    `json:"exit_code"`
	Signal   int    `json:"signal,omitempty"`
	Error    string `json:"error,omitempty"`
}
