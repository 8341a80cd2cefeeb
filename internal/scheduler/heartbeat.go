package scheduler

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/cloud-builder/cb/internal/message"
)

// startHeartbeat publishes a heartbeat now and every HeartbeatInterval
// until the returned stop is called; stop publishes a last one marked
// stopping, so readers learn at once that the runner left.
func (s *Scheduler) startHeartbeat(ctx context.Context) (stop func()) {
	if s.cfg.Publisher == nil {
		return func() {}
	}
	identity := message.Identity(message.ServiceScheduler, s.cfg.ThisHost, "(system)")
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(s.cfg.HeartbeatInterval)
		defer t.Stop()
		for {
			s.beat(ctx, identity, false)
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
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
		s.beat(sctx, identity, true)
	}
}

// Heartbeat is the runner's current heartbeat message.
func (s *Scheduler) Heartbeat(identity string, stopping bool) *message.Heartbeat {
	s.mu.Lock()
	running := make([]string, 0, len(s.running))
	for _, r := range s.running {
		running = append(running, r.t.Project+"@"+r.t.Profile)
	}
	waiting := len(s.waiting)
	s.mu.Unlock()
	slices.Sort(running)
	return &message.Heartbeat{
		SchemaVersion: message.SchemaVersion, Identity: identity, RunnerGroup: s.cfg.RunnerGroup,
		SourceIP: s.cfg.ThisHost, ArtifactURL: s.cfg.ArtifactURL, BuildLimit: s.cfg.BuildLimit,
		Interval: s.cfg.HeartbeatInterval.Seconds(), QueueLag: s.lag.Load(), Running: running,
		Waiting: waiting, Stopping: stopping, Time: message.FormatTime(time.Now()),
	}
}

func (s *Scheduler) beat(ctx context.Context, identity string, stopping bool) {
	data, err := message.Encode(s.Heartbeat(identity, stopping))
	if err != nil {
		s.logger.Warn("encode heartbeat", "err", err)
		return
	}
	pctx, cancel := context.WithTimeout(ctx, s.cfg.HeartbeatInterval)
	defer cancel()
	if err := s.cfg.Publisher.Publish(pctx, message.TopicHeartbeat, data); err != nil && ctx.Err() == nil {
		s.logger.Warn("heartbeat not sent", "err", err)
	}
}
