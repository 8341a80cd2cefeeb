package sandbox

import (
	"fmt"
	"unsafe"

	seccomp "github.com/elastic/go-seccomp-bpf"
	"github.com/elastic/go-seccomp-bpf/arch"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// deniedSyscalls fail with EPERM inside a sandbox. The list follows the
// container runtimes' default profile (moby/profiles/seccomp) for what a
// process without CAP_SYS_ADMIN in the host's user namespace must not do,
// and a package build never needs: loading kernel code (modules, kexec,
// bpf), the kernel keyring, mounting or moving file systems, switching
// namespaces, and the host's clock, swap, accounting and reboot. The user
// namespace already takes the capabilities these need in the host; the
// filter shuts the same doors a second time, including paths a kernel bug
// might open for a process that is root in its own user namespace.
var deniedSyscalls = []string{
	// kernel code
	"kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module", "bpf",
	// keyring: not namespaced, shared with the host
	"keyctl", "add_key", "request_key",
	// file systems and namespaces
	"mount", "umount2", "pivot_root", "move_mount", "open_tree", "fsopen", "fsconfig",
	"fsmount", "fspick", "mount_setattr", "unshare", "setns",
	// file handles bypass the root (the "shocker" escape)
	"open_by_handle_at", "name_to_handle_at",
	// host-wide state
	"reboot", "swapon", "swapoff", "acct", "settimeofday", "clock_settime", "clock_adjtime",
	"adjtimex", "syslog", "quotactl", "lookup_dcookie", "iopl", "ioperm", "vhangup",
	"perf_event_open",
}

// namespaceFlags may not be passed to clone: a new user namespace would
// give the build a full set of capabilities over new namespaces of its own.
var namespaceFlags = []uint64{
	unix.CLONE_NEWUSER, unix.CLONE_NEWNS, unix.CLONE_NEWPID, unix.CLONE_NEWNET,
	unix.CLONE_NEWUTS, unix.CLONE_NEWIPC, unix.CLONE_NEWCGROUP, unix.CLONE_NEWTIME,
}

// policy is the filter's policy: allow by default, deny the list.
func policy() seccomp.Policy {
	var cloneRules []seccomp.NameWithConditions
	for _, f := range namespaceFlags {
		cloneRules = append(cloneRules, seccomp.NameWithConditions{
			Name:       "clone",
			Conditions: seccomp.ArgumentConditions{{Argument: 0, Operation: seccomp.BitsSet, Value: f}},
		})
	}
	return seccomp.Policy{
		DefaultAction: seccomp.ActionAllow,
		Syscalls: []seccomp.SyscallGroup{
			{Action: seccomp.ActionErrno, Names: deniedSyscalls},
			{Action: seccomp.ActionErrno, NamesWithCondtions: cloneRules},
			// clone3 passes its flags in memory, out of the filter's
			// reach; ENOSYS makes the C library fall back to clone.
			{Action: seccomp.ActionErrno | seccomp.Action(unix.ENOSYS), Names: []string{"clone3"}},
		},
	}
}

// loadSeccomp sets no_new_privs and installs the filter on the calling
// thread, which must be locked to its goroutine and exec the command
// right after. Two filters are stacked: one that refuses system calls of
// any other ABI than the native one (a 64-bit process can make i386 system
// calls, whose numbers the policy does not cover), and the policy.
func loadSeccomp() error {
	if err := seccomp.SetNoNewPrivs(); err != nil {
		return fmt.Errorf("set no_new_privs: %w", err)
	}
	native, err := nativeArch()
	if err != nil {
		return err
	}
	archOnly := []bpf.Instruction{
		bpf.LoadAbsolute{Off: 4, Size: 4}, // seccomp_data.arch
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: native, SkipTrue: 1},
		bpf.RetConstant{Val: unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)},
		bpf.RetConstant{Val: unix.SECCOMP_RET_ALLOW},
	}
	if err := loadRaw(archOnly); err != nil {
		return fmt.Errorf("load seccomp arch filter: %w", err)
	}
	if err := seccomp.LoadFilter(seccomp.Filter{Policy: policy()}); err != nil {
		return fmt.Errorf("load seccomp filter: %w", err)
	}
	return nil
}

func loadRaw(insts []bpf.Instruction) error {
	raw, err := bpf.Assemble(insts)
	if err != nil {
		return err
	}
	filter := make([]unix.SockFilter, len(raw))
	for i, r := range raw {
		filter[i] = unix.SockFilter{Code: r.Op, Jt: r.Jt, Jf: r.Jf, K: r.K}
	}
	prog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	return unix.Prctl(unix.PR_SET_SECCOMP, unix.SECCOMP_MODE_FILTER, uintptr(unsafe.Pointer(&prog)), 0, 0)
}

// nativeArch is the audit architecture of this program's system calls.
func nativeArch() (uint32, error) {
	info, err := arch.GetInfo("")
	if err != nil {
		return 0, fmt.Errorf("seccomp: %w", err)
	}
	return uint32(info.ID), nil
}
