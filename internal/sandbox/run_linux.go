package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"
)

// Run runs s.Argv in a new sandbox and returns the command's exit status
// (128+N when it was killed by signal N). A non-nil error means the command
// did not finish on its own: the sandbox could not be set up, the context
// was cancelled, or s.Timeout expired (errors.Is(err, ErrTimeout)). In every
// case all processes and mounts of the sandbox are gone when Run returns.
func Run(ctx context.Context, s Spec) (int, error) {
	cs, err := s.check()
	if err != nil {
		return -1, err
	}
	if s.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, s.Timeout, ErrTimeout)
		defer cancel()
	}
	grace := s.KillGrace
	if grace <= 0 {
		grace = DefaultKillGrace
	}
	payload, err := json.Marshal(cs)
	if err != nil {
		return -1, fmt.Errorf("encode sandbox spec: %w", err)
	}

	specR, specW, err := os.Pipe()
	if err != nil {
		return -1, fmt.Errorf("create sandbox pipe: %w", err)
	}
	// specW is the lifeline: it stays open until the init process is
	// reaped, so the init process sees EOF exactly when this process dies.
	defer specW.Close()
	resR, resW, err := os.Pipe()
	if err != nil {
		specR.Close()
		return -1, fmt.Errorf("create sandbox pipe: %w", err)
	}
	defer resR.Close()

	flags := syscall.CLONE_NEWNS | syscall.CLONE_NEWPID | syscall.CLONE_NEWIPC | syscall.CLONE_NEWUTS
	if !s.Network {
		flags |= syscall.CLONE_NEWNET
	}
	cmd := exec.CommandContext(ctx, "/proc/self/exe")
	cmd.Args = []string{initName}
	cmd.Env = []string{envMarker + "=1"}
	cmd.Dir = "/"
	cmd.Stdout, cmd.Stderr = s.Stdout, s.Stderr
	cmd.ExtraFiles = []*os.File{specR, resW} // fds 3 and 4
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: uintptr(flags),
		Setpgid:    true,
		Pdeathsig:  syscall.SIGKILL,
	}
	// SIGTERM reaches the init process, which forwards it to every
	// process of the sandbox; WaitDelay later kills the init process, and
	// with it the whole PID namespace.
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM) }
	cmd.WaitDelay = grace

	startErr := cmd.Start()
	specR.Close()
	resW.Close()
	if startErr != nil {
		return -1, fmt.Errorf("start sandbox: %w", startErr)
	}
	// The pipe holds far more than a spec; a failed write means the init
	// process already died, which Wait reports.
	_, _ = specW.Write(append(payload, '\n'))

	waitErr := cmd.Wait()
	specW.Close()
	var res childResult
	raw, _ := io.ReadAll(resR)
	haveResult := len(raw) > 0 && json.Unmarshal(raw, &res) == nil

	if ctx.Err() != nil {
		code := -1
		if haveResult {
			code = res.ExitCode
		}
		cause := context.Cause(ctx)
		if errors.Is(cause, ErrTimeout) {
			return code, fmt.Errorf("run %s: %w after %s", s.Argv[0], ErrTimeout, s.Timeout)
		}
		return code, fmt.Errorf("run %s: %w", s.Argv[0], cause)
	}
	switch {
	case haveResult && res.Error != "":
		return -1, fmt.Errorf("set up sandbox: %s", res.Error)
	case haveResult:
		return res.ExitCode, nil
	case waitErr != nil:
		return -1, fmt.Errorf("sandbox init: %w", waitErr)
	}
	return -1, fmt.Errorf("sandbox init: exited without a result (does the program call sandbox.Init first in main?)")
}
