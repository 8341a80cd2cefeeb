// Package proc runs the external tools of Cloud Builder: every tool is
// started from an argument vector as the leader of its own process group,
// so that cancelling it ends everything it started (compilers, gpg-agent,
// ssh, package manager workers), and its argv is shown to people quoted
// the same way everywhere.
package proc

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// Group makes cmd the leader of a new process group and makes cancelling
// its context end the whole group: SIGTERM, then SIGKILL after grace, or
// SIGKILL at once when grace is 0. cmd must come from
// exec.CommandContext (or Command). Wait returns at most grace + 5s after
// the cancel even when a grandchild keeps the output pipes open. Other
// SysProcAttr fields cmd already has are kept.
func Group(cmd *exec.Cmd, grace time.Duration) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	cmd.Cancel = func() error {
		if cmd.Process == nil {
			return nil
		}
		pid := cmd.Process.Pid
		sig := syscall.SIGKILL
		if grace > 0 {
			sig = syscall.SIGTERM
			go func() {
				time.Sleep(grace)
				_ = KillGroup(pid, syscall.SIGKILL)
			}()
		}
		err := KillGroup(pid, sig)
		if errors.Is(err, syscall.ESRCH) {
			return os.ErrProcessDone
		}
		return err
	}
	cmd.WaitDelay = grace + 5*time.Second
}

// Command is exec.CommandContext with Group applied.
func Command(ctx context.Context, grace time.Duration, argv ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	Group(cmd, grace)
	return cmd
}

// KillGroup sends sig to the process group led by pid. Pids 0 and 1 (and
// negative ones) are refused: a kill of group 0 or -1 would hit the
// caller's own group or every process.
func KillGroup(pid int, sig syscall.Signal) error {
	if pid <= 1 {
		return syscall.ESRCH
	}
	return syscall.Kill(-pid, sig)
}

// Sleep waits for d or until ctx is done; it reports whether the full
// time passed.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
