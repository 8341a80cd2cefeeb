package job

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestFenceStopsTheJobWhenTheLeaseGoesStale(t *testing.T) {
	lease := filepath.Join(t.TempDir(), "heartbeat.lease")
	if err := os.WriteFile(lease, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, stop := fence(context.Background(), lease, 300*time.Millisecond, slog.New(slog.DiscardHandler))
	defer stop()
	// Renewed: the job goes on.
	for range 6 {
		time.Sleep(100 * time.Millisecond)
		now := time.Now()
		if err := os.Chtimes(lease, now, now); err != nil {
			t.Fatal(err)
		}
	}
	if ctx.Err() != nil {
		t.Fatalf("fenced while the lease was renewed: %v", context.Cause(ctx))
	}
	// No longer renewed: the job is stopped with ErrFenced.
	select {
	case <-ctx.Done():
	case <-time.After(3 * time.Second):
		t.Fatal("not fenced after the lease went stale")
	}
	if !errors.Is(context.Cause(ctx), ErrFenced) {
		t.Fatalf("cause = %v", context.Cause(ctx))
	}
}

func TestFenceOffWithoutLease(t *testing.T) {
	ctx, stop := fence(context.Background(), "", time.Millisecond, slog.New(slog.DiscardHandler))
	defer stop()
	time.Sleep(20 * time.Millisecond)
	if ctx.Err() != nil {
		t.Fatal("fenced without a lease")
	}
}
