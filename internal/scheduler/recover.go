package scheduler

import (
	"context"
	"time"

	"github.com/cloud-builder/cb/internal/journal"
	"github.com/cloud-builder/cb/internal/target"
)

// Recover settles the journal after a start: final responses recorded but
// not sent are sent, jobs still running from before a scheduler crash are
// adopted, and requests whose job is gone are queued to run again. Of
// several pending requests for one target only the newest is built.
func (s *Scheduler) Recover(ctx context.Context) error {
	pending, err := s.journal.Pending()
	if err != nil {
		return err
	}
	_ = s.journal.Prune(time.Now().Add(-7 * 24 * time.Hour))
	newest := map[string]*journal.Entry{}
	for _, e := range pending { // oldest first
		t, err := target.ForRequest(s.cfg.RunnerRoot, &e.Request)
		if err != nil {
			s.abandon(ctx, e, "invalid target: "+err.Error())
			continue
		}
		if e.State == journal.Finished {
			s.resend(ctx, e, t)
			continue
		}
		if e.State == journal.Running && jobAlive(e.PID, e.Path()) {
			// Adopted below; the job itself stops if this runner
			// was away from the broker for too long.
		} else if s.elsewhere(ctx, e) {
			continue
		}
		if old := newest[t.Dir()]; old != nil {
			s.abandon(ctx, old, "superseded by request "+e.Request.RequestID)
		}
		newest[t.Dir()] = e
	}
	for dir, e := range newest {
		t, _ := target.ForRequest(s.cfg.RunnerRoot, &e.Request)
		if e.State == journal.Running && jobAlive(e.PID, e.Path()) {
			s.logger.Info("adopting build job that survived a scheduler restart", "request_id", e.Request.RequestID, "pid", e.PID, "target", t.ID())
			r := &run{entry: e, t: t, pid: e.PID, started: time.Now(), done: make(chan struct{})}
			s.track(r)
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				for jobAlive(r.pid, e.Path()) {
					time.Sleep(time.Second)
				}
				s.exited(r)
			}()
			continue
		}
		s.logger.Info("resuming journaled build", "request_id", e.Request.RequestID, "state", e.State, "target", t.ID())
		_ = dir
		s.mu.Lock()
		s.waiting = append(s.waiting, e)
		s.mu.Unlock()
	}
	return nil
}
