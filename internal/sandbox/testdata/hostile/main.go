// Command hostile is what a hostile package build runs: it tries every
// escape of the sandbox's escape suite and reports each as
//
//	ATTACK <name> BLOCKED: <why>
//	ATTACK <name> ESCAPED: <what it reached>
//
// Some attacks can only be judged from outside (a file written on the
// host, a daemon left running); the test checks those as well.
//
// Usage: hostile [-marker host-file] [-token host-file] [-connect host:port,...]
// [-disk major:minor] [-daemon token] [-memory bytes] [-write bytes] [attack...]
package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

var (
	marker  = flag.String("marker", "", "a host file the build must not see")
	token   = flag.String("token", "", "the host path of a runner token")
	connect = flag.String("connect", "", "host addresses of the broker and collector")
	disk    = flag.String("disk", "", "major:minor of the host's disk")
	daemon  = flag.String("daemon", "cb-hostile-daemon", "token in the daemon's command line")
	memory  = flag.Int64("memory", 1<<30, "bytes the memory hog allocates")
	write   = flag.Int64("write", 1<<30, "bytes the disk filler writes")
	hostDir = flag.String("hostdir", "", "a host directory to write into")
)

var attacks = []struct {
	name string
	run  func() (escaped bool, detail string)
}{
	{"chroot-escape", chrootEscape},
	{"mknod-disk", mknodDisk},
	{"mount-host", mountHost},
	{"ptrace-outside", ptraceOutside},
	{"read-token", readToken},
	{"connect-services", connectServices},
	{"fork-bomb", forkBomb},
	{"memory-hog", memoryHog},
	{"daemon", startDaemon},
	{"proc-root-write", procRootWrite},
	{"unshare-caps", unshareCaps},
	// last: where the writable layer's total is capped, the sandbox may
	// end the whole build for it
	{"fill-disk", fillDisk},
}

func main() {
	flag.Parse()
	if flag.NArg() == 2 && flag.Arg(0) == "child" {
		// an attack run in a process of its own, so that a chroot or a
		// kill does not end the others
		for _, a := range attacks {
			if a.name == flag.Arg(1) {
				escaped, detail := a.run()
				verdict := "BLOCKED"
				if escaped {
					verdict = "ESCAPED"
				}
				fmt.Printf("ATTACK %s %s: %s\n", a.name, verdict, oneLine(detail))
				return
			}
		}
		os.Exit(2)
	}
	want := map[string]bool{}
	for _, a := range flag.Args() {
		want[a] = true
	}
	for _, a := range attacks {
		if len(want) > 0 && !want[a.name] {
			continue
		}
		args := append(os.Args[1:len(os.Args)-flag.NArg()], "child", a.name)
		cmd := exec.Command("/proc/self/exe", args...)
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		err := cmd.Run()
		var ee *exec.ExitError
		if errors.As(err, &ee) && ee.ProcessState.Sys().(syscall.WaitStatus).Signaled() {
			// a limit killed the attack: that is a block, for the hog and
			// the filler it is the expected one
			fmt.Printf("ATTACK %s BLOCKED: %s\n", a.name, ee.ProcessState)
		} else if err != nil && !errors.As(err, &ee) {
			fmt.Printf("ATTACK %s BLOCKED: could not start: %v\n", a.name, err)
		}
	}
}

func oneLine(s string) string { return strings.ReplaceAll(s, "\n", " ") }

func chrootEscape() (bool, string) {
	if err := os.MkdirAll("/tmp/jail", 0o755); err != nil {
		return false, err.Error()
	}
	if err := syscall.Chroot("/tmp/jail"); err != nil {
		return false, "chroot: " + err.Error()
	}
	for i := 0; i < 64; i++ {
		_ = syscall.Chdir("..")
	}
	if err := syscall.Chroot("."); err != nil {
		return false, "second chroot: " + err.Error()
	}
	if *marker != "" {
		if _, err := os.Stat(*marker); err == nil {
			return true, "host file " + *marker + " visible"
		}
	}
	ents, _ := os.ReadDir("/")
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return false, "still in the build root (/ has " + strings.Join(names, " ") + ")"
}

func mknodDisk() (bool, string) {
	var major, minor uint32
	if _, err := fmt.Sscanf(*disk, "%d:%d", &major, &minor); err != nil {
		major, minor = 8, 0
	}
	dev := int((major << 8) | (minor & 0xff) | ((minor &^ 0xff) << 12))
	if err := syscall.Mknod("/tmp/disk", syscall.S_IFBLK|0o600, dev); err != nil {
		return false, "mknod: " + err.Error()
	}
	// A node is enough: whoever may make one may open it somewhere.
	if f, err := os.Open("/tmp/disk"); err == nil {
		defer f.Close()
		buf := make([]byte, 512)
		if _, err := f.Read(buf); err == nil {
			return true, "made a node of the host's disk and read it"
		}
	}
	return true, "made a block device node of the host's disk"
}

func mountHost() (bool, string) {
	_ = os.MkdirAll("/tmp/mnt", 0o755)
	var errs []string
	tries := []struct{ src, fstype string }{{"/", ""}, {"proc", "proc"}, {"tmpfs", "tmpfs"}, {"/tmp/disk", "ext4"}}
	for _, m := range tries {
		flags := uintptr(0)
		if m.fstype == "" {
			flags = syscall.MS_BIND | syscall.MS_REC
		}
		if err := syscall.Mount(m.src, "/tmp/mnt", m.fstype, flags, ""); err == nil {
			return true, "mounted " + m.src
		} else {
			errs = append(errs, m.src+": "+err.Error())
		}
	}
	return false, strings.Join(errs, "; ")
}

func ptraceOutside() (bool, string) {
	var errs []string
	// PID 1 is the sandbox's init, the host's root; other host processes
	// are not even visible.
	for _, pid := range []int{1} {
		if err := syscall.PtraceAttach(pid); err == nil {
			_ = syscall.PtraceDetach(pid)
			return true, fmt.Sprintf("attached to pid %d", pid)
		} else {
			errs = append(errs, fmt.Sprintf("pid %d: %v", pid, err))
		}
	}
	if _, err := os.ReadFile("/proc/1/environ"); err == nil {
		return true, "read the environment of pid 1"
	} else {
		errs = append(errs, "/proc/1/environ: "+err.Error())
	}
	return false, strings.Join(errs, "; ")
}

func readToken() (bool, string) {
	var errs []string
	for _, p := range []string{*token, "/proc/1/root" + *token, "/proc/self/root" + *token} {
		if data, err := os.ReadFile(p); err == nil && len(data) > 0 {
			return true, "read " + p
		} else if err != nil {
			errs = append(errs, err.Error())
		}
	}
	return false, strings.Join(errs, "; ")
}

func connectServices() (bool, string) {
	var errs []string
	for _, a := range strings.Split(*connect, ",") {
		if a == "" {
			continue
		}
		c, err := net.DialTimeout("tcp", a, 2*time.Second)
		if err == nil {
			c.Close()
			return true, "connected to " + a
		}
		errs = append(errs, err.Error())
	}
	return false, strings.Join(errs, "; ")
}

func forkBomb() (bool, string) {
	var cmds []*exec.Cmd
	defer func() {
		for _, c := range cmds {
			_ = c.Process.Kill()
			_ = c.Wait()
		}
	}()
	for i := 0; i < 2000; i++ {
		c := exec.Command("/proc/self/exe", "-h")
		c.Args = []string{"sleep-forever"}
		c.Env = []string{"HOSTILE_SLEEP=1"}
		if err := c.Start(); err != nil {
			return false, fmt.Sprintf("fork failed after %d processes: %v", i, err)
		}
		cmds = append(cmds, c)
	}
	return true, "started 2000 processes"
}

func memoryHog() (bool, string) {
	var chunks [][]byte
	for n := int64(0); n < *memory; n += 1 << 20 {
		b := make([]byte, 1<<20)
		for i := range b {
			b[i] = byte(i)
		}
		chunks = append(chunks, b)
	}
	return true, fmt.Sprintf("allocated %d MiB", len(chunks))
}

func fillDisk() (bool, string) {
	f, err := os.Create("/tmp/fill")
	if err != nil {
		return false, err.Error()
	}
	defer os.Remove("/tmp/fill")
	defer f.Close()
	signalIgnore(syscall.SIGXFSZ)
	buf := make([]byte, 1<<20)
	var n int64
	for n < *write {
		m, err := f.Write(buf)
		n += int64(m)
		if err != nil {
			return false, fmt.Sprintf("write failed after %d MiB: %v", n>>20, err)
		}
	}
	return true, fmt.Sprintf("wrote %d MiB", n>>20)
}

func startDaemon() (bool, string) {
	// setsid: out of the build's process group, reparented when it exits
	c := exec.Command("/proc/self/exe")
	c.Args = []string{"sleep-forever", *daemon}
	c.Env = []string{"HOSTILE_SLEEP=1"}
	c.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := c.Start(); err != nil {
		return false, err.Error()
	}
	_ = c.Process.Release()
	return false, "daemon started; the test checks it does not outlive the build"
}

func procRootWrite() (bool, string) {
	var errs []string
	for _, p := range []string{"/proc/1/root" + *hostDir + "/pwned-1", "/proc/self/root/../../.." + *hostDir + "/pwned-self"} {
		if err := os.WriteFile(p, []byte("pwned"), 0o644); err != nil {
			errs = append(errs, err.Error())
		} else {
			errs = append(errs, "wrote "+p+" (inside the root; the test checks the host)")
		}
	}
	return false, strings.Join(errs, "; ")
}

func unshareCaps() (bool, string) {
	var errs []string
	for _, f := range []int{syscall.CLONE_NEWUSER, syscall.CLONE_NEWNS, syscall.CLONE_NEWUSER | syscall.CLONE_NEWNS} {
		if err := syscall.Unshare(f); err == nil {
			return true, fmt.Sprintf("unshare(%#x) succeeded", f)
		} else {
			errs = append(errs, fmt.Sprintf("unshare(%#x): %v", f, err))
		}
	}
	c := exec.Command("/proc/self/exe", "-h")
	c.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWUSER, UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: 0, Size: 1}}}
	if err := c.Run(); err == nil {
		return true, "clone(CLONE_NEWUSER) succeeded"
	} else {
		errs = append(errs, "clone(CLONE_NEWUSER): "+err.Error())
	}
	return false, strings.Join(errs, "; ")
}

func init() {
	if os.Getenv("HOSTILE_SLEEP") == "1" {
		time.Sleep(time.Hour)
		os.Exit(0)
	}
}

func signalIgnore(sig syscall.Signal) {
	// SIGXFSZ would kill the filler; EFBIG is clearer in the report
	signal.Ignore(sig)
}
