package sandbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Init must be the first call in main() of every program that uses Run,
// and the first call in TestMain of every test binary that does. In the
// re-executed sandbox init process it sets up the sandbox, runs the
// command, reports its exit status and exits; anywhere else it returns
// immediately.
func Init() {
	if _, ok := os.LookupEnv(execMarker); ok && len(os.Args) > 0 && os.Args[0] == execName {
		os.Exit(execMain())
	}
	if os.Getenv(envMarker) != "1" {
		return
	}
	os.Exit(initMain())
}

func initMain() int {
	res := os.NewFile(resultFd, "sandbox-result")
	spec := os.NewFile(specFd, "sandbox-spec")
	report := func(r childResult) {
		_ = json.NewEncoder(res).Encode(r)
	}
	fail := func(err error) int {
		report(childResult{ExitCode: -1, Error: err.Error()})
		return ExitSetup
	}
	if res == nil || spec == nil {
		fmt.Fprintln(os.Stderr, "cb-sandbox-init: started without its pipes")
		return ExitSetup
	}
	var cs childSpec
	if err := json.NewDecoder(spec).Decode(&cs); err != nil {
		return fail(fmt.Errorf("read spec: %w", err))
	}
	// The caller keeps the other end open while it lives. EOF means it is
	// gone (even by SIGKILL, in case the parent-death signal was missed
	// because the parent died before the child was fully started); dying
	// here takes the whole namespace with it.
	go func() {
		_, _ = io.Copy(io.Discard, spec)
		os.Exit(128 + int(syscall.SIGKILL))
	}()

	// Install the handlers before anything runs: PID 1 of a namespace
	// ignores every signal it has no handler for.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)

	// Nothing of the sandbox may ptrace or read the memory of this
	// process, which keeps the host's root.
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return fail(fmt.Errorf("set not dumpable: %w", err))
	}
	// The exec stage is this program again; after pivot_root its path is
	// gone, so it is executed through an fd opened now.
	exe, err := os.Open("/proc/self/exe")
	if err != nil {
		return fail(fmt.Errorf("open own executable: %w", err))
	}
	if err := setup(&cs); err != nil {
		return fail(err)
	}
	path, err := lookPath(cs.Argv[0], cs.Env)
	if err != nil {
		return fail(err)
	}
	devnull, err := syscall.Open("/dev/null", syscall.O_RDWR|syscall.O_CLOEXEC, 0)
	if err != nil {
		return fail(fmt.Errorf("open /dev/null: %w", err))
	}
	var pid int
	if cs.HostRoot {
		pid, err = syscall.ForkExec(path, cs.Argv, &syscall.ProcAttr{
			Dir:   cs.Dir,
			Env:   cs.Env,
			Files: []uintptr{uintptr(devnull), 1, 2},
			Sys:   &syscall.SysProcAttr{Setpgid: true},
		})
	} else {
		pid, err = startRootless(&cs, exe, path, devnull)
	}
	exe.Close()
	if err != nil {
		return fail(fmt.Errorf("start %s: %w", cs.Argv[0], err))
	}
	go func() {
		for sig := range sigs {
			// kill(-1) from PID 1 reaches every other process of the
			// namespace, including those that left the process group.
			_ = syscall.Kill(-1, sig.(syscall.Signal))
		}
	}()

	// As PID 1 this process inherits every orphan of the build; reap them
	// all until the command itself is done. Whatever still runs then is
	// killed by the kernel when this process exits.
	for {
		var ws syscall.WaitStatus
		wpid, err := syscall.Wait4(-1, &ws, 0, nil)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil {
			return fail(fmt.Errorf("wait for %s: %w", cs.Argv[0], err))
		}
		if wpid != pid {
			continue
		}
		r := childResult{ExitCode: ws.ExitStatus()}
		if ws.Signaled() {
			r.Signal = int(ws.Signal())
			r.ExitCode = 128 + r.Signal
		}
		report(r)
		return r.ExitCode & 0xff
	}
}

// setup builds the sandbox's view of the world. Everything here happens in
// the private mount namespace, so nothing needs undoing.
func setup(cs *childSpec) error {
	if err := syscall.Mount("", "/", "", syscall.MS_REC|syscall.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make mounts private: %w", err)
	}
	if cs.Lower != "" {
		opts := "lowerdir=" + cs.Lower + ",upperdir=" + cs.Upper + ",workdir=" + cs.Work
		if err := syscall.Mount("overlay", cs.Root, "overlay", 0, opts); err != nil {
			return fmt.Errorf("mount overlay on %s: %w", cs.Root, err)
		}
	} else if err := syscall.Mount(cs.Root, cs.Root, "", syscall.MS_BIND|syscall.MS_REC, ""); err != nil {
		return fmt.Errorf("bind %s: %w", cs.Root, err)
	}

	proc, err := mountpoint(cs.Root, "proc")
	if err != nil {
		return err
	}
	if err := syscall.Mount("proc", proc, "proc", syscall.MS_NOSUID|syscall.MS_NODEV|syscall.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mount proc: %w", err)
	}
	// sysfs read-only: tools probe CPUs and devices there, none may
	// change the host through it.
	sys, err := mountpoint(cs.Root, "sys")
	if err != nil {
		return err
	}
	if err := syscall.Mount("sysfs", sys, "sysfs", syscall.MS_RDONLY|syscall.MS_NOSUID|syscall.MS_NODEV|syscall.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mount /sys: %w", err)
	}
	if err := setupDev(cs); err != nil {
		return err
	}
	if cs.PrivateTmp {
		tmp, err := mountpoint(cs.Root, "tmp")
		if err != nil {
			return err
		}
		if err := syscall.Mount("tmpfs", tmp, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, "mode=1777"+tmpfsOpts(cs)); err != nil {
			return fmt.Errorf("mount /tmp: %w", err)
		}
	}
	if !cs.Network {
		if err := loopbackUp(); err != nil {
			return err
		}
	}
	if err := syscall.Sethostname([]byte(cs.Hostname)); err != nil {
		return fmt.Errorf("set hostname: %w", err)
	}
	var resolv []byte
	if cs.Network {
		resolv, _ = os.ReadFile("/etc/resolv.conf")
	}
	if err := pivotRoot(cs.Root); err != nil {
		return err
	}
	if !cs.HostRoot {
		if err := maskProc(); err != nil {
			return err
		}
	}
	// Tools resolve their own host name (rpmbuild stamps it into every
	// package); without a network that only works through /etc/hosts,
	// which a bootstrapped root may lack. Created after the chroot, so a
	// symlink cannot aim the write outside the root.
	if _, err := os.Lstat("/etc/hosts"); errors.Is(err, os.ErrNotExist) {
		hosts := "127.0.0.1\tlocalhost " + cs.Hostname + "\n::1\tlocalhost ip6-localhost ip6-loopback\n"
		_ = os.MkdirAll("/etc", 0o755)
		if err := os.WriteFile("/etc/hosts", []byte(hosts), 0o644); err != nil {
			return fmt.Errorf("create /etc/hosts: %w", err)
		}
		if err := chownRoot(cs, "/etc/hosts"); err != nil {
			return err
		}
	}
	if resolv != nil {
		// Written after the chroot, so a symlink in the buildroot cannot
		// point the write at a host file.
		_ = os.Remove("/etc/resolv.conf")
		_ = os.MkdirAll("/etc", 0o755)
		if err := os.WriteFile("/etc/resolv.conf", resolv, 0o644); err != nil {
			return fmt.Errorf("copy resolv.conf: %w", err)
		}
		if err := chownRoot(cs, "/etc/resolv.conf"); err != nil {
			return err
		}
	}
	return nil
}

// devNodes are bound from the host into the sandbox's own /dev: enough for
// compilers and package tools, without exposing disks or the console.
var devNodes = []string{"null", "zero", "full", "random", "urandom", "tty"}

func setupDev(cs *childSpec) error {
	dev, err := mountpoint(cs.Root, "dev")
	if err != nil {
		return err
	}
	if err := syscall.Mount("tmpfs", dev, "tmpfs", syscall.MS_NOSUID|syscall.MS_NOEXEC, "mode=0755,size=65536k"+owner(cs)); err != nil {
		return fmt.Errorf("mount /dev: %w", err)
	}
	for _, n := range devNodes {
		if _, err := os.Stat("/dev/" + n); err != nil && n == "tty" {
			continue // a runner without a controlling-tty device
		}
		p := filepath.Join(dev, n)
		f, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o666)
		if err != nil {
			return fmt.Errorf("create /dev/%s: %w", n, err)
		}
		f.Close()
		if err := syscall.Mount("/dev/"+n, p, "", syscall.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind /dev/%s: %w", n, err)
		}
	}
	for _, d := range []string{"pts", "shm"} {
		if err := os.Mkdir(filepath.Join(dev, d), 0o755); err != nil {
			return fmt.Errorf("create /dev/%s: %w", d, err)
		}
	}
	if err := syscall.Mount("devpts", filepath.Join(dev, "pts"), "devpts", syscall.MS_NOSUID|syscall.MS_NOEXEC, fmt.Sprintf("newinstance,ptmxmode=0666,mode=0620,gid=%d", hostGID(cs, 5))); err != nil {
		return fmt.Errorf("mount /dev/pts: %w", err)
	}
	if err := syscall.Mount("shm", filepath.Join(dev, "shm"), "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, "mode=1777"+tmpfsOpts(cs)); err != nil {
		return fmt.Errorf("mount /dev/shm: %w", err)
	}
	links := [][2]string{
		{"pts/ptmx", "ptmx"}, {"/proc/self/fd", "fd"},
		{"/proc/self/fd/0", "stdin"}, {"/proc/self/fd/1", "stdout"}, {"/proc/self/fd/2", "stderr"},
	}
	for _, l := range links {
		if err := os.Symlink(l[0], filepath.Join(dev, l[1])); err != nil {
			return fmt.Errorf("create /dev/%s: %w", l[1], err)
		}
	}
	return nil
}

// mountpoint returns root/name as a directory to mount on, creating it if
// needed. The buildroot comes partly from a git repository, so a symlink
// here could aim a mount outside the root; it is refused.
func mountpoint(root, name string) (string, error) {
	p := filepath.Join(root, name)
	fi, err := os.Lstat(p)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if err := os.Mkdir(p, 0o755); err != nil {
			return "", fmt.Errorf("create /%s: %w", name, err)
		}
		return p, nil
	case err != nil:
		return "", fmt.Errorf("inspect /%s: %w", name, err)
	case !fi.IsDir():
		return "", fmt.Errorf("/%s in the root is not a directory", name)
	}
	return p, nil
}

// loopbackUp brings up lo in the new network namespace (it starts down),
// so builds that talk to localhost work without any outside network.
func loopbackUp() error {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_DGRAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("bring up loopback: %w", err)
	}
	defer syscall.Close(fd)
	var ifr struct {
		name  [syscall.IFNAMSIZ]byte
		flags uint16
		_     [22]byte
	}
	copy(ifr.name[:], "lo")
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), syscall.SIOCGIFFLAGS, uintptr(unsafe.Pointer(&ifr))); e != 0 {
		return fmt.Errorf("bring up loopback: %w", e)
	}
	ifr.flags |= syscall.IFF_UP | syscall.IFF_RUNNING
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), syscall.SIOCSIFFLAGS, uintptr(unsafe.Pointer(&ifr))); e != 0 {
		return fmt.Errorf("bring up loopback: %w", e)
	}
	return nil
}

// lookPath finds argv[0] inside the (already chrooted) root using the
// command's own PATH, not the caller's.
func lookPath(name string, env []string) (string, error) {
	if strings.Contains(name, "/") {
		return name, nil
	}
	path := "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, "PATH="); ok {
			path = v
		}
	}
	for _, dir := range filepath.SplitList(path) {
		if !filepath.IsAbs(dir) {
			continue
		}
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: command not found in the root", name)
}
