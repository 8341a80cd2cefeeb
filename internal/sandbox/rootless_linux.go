package sandbox

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// startRootless starts the command through the exec stage in a new user
// namespace that maps cs.IDs, with root inside as the first id of the
// range. The mount, PID, network, IPC and UTS namespaces it lives in were
// made by the init process, so they belong to the host's user namespace and
// the command has no capability over them.
func startRootless(cs *childSpec, exe *os.File, path string, devnull int) (int, error) {
	errR, errW, err := os.Pipe()
	if err != nil {
		return 0, err
	}
	defer errR.Close()
	argv := append([]string{execName, path}, cs.Argv...)
	env := append([]string{execMarker + "=" + strconv.FormatInt(cs.MaxWrite, 10)}, cs.Env...)
	ids := cs.IDs
	pid, err := syscall.ForkExec(fmt.Sprintf("/proc/self/fd/%d", exe.Fd()), argv, &syscall.ProcAttr{
		Dir:   cs.Dir,
		Env:   env,
		Files: []uintptr{uintptr(devnull), 1, 2, errW.Fd()},
		Sys: &syscall.SysProcAttr{
			Setpgid:                    true,
			Cloneflags:                 syscall.CLONE_NEWUSER,
			UidMappings:                []syscall.SysProcIDMap{{ContainerID: 0, HostID: int(ids.UID), Size: int(ids.Count)}},
			GidMappings:                []syscall.SysProcIDMap{{ContainerID: 0, HostID: int(ids.GID), Size: int(ids.Count)}},
			GidMappingsEnableSetgroups: true,
			// Become root of the namespace: the process still has the
			// host's uid 0 after clone, which the namespace does not map.
			Credential: &syscall.Credential{Uid: 0, Gid: 0},
		},
	})
	errW.Close()
	if err != nil {
		return 0, err
	}
	// The exec stage closes the pipe by executing the command (it is
	// close-on-exec there) or writes why it could not.
	msg, _ := io.ReadAll(errR)
	if len(msg) > 0 {
		var ws syscall.WaitStatus
		_, _ = syscall.Wait4(pid, &ws, 0, nil)
		return 0, errors.New(string(msg))
	}
	return pid, nil
}

// execMain is the exec stage: root of the new user namespace, in the new
// root. It sets the limits that must be set from inside and execs the
// command. os.Args is [execName, path, argv...].
func execMain() int {
	// no_new_privs and the seccomp filter belong to this thread; the
	// command inherits them through execve from the same thread.
	runtime.LockOSThread()
	errw := os.NewFile(execErrFd, "sandbox-exec-error")
	fail := func(err error) int {
		if errw != nil {
			_, _ = errw.WriteString(err.Error())
		}
		return ExitSetup
	}
	if errw == nil || len(os.Args) < 3 {
		return fail(errors.New("exec stage started without its pipe or command"))
	}
	syscall.CloseOnExec(execErrFd)
	var env []string
	var maxWrite int64
	for _, e := range os.Environ() {
		if v, ok := strings.CutPrefix(e, execMarker+"="); ok {
			maxWrite, _ = strconv.ParseInt(v, 10, 64)
			continue
		}
		env = append(env, e)
	}
	if maxWrite > 0 {
		// Raising a hard limit needs CAP_SYS_RESOURCE in the host's user
		// namespace, so the command cannot lift it.
		lim := unix.Rlimit{Cur: uint64(maxWrite), Max: uint64(maxWrite)}
		if err := unix.Setrlimit(unix.RLIMIT_FSIZE, &lim); err != nil {
			return fail(fmt.Errorf("set file size limit: %w", err))
		}
	}
	if err := loadSeccomp(); err != nil {
		return fail(err)
	}
	err := syscall.Exec(os.Args[1], os.Args[2:], env)
	return fail(fmt.Errorf("exec %s: %w", os.Args[1], err))
}

// pivotRoot makes root the root of the mount namespace and detaches the
// old one, so no path leads back to the host's tree: unlike chroot, which
// a process with CAP_SYS_CHROOT in its own user namespace can leave.
func pivotRoot(root string) error {
	if err := syscall.Chdir(root); err != nil {
		return fmt.Errorf("pivot_root: %w", err)
	}
	// pivot_root(".", ".") stacks the old root on top of the new one
	// (runc's way: no directory for the old root is needed in the root).
	if err := unix.PivotRoot(".", "."); err != nil {
		return fmt.Errorf("pivot_root %s: %w", root, err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detach the old root: %w", err)
	}
	if err := syscall.Chdir("/"); err != nil {
		return fmt.Errorf("chdir /: %w", err)
	}
	return nil
}

// maskedPaths describe the host (its memory, keys, timers, firmware) and
// are hidden; readonlyPaths could change the host's kernel. The lists are
// the container runtimes' defaults.
var (
	maskedPaths = []string{
		"/proc/acpi", "/proc/asound", "/proc/interrupts", "/proc/kcore", "/proc/keys",
		"/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug",
		"/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap",
	}
	readonlyPaths = []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"}
)

// maskProc runs after pivot_root, as the host's root, in the sandbox's
// mount namespace: the command cannot undo these mounts.
func maskProc() error {
	for _, p := range maskedPaths {
		fi, err := os.Stat(p)
		if err != nil {
			continue // not on this kernel
		}
		if fi.IsDir() {
			err = syscall.Mount("tmpfs", p, "tmpfs", syscall.MS_RDONLY|syscall.MS_NOSUID|syscall.MS_NODEV|syscall.MS_NOEXEC, "size=4k")
		} else {
			err = syscall.Mount("/dev/null", p, "", syscall.MS_BIND, "")
		}
		if err != nil {
			return fmt.Errorf("mask %s: %w", p, err)
		}
	}
	for _, p := range readonlyPaths {
		if _, err := os.Stat(p); err != nil {
			continue
		}
		if err := syscall.Mount(p, p, "", syscall.MS_BIND|syscall.MS_REC, ""); err != nil {
			return fmt.Errorf("bind %s: %w", p, err)
		}
		flags := uintptr(syscall.MS_BIND | syscall.MS_REMOUNT | syscall.MS_RDONLY | syscall.MS_NOSUID | syscall.MS_NODEV | syscall.MS_NOEXEC)
		if err := syscall.Mount(p, p, "", flags, ""); err != nil {
			return fmt.Errorf("make %s read-only: %w", p, err)
		}
	}
	return nil
}

// hostGID is the host gid of group id inside the sandbox.
func hostGID(cs *childSpec, id uint32) uint32 {
	if cs.HostRoot {
		return id
	}
	return cs.IDs.GID + id
}

// owner is the tmpfs option that makes a mount belong to root inside.
func owner(cs *childSpec) string {
	if cs.HostRoot {
		return ""
	}
	return fmt.Sprintf(",uid=%d,gid=%d", cs.IDs.UID, cs.IDs.GID)
}

// tmpfsOpts are the options of the writable tmpfs mounts (/tmp, /dev/shm).
func tmpfsOpts(cs *childSpec) string {
	o := owner(cs)
	if cs.MaxWrite > 0 {
		o += fmt.Sprintf(",size=%d", cs.MaxWrite)
	}
	return o
}

// chownRoot gives a file the sandbox made to root inside.
func chownRoot(cs *childSpec, p string) error {
	if cs.HostRoot {
		return nil
	}
	if err := os.Lchown(p, int(cs.IDs.UID), int(cs.IDs.GID)); err != nil {
		return fmt.Errorf("chown %s: %w", p, err)
	}
	return nil
}
