package image

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"

	"github.com/cloud-builder/cb/internal/buildroot"
	"github.com/cloud-builder/cb/internal/cgroup"
)

// proxyEnv are passed through to kiwi, which downloads packages.
var proxyEnv = []string{"http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"}

// commandEnv is the complete environment of kiwi: nothing else is
// inherited, so a build does not depend on who started it. HOME and
// GNUPGHOME point into the target's work directory because kiwi runs gpg
// to import the repository keys and rpmbuild to bundle the image, and
// neither may touch (or depend on) root's real home.
//
// bin goes first in PATH: it holds the chroot through which kiwi runs the
// description's scripts confined (see installChroot).
func commandEnv(bin, home, gnupg string) []string {
	env := []string{
		"PATH=" + bin + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"LC_ALL=C.UTF-8",
		"LANG=C.UTF-8",
		"DEBIAN_FRONTEND=noninteractive",
		"HOME=" + home,
		"GNUPGHOME=" + gnupg,
	}
	for _, k := range proxyEnv {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	return env
}

// run runs argv with stdout to stdout and stderr to log, through
// buildroot.Exec, in namespaces and a cgroup of its own. It returns the
// exit code of a command that ran and ended on its own (a non-zero code is
// not an error), and an error when the command could not start or was
// cancelled through ctx.
//
// kiwi gets its own mount namespace: it bind-mounts /dev, /proc, /sys and
// its cache into the image root, and none of those mounts is ever visible
// to the runner; all of them vanish with the build, even when kiwi is
// killed. kiwi is PID 1 of its PID namespace and runs in a cgroup with the
// build's limits, so when it ends (or is cancelled) every process it left
// is killed, daemons that escaped the process group with setsid (the
// gpg-agent of its key import) included. Its network namespace has only
// loopback, where an HTTP proxy forwards requests below repos and nothing
// else: the broker, the collector and other services of the runner's
// network are out of reach of everything kiwi runs. repos nil keeps the
// host network (no caller does).
func run(ctx context.Context, o runOptions, argv ...string) (int, error) {
	if len(argv) == 0 {
		return -1, errors.New("run: empty command")
	}
	eo := buildroot.ExecOptions{
		Env: o.env, Dir: o.dir, PrivateMounts: true, Isolate: true,
		Repositories: o.repos, Limits: o.limits, Stdout: o.stdout,
	}
	err := buildroot.Exec(ctx, o.log, eo, argv...)
	if err == nil {
		return 0, nil
	}
	if ctx.Err() != nil {
		return -1, fmt.Errorf("%s: %w", argv[0], context.Cause(ctx))
	}
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		if ws, ok := exit.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal()), nil
		}
		return exit.ExitCode(), nil
	}
	if errors.Is(err, syscall.EPERM) {
		return -1, fmt.Errorf("start %s: %w (image builds need root)", argv[0], err)
	}
	return -1, err
}

// runOptions are how run runs one command.
type runOptions struct {
	env    []string
	dir    string
	stdout io.Writer // nil: the log (never the log itself: two unsynchronised writers)
	log    io.Writer // the command line, stderr and the proxy's refusals
	repos  []string  // the URLs the network proxy forwards
	limits cgroup.Limits
}
