package buildroot

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"
)

// threadNS describes the namespaces a command is started in: a new
// network namespace with only loopback up, where net runs first (it
// listens for the command), and a new mount namespace with binds below
// BindBase.
type threadNS struct {
	net   func() error
	binds []Bind
}

// start runs start on a thread of its own that was moved into the new
// namespaces. Sockets opened there and processes started there belong to
// them. The thread is never handed back to the Go scheduler (the
// goroutine ends locked, which ends the thread), so nothing else ever
// runs in them and they go with the command.
//
// The main thread is the exception: the runtime never ends it, it only
// parks it, and its namespaces (with their bind mounts) would stay for
// the life of the process. So a goroutine that finds itself locked to the
// main thread keeps it, so that the next one cannot land there, and
// starts the work from another goroutine.
func (ns threadNS) start(start func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if unix.Gettid() == unix.Getpid() {
			errc <- ns.start(start)
			runtime.UnlockOSThread()
			return
		}
		errc <- ns.enter(start)
	}()
	return <-errc
}

func (ns threadNS) enter(start func() error) error {
	if ns.net != nil {
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("new network namespace: %w", err)
		}
		if err := loopbackUp(); err != nil {
			return err
		}
		if err := ns.net(); err != nil {
			return err
		}
	}
	if len(ns.binds) > 0 {
		if err := bindAll(ns.binds); err != nil {
			return fmt.Errorf("bind into %s: %w", BindBase, err)
		}
	}
	return start()
}

// bindAll makes a mount namespace for this thread, with a tmpfs at
// BindBase holding the binds.
func bindAll(binds []Bind) error {
	if err := os.MkdirAll(BindBase, 0o755); err != nil {
		return err
	}
	// The thread's own file system attributes come with the new mount
	// namespace (CLONE_NEWNS implies CLONE_FS).
	if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
		return fmt.Errorf("new mount namespace: %w", err)
	}
	if err := unix.Mount("none", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make mounts private: %w", err)
	}
	if err := unix.Mount("tmpfs", BindBase, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=0755,size=64k"); err != nil {
		return err
	}
	for _, b := range binds {
		if b.Name == "" || b.Name != filepath.Base(b.Name) || b.Name == "." || b.Name == ".." {
			return fmt.Errorf("bad bind name %q", b.Name)
		}
		fi, err := os.Stat(b.Source)
		if err != nil {
			return err
		}
		dst := BindPath(b.Name)
		if b.Lower != "" {
			if err := mountOverlay(b, dst); err != nil {
				return err
			}
			continue
		}
		if fi.IsDir() {
			err = os.Mkdir(dst, 0o755)
		} else {
			err = os.WriteFile(dst, nil, 0o644)
		}
		if err != nil {
			return err
		}
		if err := unix.Mount(b.Source, dst, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind %s: %w", b.Source, err)
		}
	}
	return nil
}

// overlayOptions are the options of the overlay a Bind asks for. Redirects,
// metacopy and the inode index are off, so the upper dir comes out a
// self-contained layer (every changed file copied up whole) that any
// later overlay can stack as a lower layer.
func overlayOptions(b Bind) string {
	return "lowerdir=" + b.Lower + ",upperdir=" + b.Source + ",workdir=" + b.Work +
		",redirect_dir=off,metacopy=off,index=off"
}

func mountOverlay(b Bind, dst string) error {
	for _, p := range append(strings.Split(b.Lower, ":"), b.Source, b.Work) {
		if !filepath.IsAbs(p) || strings.ContainsAny(p, ",\\\x00\n") {
			return fmt.Errorf("overlay layer %q: not an absolute path overlayfs can take", p)
		}
	}
	if strings.ContainsRune(b.Source+b.Work, ':') {
		return fmt.Errorf("overlay upper dir %q: contains ':'", b.Source)
	}
	if err := os.Mkdir(dst, 0o755); err != nil {
		return err
	}
	if err := unix.Mount("overlay", dst, "overlay", 0, overlayOptions(b)); err != nil {
		return fmt.Errorf("mount overlay of %s: %w", b.Source, err)
	}
	return nil
}

func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("bring up loopback: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return fmt.Errorf("bring up loopback: %w", err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("bring up loopback: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP | unix.IFF_RUNNING)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("bring up loopback: %w", err)
	}
	return nil
}
