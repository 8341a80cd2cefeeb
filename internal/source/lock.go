package source

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// lockPollInterval is how often a waiting locker retries. flock has no
// timeout or context; polling with LOCK_NB keeps cancellation prompt, and a
// git fetch or reset takes far longer than one interval anyway.
const lockPollInterval = 50 * time.Millisecond

// checkoutLock is an flock on <dir>.lock. flock locks belong to the open
// file description, so two lockers in one process exclude each other just
// like two processes, and the kernel drops the lock when the process dies:
// a crashed cb-fetch never leaves the checkout locked.
type checkoutLock struct{ f *os.File }

// LockPath is the lock file that guards the checkout at dir.
func LockPath(dir string) string { return filepath.Clean(dir) + ".lock" }

// lockCheckout waits until it holds the lock of dir, exclusive for writers,
// shared for readers, or ctx is done.
func lockCheckout(ctx context.Context, dir string, exclusive bool) (*checkoutLock, error) {
	p := LockPath(dir)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return nil, fmt.Errorf("lock checkout: %w", err)
	}
	// O_CLOEXEC (set by os.OpenFile) keeps git children from inheriting
	// the descriptor and with it the lock.
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock checkout: %w", err)
	}
	how := syscall.LOCK_SH
	if exclusive {
		how = syscall.LOCK_EX
	}
	t := time.NewTicker(lockPollInterval)
	defer t.Stop()
	for {
		err := syscall.Flock(int(f.Fd()), how|syscall.LOCK_NB)
		if err == nil {
			return &checkoutLock{f: f}, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			f.Close()
			return nil, fmt.Errorf("lock checkout %s: %w", p, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("lock checkout %s: %w", p, context.Cause(ctx))
		case <-t.C:
		}
	}
}

// unlock releases the lock; closing the descriptor releases it too, the
// explicit LOCK_UN only makes the order obvious.
func (l *checkoutLock) unlock() {
	_ = syscall.Flock(int(l.f.Fd()), syscall.LOCK_UN)
	_ = l.f.Close()
}
