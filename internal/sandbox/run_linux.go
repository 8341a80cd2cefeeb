package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cloud-builder/cb/internal/cgroup"
)

// Run runs s.Argv in a new sandbox and returns the command's exit status
// (128+N when it was killed by signal N). A non-nil error means the command
// did not finish on its own: the sandbox could not be set up, the context
// was cancelled, or a limit ended it: s.Timeout (ErrTimeout),
// s.IdleTimeout (ErrIdle), s.MaxWrite (ErrWriteLimit) or the memory limit
// (ErrMemoryLimit). In every case all processes and mounts of the sandbox
// are gone when Run returns.
func Run(ctx context.Context, s Spec) (code int, err error) {
	cs, err := s.check()
	if err != nil {
		return -1, err
	}
	ctx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
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

	group, err := newGroup(s.Limits)
	if err != nil {
		specR.Close()
		resW.Close()
		return -1, err
	}
	if group != nil {
		// Whatever the command started, detached or not, dies here.
		defer func() {
			if cerr := group.Close(); cerr != nil {
				err = errors.Join(err, fmt.Errorf("sandbox: %w", cerr))
			}
		}()
	}
	stdout, stderr := s.Stdout, s.Stderr
	var wg sync.WaitGroup
	defer func() {
		stop(nil)
		wg.Wait()
	}()
	if s.IdleTimeout > 0 {
		idle := &activity{}
		idle.touch()
		stdout, stderr = idle.wrap(stdout), idle.wrap(stderr)
		wg.Go(func() { idle.watch(ctx, s.IdleTimeout, stop) })
	}

	flags := syscall.CLONE_NEWNS | syscall.CLONE_NEWPID | syscall.CLONE_NEWIPC | syscall.CLONE_NEWUTS
	if !s.Network {
		flags |= syscall.CLONE_NEWNET
	}
	cmd := exec.CommandContext(ctx, "/proc/self/exe")
	cmd.Args = []string{initName}
	cmd.Env = []string{envMarker + "=1"}
	cmd.Dir = "/"
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.ExtraFiles = []*os.File{specR, resW} // fds 3 and 4
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: uintptr(flags),
		Setpgid:    true,
		Pdeathsig:  syscall.SIGKILL,
	}
	// SIGTERM reaches the init process, which forwards it to every
	// process of the sandbox; WaitDelay later kills the init process, and
	// with it the whole PID namespace.
	// Abandoned work gets no grace.
	cmd.Cancel = func() error {
		if errors.Is(context.Cause(ctx), ErrAbandoned) {
			return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		}
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
	}
	cmd.WaitDelay = grace

	startErr := cmd.Start()
	specR.Close()
	resW.Close()
	if startErr != nil {
		return -1, fmt.Errorf("start sandbox: %w", startErr)
	}
	if group != nil {
		// The init process waits for its spec, so it has started nothing
		// yet: everything it starts is born in the group.
		if err := group.Add(cmd.Process.Pid); err != nil {
			specW.Close()
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			return -1, fmt.Errorf("start sandbox: %w", err)
		}
	}
	if s.MaxWrite > 0 {
		layer := s.Root
		if s.Lower != "" {
			layer = s.Upper
		}
		wg.Go(func() { watchSize(ctx, layer, s.MaxWrite, stop) })
	}
	// The pipe holds far more than a spec; a failed write means the init
	// process already died, which Wait reports.
	_, _ = specW.Write(append(payload, '\n'))

	waitErr := cmd.Wait()
	specW.Close()
	ended, cause := ctx.Err() != nil, context.Cause(ctx)
	stop(nil) // ends the watchers
	oom := group != nil && group.OOMKills() > 0
	var res childResult
	raw, _ := io.ReadAll(resR)
	haveResult := len(raw) > 0 && json.Unmarshal(raw, &res) == nil

	if ended {
		code := -1
		if haveResult {
			code = res.ExitCode
		}
		switch {
		case errors.Is(cause, ErrTimeout):
			return code, fmt.Errorf("run %s: %w after %s", s.Argv[0], ErrTimeout, s.Timeout)
		case errors.Is(cause, ErrIdle):
			return code, fmt.Errorf("run %s: %w for %s (log idle limit)", s.Argv[0], ErrIdle, s.IdleTimeout)
		case errors.Is(cause, ErrWriteLimit):
			return code, fmt.Errorf("run %s: %w (%d bytes)", s.Argv[0], ErrWriteLimit, s.MaxWrite)
		default:
			return code, fmt.Errorf("run %s: %w", s.Argv[0], cause)
		}
	}
	if oom && (!haveResult || res.ExitCode != 0) {
		code := -1
		if haveResult {
			code = res.ExitCode
		}
		return code, fmt.Errorf("run %s: %w (%d bytes)", s.Argv[0], ErrMemoryLimit, s.Limits.Memory)
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

// newGroup makes the sandbox's cgroup. Without limits a host without
// cgroups still runs sandboxes (the PID namespace alone ends every
// process); with limits it must have them.
func newGroup(l cgroup.Limits) (*cgroup.Group, error) {
	if cgroup.Version() == 0 {
		if l != (cgroup.Limits{}) {
			return nil, fmt.Errorf("sandbox limits: %w", cgroup.ErrUnavailable)
		}
		return nil, nil
	}
	g, err := cgroup.New(fmt.Sprintf("sandbox-%d-%d", os.Getpid(), groupSeq.Add(1)), l)
	if err != nil {
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	return g, nil
}

var groupSeq atomic.Int64

// activity records when the command last wrote output.
type activity struct{ last atomic.Int64 }

func (a *activity) touch() { a.last.Store(time.Now().UnixNano()) }

func (a *activity) wrap(w io.Writer) io.Writer {
	if w == nil {
		w = io.Discard
	}
	return activityWriter{a: a, w: w}
}

// watch ends the sandbox with ErrIdle once nothing was written for limit.
func (a *activity) watch(ctx context.Context, limit time.Duration, stop context.CancelCauseFunc) {
	for {
		idle := time.Since(time.Unix(0, a.last.Load()))
		if idle >= limit {
			stop(ErrIdle)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(limit - idle):
		}
	}
}

type activityWriter struct {
	a *activity
	w io.Writer
}

func (w activityWriter) Write(p []byte) (int, error) {
	w.a.touch()
	return w.w.Write(p)
}

// watchSize ends the sandbox with ErrWriteLimit once the files below dir
// take more than max bytes of disk.
func watchSize(ctx context.Context, dir string, max int64, stop context.CancelCauseFunc) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(DiskPollInterval):
		}
		if diskUsage(dir) > max {
			stop(ErrWriteLimit)
			return
		}
	}
}

// diskUsage sums the allocated blocks below dir (hard links counted once).
func diskUsage(dir string) int64 {
	var total int64
	seen := map[uint64]bool{}
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return nil
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return nil
		}
		if st.Nlink > 1 && !d.IsDir() {
			if seen[st.Ino] {
				return nil
			}
			seen[st.Ino] = true
		}
		total += st.Blocks * 512
		return nil
	})
	return total
}
