package image

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/cloud-builder/cb/internal/proc"
)

// killGrace is how long kiwi gets after SIGTERM to end before the whole
// process group is killed.
const killGrace = 10 * time.Second

// proxyEnv are passed through to kiwi, which downloads packages.
var proxyEnv = []string{"http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"}

// commandEnv is the complete environment of kiwi: nothing else is
// inherited, so a build does not depend on who started it. HOME and
// GNUPGHOME point into the target's work directory because kiwi runs gpg
// to import the repository keys and rpmbuild to bundle the image, and
// neither may touch (or depend on) root's real home.
func commandEnv(home, gnupg string) []string {
	env := []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
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

// run runs argv with stdout and stderr to the given writers. It returns
// the exit code of a command that ran and ended on its own (a non-zero
// code is not an error), and an error when the command could not start or
// was cancelled through ctx.
//
// The command gets its own process group, PID namespace and mount
// namespace. kiwi bind-mounts /dev, /proc, /sys and its cache into the
// image root: in a mount namespace of its own none of those mounts is ever
// visible to the runner, and all of them vanish with the build, even when
// kiwi is killed. kiwi is PID 1 of its PID namespace, so when it ends the
// kernel kills whatever it left, including daemons that escaped the
// process group with setsid (the gpg-agent its key import starts). On
// cancel the group gets SIGTERM and, after killGrace, SIGKILL.
func run(ctx context.Context, env []string, dir string, stdout, stderr io.Writer, argv ...string) (int, error) {
	if len(argv) == 0 {
		return -1, errors.New("run: empty command")
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = env
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.SysProcAttr = namespaces()
	proc.Group(cmd, killGrace)
	err := cmd.Start()
	if err != nil {
		if errors.Is(err, syscall.EPERM) {
			return -1, fmt.Errorf("start %s: %w (image builds need root)", argv[0], err)
		}
		return -1, fmt.Errorf("start %s: %w", argv[0], err)
	}
	err = cmd.Wait()
	_ = proc.KillGroup(cmd.Process.Pid, syscall.SIGKILL)
	if ctx.Err() != nil {
		return -1, fmt.Errorf("%s: %w", argv[0], context.Cause(ctx))
	}
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0, nil
	case errors.As(err, &exit):
		if ws, ok := exit.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal()), nil
		}
		return exit.ExitCode(), nil
	}
	return -1, fmt.Errorf("%s: %w", argv[0], err)
}
