package scheduler

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"syscall"
	"time"

	"github.com/cloud-builder/cb/internal/broker"
	"github.com/cloud-builder/cb/internal/journal"
	"github.com/cloud-builder/cb/internal/metrics"
	"github.com/cloud-builder/cb/internal/proc"
)

// checkFence gives up the waiting requests once heartbeats have failed
// for FenceAfter: the owners of their partitions will build them. Running
// jobs see the stale lease and stop themselves.
func (s *Scheduler) checkFence(ctx context.Context) {
	s.mu.Lock()
	if s.fenced || s.lastBeat.IsZero() || time.Since(s.lastBeat) <= s.cfg.FenceAfter {
		s.mu.Unlock()
		return
	}
	s.fenced = true
	since := time.Since(s.lastBeat)
	waiting := s.waiting
	s.waiting = nil
	for id, r := range s.unsent {
		// Built, but the answer could not be sent: another runner
		// will build it, and only its answer may go out.
		waiting = append(waiting, r.entry)
		delete(s.unsent, id)
	}
	s.mu.Unlock()
	s.logger.Warn("heartbeats have not reached the broker; giving up this runner's requests, the other runners of the group build them",
		"since", since.Round(time.Second), "fence_after", s.cfg.FenceAfter, "waiting_released", len(waiting))
	for _, e := range waiting {
		if err := e.Advance(journal.Released); err != nil {
			s.logger.Error("journal", "err", err)
			continue
		}
		s.settle(ctx, e)
	}
}

// checkWatched looks at the requests of this runner's partitions that
// other runners build: one with a final response is committed; one that
// no heartbeat or response named for StuckTimeout is built here, once the
// group coordinator confirmed that this runner still owns its partition.
func (s *Scheduler) checkWatched(ctx context.Context) {
	s.mu.Lock()
	if len(s.watched) == 0 || s.fenced {
		s.mu.Unlock()
		return
	}
	ids := make([]string, 0, len(s.watched))
	for id := range s.watched {
		ids = append(ids, id)
	}
	s.mu.Unlock()
	l := s.cfg.Ledger
	if l == nil {
		return
	}
	if err := s.syncLedger(ctx, false); err != nil {
		return
	}
	owner, _ := s.cfg.Consumer.(Owner)
	var assigned map[string][]int32
	if owner != nil {
		assigned = owner.Assigned()
	}
	for _, id := range ids {
		s.mu.Lock()
		w := s.watched[id]
		s.mu.Unlock()
		if w == nil {
			continue
		}
		drop := func() {
			s.mu.Lock()
			delete(s.watched, id)
			s.mu.Unlock()
		}
		logger := s.logger.With("request_id", id, "partition", w.rec.Partition, "offset", w.rec.Offset)
		if owner != nil && !slices.Contains(assigned[w.rec.Topic], w.rec.Partition) {
			logger.Debug("partition moved away; its new owner watches the request")
			drop()
			continue
		}
		if l.Final(id) {
			logger.Info("request answered by the runner that built it; committing it")
			drop()
			s.ack(ctx, w.rec)
			continue
		}
		if host, _, ok := l.Elsewhere(id, s.cfg.StuckTimeout); ok {
			s.mu.Lock()
			w.host = host
			s.mu.Unlock()
			continue
		}
		if owner != nil {
			if err := owner.Confirm(ctx, w.rec); errors.Is(err, broker.ErrNotOwner) {
				logger.Info("not taking the request over: this runner no longer owns its partition", "err", err)
				drop()
				continue
			} else if err != nil {
				logger.Warn("cannot confirm the partition is still ours; trying again", "err", err)
				continue
			}
		}
		logger.Warn("no heartbeat or response names the request any more; building it here", "runner", w.host, "stuck_timeout", s.cfg.StuckTimeout)
		metrics.Redispatched.WithLabelValues(s.cfg.RunnerGroup).Inc()
		drop()
		s.defer_([]broker.Record{w.rec})
	}
}

// lastOutput is when the job of r last wrote to one of its logs.
func (s *Scheduler) lastOutput(r *run) time.Time {
	last := r.started
	for _, p := range []string{r.t.RunLog(), r.t.PrepareLog(), r.t.BuildLog()} {
		if fi, err := os.Stat(p); err == nil && fi.ModTime().After(last) {
			last = fi.ModTime()
		}
	}
	return last
}

// checkIdle ends jobs whose logs stayed idle longer than the log idle
// limit plus a grace period: a build that hangs without output would
// otherwise hold its slot, and its requester, forever.
func (s *Scheduler) checkIdle() {
	if s.cfg.LogIdleLimit <= 0 {
		return
	}
	s.mu.Lock()
	runs := make([]*run, 0, len(s.running))
	for _, r := range s.running {
		if r.idle == 0 && !r.reset {
			runs = append(runs, r)
		}
	}
	s.mu.Unlock()
	for _, r := range runs {
		idle := time.Since(s.lastOutput(r))
		if idle <= s.cfg.LogIdleLimit+idleGrace(s.cfg.LogIdleLimit) {
			continue
		}
		s.logger.Warn("ending a build whose logs stayed idle", "request_id", r.entry.Request.RequestID, "target", r.t.ID(), "pid", r.pid,
			"idle", idle.Round(time.Second), "log_idle_limit", s.cfg.LogIdleLimit)
		s.mu.Lock()
		r.idle = idle
		s.mu.Unlock()
		_ = proc.KillGroup(r.pid, syscall.SIGKILL)
	}
}

// capacityChecker is the optional part of a Consumer that describes its
// group; *broker.Consumer satisfies it.
type capacityChecker interface {
	Capacity(ctx context.Context) (broker.Capacity, error)
}

// checkCapacity updates the lag metric and warns when this runner owns no
// partition because its group has more runners than its topic has
// partitions.
func (s *Scheduler) checkCapacity(ctx context.Context) {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if lc, ok := s.cfg.Consumer.(interface {
		Lag(context.Context) (int64, error)
	}); ok {
		if lag, err := lc.Lag(cctx); err == nil {
			metrics.QueueLag.WithLabelValues(s.cfg.RunnerGroup).Set(float64(lag))
			s.lag.Store(lag)
		}
	}
	cc, ok := s.cfg.Consumer.(capacityChecker)
	if !ok {
		return
	}
	cp, err := cc.Capacity(cctx)
	if err != nil {
		return
	}
	metrics.AssignedPartitions.WithLabelValues(s.cfg.RunnerGroup).Set(float64(cp.Assigned))
	var problem error
	if cp.Assigned == 0 && cp.Members > cp.Partitions {
		problem = fmt.Errorf("runner group topic %s has %d partitions for %d runners: this runner owns none and gets no requests; add partitions to the topic",
			s.cfg.RunnerGroup, cp.Partitions, cp.Members)
	}
	s.mu.Lock()
	was := s.health
	s.health = problem
	s.mu.Unlock()
	switch {
	case problem != nil && (was == nil || was.Error() != problem.Error()):
		s.logger.Warn("no partition for this runner", "topic", s.cfg.RunnerGroup, "partitions", cp.Partitions, "runners", cp.Members, "err", problem)
	case problem == nil && was != nil:
		s.logger.Info("this runner owns partitions again", "topic", s.cfg.RunnerGroup, "partitions", cp.Assigned)
	}
}

// Healthy reports a capacity problem of this runner, for /healthz.
func (s *Scheduler) Healthy(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.health
}
