package scheduler

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cloud-builder/cb/internal/message"
	"github.com/cloud-builder/cb/internal/target"
)

// startHeartbeat publishes a heartbeat now, every HeartbeatInterval and
// at once after kickBeat, until the returned stop is called; stop
// publishes a last one marked stopping, so readers learn at once that the
// runner left. Each heartbeat that reaches the broker renews the lease
// that keeps this runner's jobs going; when none has for FenceAfter, the
// runner fences itself (checkFence).
func (s *Scheduler) startHeartbeat(ctx context.Context) (stop func()) {
	identity := message.Identity(message.ServiceScheduler, s.cfg.ThisHost, "(system)")
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(s.cfg.HeartbeatInterval)
		defer t.Stop()
		for {
			if err := s.beat(ctx, identity, false); err != nil && ctx.Err() == nil {
				s.logger.Warn("heartbeat not sent", "err", err)
			}
			s.checkFence(ctx)
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
			case <-s.beatNow:
			}
		}
	}()
	return func() {
		close(done)
		wg.Wait()
		// The run context is usually cancelled by now: the last beat
		// gets a short one of its own.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		_ = s.beat(sctx, identity, true)
	}
}

// kickBeat asks for a heartbeat now: after a request was accepted, so
// that the other runners learn at once who builds it.
func (s *Scheduler) kickBeat() {
	select {
	case s.beatNow <- struct{}{}:
	default:
	}
}

// Heartbeat is the runner's current heartbeat message.
func (s *Scheduler) Heartbeat(identity string, stopping bool) *message.Heartbeat {
	s.mu.Lock()
	running := make([]string, 0, len(s.running))
	builds := make([]message.HeartbeatBuild, 0, len(s.running)+len(s.waiting))
	for _, r := range s.running {
		running = append(running, r.t.Project+"@"+r.t.Profile)
		builds = append(builds, message.HeartbeatBuild{
			RequestID: r.entry.Request.RequestID, Project: r.entry.Request.Project, Target: r.entry.Request.Profile(),
			State: message.HeartbeatRunning, PID: r.pid, LastOutput: message.FormatTime(s.lastOutput(r)),
		})
	}
	for _, e := range s.waiting {
		builds = append(builds, message.HeartbeatBuild{
			RequestID: e.Request.RequestID, Project: e.Request.Project, Target: e.Request.Profile(),
			State: message.HeartbeatWaiting,
		})
	}
	for _, r := range s.unsent {
		builds = append(builds, message.HeartbeatBuild{
			RequestID: r.entry.Request.RequestID, Project: r.entry.Request.Project, Target: r.entry.Request.Profile(),
			State: message.HeartbeatFinished,
		})
	}
	waiting := len(s.waiting)
	s.mu.Unlock()
	slices.Sort(running)
	slices.SortFunc(builds, func(a, b message.HeartbeatBuild) int { return strings.Compare(a.RequestID, b.RequestID) })
	return &message.Heartbeat{
		SchemaVersion: message.SchemaVersion, Identity: identity, RunnerGroup: s.cfg.RunnerGroup,
		SourceIP: s.cfg.ThisHost, ArtifactURL: s.cfg.ArtifactURL, BuildLimit: s.cfg.BuildLimit,
		Interval: s.cfg.HeartbeatInterval.Seconds(), QueueLag: s.lag.Load(), Running: running,
		Waiting: waiting, Stopping: stopping, Time: message.FormatTime(time.Now()), Builds: builds,
	}
}

// beat publishes one heartbeat and, once the broker has it, renews the
// lease.
func (s *Scheduler) beat(ctx context.Context, identity string, stopping bool) error {
	if s.cfg.Publisher != nil {
		data, err := message.Encode(s.Heartbeat(identity, stopping))
		if err != nil {
			return fmt.Errorf("encode heartbeat: %w", err)
		}
		pctx, cancel := context.WithTimeout(ctx, max(s.cfg.HeartbeatInterval, 2*time.Second))
		defer cancel()
		if err := s.cfg.Publisher.Publish(pctx, message.TopicHeartbeat, data); err != nil {
			return fmt.Errorf("publish heartbeat: %w", err)
		}
	}
	if stopping {
		return nil
	}
	return s.renew()
}

// renew records that a heartbeat reached the broker: in the lease file
// that the jobs watch, and for checkFence.
func (s *Scheduler) renew() error {
	now := time.Now()
	if err := os.WriteFile(target.LeaseFile(s.cfg.RunnerRoot), []byte(now.UTC().Format(time.RFC3339Nano)+"\n"), 0o644); err != nil {
		return fmt.Errorf("renew lease: %w", err)
	}
	s.mu.Lock()
	s.lastBeat = now
	fenced := s.fenced
	s.fenced = false
	s.mu.Unlock()
	if fenced {
		s.logger.Info("heartbeats reach the broker again; taking new work")
	}
	return nil
}
