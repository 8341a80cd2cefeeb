// Package scheduler is cb-scheduler: it consumes its runner group's topic
// as a shared queue, validates each request, records accepted ones in the
// runner's journal and starts a build job process for each, at most
// BuildLimit at a time.
//
// Delivery: a request's offset is committed only once the request has its
// final response on the broker (a rejection, or the build's result). Until
// then the request stays uncommitted in its partition, so when the runner
// dies for good the partition, with the request, moves to another runner
// of the group. The journal makes a crash of this runner cheap (the build
// is resumed or adopted, not started over), and the Ledger, read from
// cb-response and the runner heartbeats, keeps a request whose partition
// moved from being built or answered twice: a request with a final
// response is only committed, a request another runner reports working on
// is watched, and built here only when no heartbeat has named it for
// StuckTimeout. docs/design.md has the whole protocol and its failure cases.
package scheduler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cloud-builder/cb/internal/artifact"
	"github.com/cloud-builder/cb/internal/broker"
	"github.com/cloud-builder/cb/internal/cgroup"
	"github.com/cloud-builder/cb/internal/journal"
	"github.com/cloud-builder/cb/internal/message"
	"github.com/cloud-builder/cb/internal/metrics"
	"github.com/cloud-builder/cb/internal/proc"
	"github.com/cloud-builder/cb/internal/target"
	"github.com/cloud-builder/cb/internal/upload"
)

// Consumer is the runner group's shared-queue consumer; *broker.Consumer
// satisfies it.
type Consumer interface {
	Poll(ctx context.Context) ([]broker.Record, error)
	Ack(ctx context.Context, recs ...broker.Record) error
	Pause()
	Resume()
}

// Owner is the optional part of a Consumer that knows which partitions it
// owns and can prove it to the group coordinator.
type Owner interface {
	Assigned() map[string][]int32
	Confirm(ctx context.Context, rec broker.Record) error
}

// Defaults of the runner-loss settings.
const (
	DefaultHeartbeatInterval = message.HeartbeatInterval
	DefaultStuckTimeout      = 60 * time.Second
	DefaultFenceAfter        = 40 * time.Second
)

// idleGrace is how much longer than the log idle limit the scheduler
// waits before it ends a silent job itself: a job that ends itself at the
// limit gives the better message. A minute, less for short limits.
func idleGrace(limit time.Duration) time.Duration { return min(time.Minute, limit/2) }

// Config wires a scheduler.
type Config struct {
	RunnerGroup string
	RunnerRoot  string
	Sources     string
	ThisHost    string
	HostArch    string // uname -m; default from the kernel
	BuildLimit  int
	PollTimeout time.Duration
	// JobCommand is the argv prefix that starts a job process; the
	// scheduler appends "--journal <entry file>". Typically
	// [cb, job, --runner-root, …].
	JobCommand []string
	// JobEnv is added to the job's environment (secrets go here, not
	// on the argv where every user can read them).
	JobEnv []string
	// UploadSecret is the runner group's upload secret (the collector
	// token). The job gets no secret: the scheduler mints it an upload
	// ticket (upload.MintTicket) bound to its request, project,
	// repository and arch, in the environment as upload.EnvTicket. Empty:
	// no ticket.
	UploadSecret []byte
	// TicketTTL is how long a job's upload ticket is valid;
	// upload.DefaultTicketTTL when zero.
	TicketTTL time.Duration
	// Pull updates the source checkout before a rebuild; nil skips it.
	Pull      func(ctx context.Context) error
	Consumer  Consumer
	Publisher broker.Publisher
	// Ledger, when set, is asked before a request is built or answered
	// (see the package comment). Without it the scheduler trusts its
	// journal alone, which is right only for a group of one runner.
	Ledger *Ledger
	// HeartbeatInterval is the period of the heartbeat on
	// message.TopicHeartbeat; 0 means message.HeartbeatInterval.
	HeartbeatInterval time.Duration
	// StuckTimeout is how long a request another runner works on may go
	// unnamed by heartbeats and responses before the owner of its
	// partition builds it here.
	StuckTimeout time.Duration
	// FenceAfter is how long the heartbeat may fail to reach the broker
	// before this runner gives its requests up (jobs stop, waiting
	// requests are released). It must stay below StuckTimeout, so that a
	// runner cut off from the broker stops before another takes over.
	FenceAfter time.Duration
	// LogIdleLimit ends a running job whose logs stayed unchanged for
	// this long (plus a minute's grace); 0 leaves silent jobs alone. The
	// CLI sets it from the runner's one log idle limit setting, the
	// job's (job.DefaultLogIdle, --log-idle-limit, sandbox.log_idle).
	LogIdleLimit time.Duration
	Logger       *slog.Logger
	// StopGrace is how long a stopped job gets between SIGTERM and SIGKILL.
	StopGrace time.Duration
	// ArtifactURL is the base URL of this runner's artifact endpoint,
	// announced in heartbeats; "" when the runner has none.
	ArtifactURL string
}

// Scheduler runs builds for one runner group.
type Scheduler struct {
	cfg     Config
	journal *journal.Journal
	logger  *slog.Logger
	started time.Time

	mu       sync.Mutex
	running  map[string]*run // by target dir
	waiting  []*journal.Entry
	held     map[string]broker.Record // delivered, journaled here, not yet committed; by request id
	watched  map[string]*watch        // delivered, built by another runner; by request id
	backlog  []broker.Record          // delivered, not handled yet (handle failed)
	unsent   map[string]*run          // finished, final response not out yet; by request id
	stopping bool
	lastBeat time.Time // last heartbeat that reached the broker
	fenced   bool      // lastBeat older than FenceAfter: requests released
	health   error     // capacity problem, for /healthz
	wg       sync.WaitGroup
	changed  chan struct{} // a job ended: re-check the limit
	lag      atomic.Int64  // the group's queue lag, -1 while unknown
	beatNow  chan struct{} // publish a heartbeat at once
}

type run struct {
	entry   *journal.Entry
	t       target.Target
	pid     int
	started time.Time
	reset   bool // killed for a newer request of the same target
	idle    time.Duration
	done    chan struct{}
}

// watch is a request of one of this runner's partitions that another
// runner builds.
type watch struct {
	rec  broker.Record
	host string
}

// New validates cfg and opens the journal.
func New(cfg Config) (*Scheduler, error) {
	if cfg.RunnerGroup == "" {
		cfg.RunnerGroup = message.TopicDefaultRequests
	}
	if err := message.ValidateName(cfg.RunnerGroup); err != nil {
		return nil, fmt.Errorf("runner group: %w", err)
	}
	if cfg.BuildLimit <= 0 {
		cfg.BuildLimit = 10
	}
	if cfg.PollTimeout <= 0 {
		cfg.PollTimeout = 5 * time.Second
	}
	if cfg.StopGrace <= 0 {
		cfg.StopGrace = 20 * time.Second
	}
	if cfg.HeartbeatInterval <= 0 {
		cfg.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if cfg.StuckTimeout <= 0 {
		cfg.StuckTimeout = DefaultStuckTimeout
	}
	if cfg.FenceAfter <= 0 {
		cfg.FenceAfter = DefaultFenceAfter
	}
	if err := CheckTimeouts(cfg.HeartbeatInterval, cfg.FenceAfter, cfg.StuckTimeout); err != nil {
		return nil, err
	}
	if cfg.HostArch == "" {
		cfg.HostArch = proc.HostArch()
	}
	if cfg.ThisHost == "" {
		// Heartbeats and the ledger tell runners apart by it.
		cfg.ThisHost, _ = os.Hostname()
	}
	if len(cfg.JobCommand) == 0 {
		return nil, errors.New("scheduler: no job command")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	j, err := journal.Open(cfg.RunnerRoot)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(cfg.RunnerRoot, "scheduled"), 0o755); err != nil {
		return nil, fmt.Errorf("scheduler: %w", err)
	}
	s := &Scheduler{
		cfg: cfg, journal: j, logger: cfg.Logger.With("runner_group", cfg.RunnerGroup),
		running: map[string]*run{}, held: map[string]broker.Record{}, watched: map[string]*watch{}, unsent: map[string]*run{},
		changed: make(chan struct{}, 1), beatNow: make(chan struct{}, 1),
	}
	s.lag.Store(-1)
	return s, nil
}

// CheckTimeouts checks that the runner-loss settings fit together: a
// runner must notice that its heartbeats fail, and stop, before the
// others take its requests over.
func CheckTimeouts(heartbeat, fenceAfter, stuck time.Duration) error {
	if fenceAfter < 2*heartbeat {
		return fmt.Errorf("fence time %s must be at least twice the heartbeat interval %s", fenceAfter, heartbeat)
	}
	if stuck < fenceAfter+heartbeat {
		return fmt.Errorf("stuck timeout %s must exceed the fence time %s by at least a heartbeat interval %s", stuck, fenceAfter, heartbeat)
	}
	return nil
}

// Run recovers the journal, then consumes requests until ctx is done. On
// return every job it started has been stopped; their entries stay in the
// journal and are resumed by the next Run.
func (s *Scheduler) Run(ctx context.Context) error {
	if s.cfg.Consumer == nil {
		return errors.New("scheduler: no consumer")
	}
	s.started = time.Now()
	if err := s.syncLedger(ctx, true); err != nil {
		return err
	}
	if err := s.Recover(ctx); err != nil {
		return err
	}
	// No job starts before a heartbeat reached the broker (startWaiting
	// checks): jobs stop themselves when the lease it renews is stale.
	// The last heartbeat, marked stopping, goes out after the jobs stopped.
	stopBeat := s.startHeartbeat(ctx)
	defer stopBeat()
	defer s.stopAll()
	paused := false
	var lastLag, lastWatch, lastIdle time.Time
	for ctx.Err() == nil {
		if time.Since(lastWatch) >= time.Second {
			lastWatch = time.Now()
			s.checkWatched(ctx)
			s.resendUnsent(ctx)
		}
		if time.Since(lastIdle) >= min(10*time.Second, max(s.cfg.LogIdleLimit/4, 100*time.Millisecond)) {
			lastIdle = time.Now()
			s.checkIdle()
		}
		s.startWaiting(ctx)
		full := s.load() >= s.cfg.BuildLimit
		if full != paused {
			if full {
				s.cfg.Consumer.Pause()
				s.logger.Info("build limit reached, pausing consumption", "limit", s.cfg.BuildLimit)
			} else {
				s.cfg.Consumer.Resume()
				s.logger.Info("resuming consumption")
			}
			paused = full
		}
		if time.Since(lastLag) > s.cfg.HeartbeatInterval {
			lastLag = time.Now()
			s.checkCapacity(ctx)
		}
		if recs := s.takeBacklog(); len(recs) > 0 {
			s.handleAll(ctx, recs)
			continue
		}
		// Wake at least every second for the watch list.
		wait := min(s.cfg.PollTimeout, time.Second)
		pctx, cancel := context.WithTimeout(ctx, wait)
		if paused {
			// Nothing to fetch; wait for a job to end, keep the group
			// membership alive through the client's heartbeats.
			select {
			case <-pctx.Done():
			case <-s.changed:
			}
			cancel()
			continue
		}
		recs, err := s.cfg.Consumer.Poll(pctx)
		cancel()
		if err != nil && ctx.Err() == nil && !errors.Is(err, context.DeadlineExceeded) {
			s.logger.Warn("poll failed, retrying", "err", err)
			proc.Sleep(ctx, time.Second)
			continue
		}
		s.handleAll(ctx, recs)
	}
	return nil
}

// handleAll handles a batch of delivered records. What cannot be handled
// now (broker or disk trouble) goes to the backlog and is tried again.
func (s *Scheduler) handleAll(ctx context.Context, recs []broker.Record) {
	if len(recs) == 0 {
		return
	}
	if err := s.syncLedger(ctx, false); err != nil {
		s.logger.Warn("cannot read what the cluster answered; requests wait", "err", err)
		s.defer_(recs)
		proc.Sleep(ctx, 2*time.Second)
		return
	}
	for i, rec := range recs {
		if ctx.Err() != nil {
			s.defer_(recs[i:])
			return
		}
		if err := s.handle(ctx, rec); err != nil {
			s.logger.Error("request not handled, trying again", "err", err, "offset", rec.Offset, "partition", rec.Partition)
			s.defer_(recs[i:])
			proc.Sleep(ctx, 2*time.Second)
			return
		}
	}
}

func (s *Scheduler) defer_(recs []broker.Record) {
	s.mu.Lock()
	s.backlog = append(s.backlog, recs...)
	s.mu.Unlock()
}

func (s *Scheduler) takeBacklog() []broker.Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	recs := s.backlog
	s.backlog = nil
	return recs
}

// syncLedger brings the ledger up to date; at start it waits for the
// broker as long as it takes.
func (s *Scheduler) syncLedger(ctx context.Context, patient bool) error {
	if s.cfg.Ledger == nil {
		return nil
	}
	for {
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := s.cfg.Ledger.Sync(sctx)
		cancel()
		if err == nil || !patient || ctx.Err() != nil {
			return err
		}
		s.logger.Warn("waiting for the broker to read cb-response", "err", err)
		proc.Sleep(ctx, time.Second)
	}
}

// load is the number of running plus journaled-but-waiting builds.
func (s *Scheduler) load() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.running) + len(s.waiting)
}

// ack commits a record whose request has its final response.
func (s *Scheduler) ack(ctx context.Context, rec broker.Record) {
	if err := s.cfg.Consumer.Ack(ctx, rec); err != nil {
		s.logger.Warn("commit failed; the request may be delivered again and is then recognised as answered", "err", err, "partition", rec.Partition, "offset", rec.Offset)
	}
}

// settle commits the request's record, if this runner holds one, once the
// request is answered (Responded) or given up (Released).
func (s *Scheduler) settle(ctx context.Context, e *journal.Entry) {
	id := e.Request.RequestID
	s.mu.Lock()
	rec, ok := s.held[id]
	delete(s.held, id)
	if ok && e.State == journal.Released {
		// Another runner builds it; this runner still owns the
		// record and watches for its final response.
		s.watched[id] = &watch{rec: rec}
		ok = false
	}
	s.mu.Unlock()
	if ok {
		s.ack(ctx, rec)
	}
}

// handle validates one request and journals or answers it. An error means
// it must be handled again later.
func (s *Scheduler) handle(ctx context.Context, rec broker.Record) error {
	req, err := message.DecodeBuildRequest(rec.Value)
	if err != nil {
		id := message.PeekRequestID(rec.Value)
		s.logger.Warn("invalid build request", "request_id", id, "err", err)
		if id != "" && (s.cfg.Ledger == nil || !s.cfg.Ledger.Final(id)) {
			// Nobody to answer without an id; committed either way
			// so that it does not block the partition.
			if err := s.publish(ctx, &message.Response{
				SchemaVersion: message.SchemaVersion, RequestID: id,
				Identity:     message.Identity(message.ServiceScheduler, s.cfg.ThisHost, "(system)"),
				ResponseCode: message.InvalidRequest, Message: "Invalid build request: " + err.Error(),
			}); err != nil {
				return err
			}
		}
		s.ack(ctx, rec)
		return nil
	}
	if rec.Header(broker.HeaderFreshBuildRoot) == "true" {
		req.FreshBuildRoot = true
	}
	id := req.RequestID
	logger := s.logger.With("request_id", id, "project", req.Project, "profile", req.Profile())
	resp := &message.Response{
		SchemaVersion: message.SchemaVersion, RequestID: id, Project: req.Project,
		Identity: message.Identity(message.ServiceScheduler, s.cfg.ThisHost, req.Name()),
		Target:   responseTarget(req),
	}
	// Delivered before: this runner journaled it (a restart, or its
	// partition came back to it).
	if e, err := s.journal.Get(id); err == nil && e.State != journal.Released {
		if e.State == journal.Responded {
			logger.Info("request delivered again but answered already; committing it")
			s.ack(ctx, rec)
			return nil
		}
		logger.Info("request delivered again and journaled here, not starting it twice", "state", e.State)
		s.mu.Lock()
		s.held[id] = rec
		s.mu.Unlock()
		return nil
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if l := s.cfg.Ledger; l != nil {
		if l.Final(id) {
			logger.Info("request delivered again but answered already by a runner; committing it")
			s.ack(ctx, rec)
			return nil
		}
		if host, age, ok := l.Elsewhere(id, s.cfg.StuckTimeout); ok {
			logger.Info("request delivered again while another runner builds it; watching it", "runner", host, "last_heard", age.Round(time.Second))
			s.mu.Lock()
			s.watched[id] = &watch{rec: rec, host: host}
			s.mu.Unlock()
			return nil
		}
	}
	if req.RunnerGroup != s.cfg.RunnerGroup && s.cfg.RunnerGroup != "local" {
		resp.ResponseCode = message.PackageTargetNotConfigured
		if req.IsImage() {
			resp.ResponseCode = message.ImageTargetNotConfigured
		}
		resp.Message = fmt.Sprintf("Request for runner group %s arrived at runner group %s", req.RunnerGroup, s.cfg.RunnerGroup)
		logger.Warn("request for another runner group")
		return s.reject(ctx, rec, resp)
	}
	if s.cfg.Pull != nil && isRebuild(req.Action) {
		if err := s.cfg.Pull(ctx); err != nil {
			logger.Warn("source checkout update failed, validating against the current checkout", "err", err)
		}
	}
	v := Validate(s.cfg.Sources, s.cfg.RunnerGroup, s.cfg.HostArch, req)
	resp.ResponseCode, resp.Message = v.Code, v.Message
	if !v.Accepted() {
		logger.Info("request rejected", "response_code", v.Code, "reason", v.Message)
		return s.reject(ctx, rec, resp)
	}
	e, existed, err := s.journal.Add(req, false)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.held[id] = rec
	s.mu.Unlock()
	if existed {
		return nil // journaled between Get and Add: cannot happen with one scheduler per root
	}
	logger.Info("request accepted")
	if err := s.publish(ctx, resp); err != nil {
		logger.Warn("accepted response not sent", "err", err)
	}
	s.enqueue(ctx, e)
	s.kickBeat()
	return nil
}

// reject publishes a final rejection and commits the request.
func (s *Scheduler) reject(ctx context.Context, rec broker.Record, resp *message.Response) error {
	if err := s.publish(ctx, resp); err != nil {
		return err
	}
	s.ack(ctx, rec)
	return nil
}

func isRebuild(action string) bool {
	switch action {
	case message.ActionPackageRebuild, message.ActionPackageSourceChange,
		message.ActionImageRebuild, message.ActionImageSourceChange:
		return true
	}
	return false
}

func responseTarget(req *message.BuildRequest) *message.Target {
	if req.IsImage() {
		return &message.Target{Arch: req.Image.Arch, Selection: req.Image.Selection}
	}
	return &message.Target{Arch: req.Package.Arch, Dist: req.Package.Dist}
}

func (s *Scheduler) publish(ctx context.Context, resp *message.Response) error {
	if s.cfg.Publisher == nil {
		return nil
	}
	data, err := message.Encode(resp)
	if err != nil {
		return err
	}
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := s.cfg.Publisher.Publish(pctx, message.TopicResponse, data); err != nil {
		return fmt.Errorf("publish %s: %w", resp.ResponseCode, err)
	}
	return nil
}

// enqueue resets a running build of the same target, then queues e.
func (s *Scheduler) enqueue(ctx context.Context, e *journal.Entry) {
	t, err := target.ForRequest(s.cfg.RunnerRoot, &e.Request)
	if err != nil {
		s.abandon(ctx, e, "invalid target: "+err.Error())
		return
	}
	s.mu.Lock()
	old := s.running[t.Dir()]
	// A waiting request for the same target is superseded as well.
	var superseded []*journal.Entry
	kept := s.waiting[:0]
	for _, w := range s.waiting {
		if wt, err := target.ForRequest(s.cfg.RunnerRoot, &w.Request); err == nil && wt.Dir() == t.Dir() {
			superseded = append(superseded, w)
			continue
		}
		kept = append(kept, w)
	}
	s.waiting = kept
	s.mu.Unlock()
	for _, w := range superseded {
		s.abandon(ctx, w, "superseded by request "+e.Request.RequestID)
	}
	if old != nil {
		s.reset(ctx, old, e)
	}
	s.mu.Lock()
	s.waiting = append(s.waiting, e)
	s.mu.Unlock()
}

// reset kills the running build of old's target because e asks for the
// same target again, and answers for it.
func (s *Scheduler) reset(ctx context.Context, old *run, e *journal.Entry) {
	s.mu.Lock()
	old.reset = true
	s.mu.Unlock()
	s.logger.Info("resetting running build", "target", old.t.ID(), "pid", old.pid, "old_request", old.entry.Request.RequestID, "new_request", e.Request.RequestID)
	_ = s.publish(ctx, &message.Response{
		SchemaVersion: message.SchemaVersion, RequestID: e.Request.RequestID, Project: e.Request.Project,
		Identity:     message.Identity(message.ServiceScheduler, s.cfg.ThisHost, e.Request.Name()),
		ResponseCode: message.ResetRunningBuild, Target: responseTarget(&e.Request),
		Message: fmt.Sprintf("Kill job group for PID:%d prior rebuild", old.pid),
	})
	_ = proc.KillGroup(old.pid, syscall.SIGKILL)
	<-old.done
	s.closeGroups(old)
}

// closeGroups kills and removes the cgroups a job made for its builds and
// buildroot tools: a job killed with SIGKILL cannot, and processes that
// left its process group live on in them.
func (s *Scheduler) closeGroups(r *run) {
	if r.pid <= 1 {
		return
	}
	if err := cgroup.CloseOwned(r.pid); err != nil {
		s.logger.Warn("kill the cgroups of a job", "target", r.t.ID(), "pid", r.pid, "err", err)
	}
}

// abandon gives a journaled request its final failure response. Like a
// job's, it is recorded in the target's result file before the entry is
// marked finished, so a failed publish is resent with this reason.
func (s *Scheduler) abandon(ctx context.Context, e *journal.Entry, why string) {
	code := message.PackageBuildFailed
	if e.Request.IsImage() {
		code = message.ImageBuildFailed
	}
	resp := &message.Response{
		SchemaVersion: message.SchemaVersion, RequestID: e.Request.RequestID, Project: e.Request.Project,
		Identity:     message.Identity(message.ServiceScheduler, s.cfg.ThisHost, e.Request.Name()),
		ResponseCode: code, Message: "Build not completed: " + why,
	}
	var tp *target.Target
	if t, err := target.ForRequest(s.cfg.RunnerRoot, &e.Request); err == nil {
		tp = &t
	}
	logger := s.logger.With("request_id", e.Request.RequestID)
	err := e.Finish(ctx, s.cfg.Publisher, tp, resp, logger)
	if errors.Is(err, journal.ErrResultFile) {
		// No result file (full disk?): still end the request.
		logger.Warn("result file not written", "err", err)
		err = e.Finish(ctx, s.cfg.Publisher, nil, resp, logger)
	}
	if err != nil {
		if e.State != journal.Finished {
			logger.Error("journal", "err", err)
			return
		}
		logger.Warn("final response not sent; trying again", "err", err)
		if tp != nil {
			s.retryLater(e, *tp)
		}
		return
	}
	metrics.BuildsFinished.WithLabelValues(s.cfg.RunnerGroup, "failed").Inc()
	s.settle(ctx, e)
}

// startWaiting starts queued entries while below the build limit. Right
// before a start the ledger is asked once more: a request answered or
// taken over by another runner meanwhile is not built here.
func (s *Scheduler) startWaiting(ctx context.Context) {
	synced := false
	for ctx.Err() == nil {
		s.mu.Lock()
		if len(s.waiting) == 0 || len(s.running) >= s.cfg.BuildLimit || s.stopping || s.fenced || s.lastBeat.IsZero() {
			s.mu.Unlock()
			return
		}
		e := s.waiting[0]
		s.mu.Unlock()
		if !synced {
			if err := s.syncLedger(ctx, false); err != nil {
				s.logger.Warn("cannot read what the cluster answered; builds wait", "err", err)
				return
			}
			synced = true
		}
		s.mu.Lock()
		if len(s.waiting) == 0 || s.waiting[0] != e {
			s.mu.Unlock()
			continue
		}
		s.waiting = s.waiting[1:]
		s.mu.Unlock()
		if s.elsewhere(ctx, e) {
			continue
		}
		if err := s.start(e); err != nil {
			s.logger.Error("cannot start build job", "request_id", e.Request.RequestID, "err", err)
			s.abandon(ctx, e, "cannot start build job: "+err.Error())
		}
	}
}

// elsewhere gives e up when the ledger says another runner answered it or
// works on it, and reports whether it did.
func (s *Scheduler) elsewhere(ctx context.Context, e *journal.Entry) bool {
	l := s.cfg.Ledger
	if l == nil {
		return false
	}
	id := e.Request.RequestID
	if l.Final(id) {
		s.logger.Info("request answered by another runner meanwhile; not building it", "request_id", id)
		if err := e.Advance(journal.Responded); err != nil {
			s.logger.Error("journal", "err", err)
		}
		s.settle(ctx, e)
		return true
	}
	if host, age, ok := l.Elsewhere(id, s.cfg.StuckTimeout); ok {
		s.logger.Info("request taken over by another runner; not building it here", "request_id", id, "runner", host, "last_heard", age.Round(time.Second))
		if err := e.Advance(journal.Released); err != nil {
			s.logger.Error("journal", "err", err)
		}
		s.settle(ctx, e)
		return true
	}
	return false
}

// start launches the job process of e as the leader of a new process group.
func (s *Scheduler) start(e *journal.Entry) error {
	t, err := target.ForRequest(s.cfg.RunnerRoot, &e.Request)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(t.Dir()), 0o755); err != nil {
		return err
	}
	argv := append(append([]string{}, s.cfg.JobCommand...), "--journal", e.Path())
	if err := os.WriteFile(t.Script(), []byte(scriptFor(argv)), 0o755); err != nil {
		return fmt.Errorf("write job script: %w", err)
	}
	logf, err := os.OpenFile(t.RunLog(), os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	env, err := s.jobEnv(e, t)
	if err != nil {
		logf.Close()
		return err
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = env
	// Its own process group, so a reset ends every tool it started (see
	// proc.KillGroup); no context, so a scheduler crash does not end it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start job: %w", err)
	}
	logf.Close()
	r := &run{entry: e, t: t, pid: cmd.Process.Pid, started: time.Now(), done: make(chan struct{})}
	s.track(r)
	metrics.BuildsStarted.WithLabelValues(s.cfg.RunnerGroup).Inc()
	s.logger.Info("build job started", "request_id", e.Request.RequestID, "target", t.ID(), "pid", r.pid)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		_ = cmd.Wait()
		s.exited(r)
	}()
	return nil
}

// jobEnv is the environment of e's job: the scheduler's, without the
// upload secret, plus JobEnv and the job's upload ticket.
func (s *Scheduler) jobEnv(e *journal.Entry, t target.Target) ([]string, error) {
	var env []string
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); k != upload.EnvToken && k != upload.EnvTicket {
			env = append(env, kv)
		}
	}
	env = append(env, s.cfg.JobEnv...)
	if len(s.cfg.UploadSecret) == 0 {
		return env, nil
	}
	ttl := s.cfg.TicketTTL
	if ttl <= 0 {
		ttl = upload.DefaultTicketTTL
	}
	ticket, err := upload.MintTicket(s.cfg.UploadSecret, upload.Claims{RequestID: e.Request.RequestID,
		Project: e.Request.Project, RepoPath: t.RepoPath(), Arch: t.Arch(), Expires: time.Now().Add(ttl)})
	if err != nil {
		return nil, fmt.Errorf("start job: %w", err)
	}
	return append(env, upload.EnvTicket+"="+ticket), nil
}

func (s *Scheduler) track(r *run) {
	pid := []byte(strconv.Itoa(r.pid) + "\n")
	_ = os.WriteFile(r.t.PIDFile(), pid, 0o644)
	_ = os.WriteFile(r.t.ScheduledFile(), pid, 0o644)
	s.mu.Lock()
	s.running[r.t.Dir()] = r
	metrics.RunningBuilds.Set(float64(len(s.running)))
	s.mu.Unlock()
}

// exited settles a job process that ended: it reads what the job recorded
// and answers, retries or leaves the entry for resumption.
func (s *Scheduler) exited(r *run) {
	s.mu.Lock()
	delete(s.running, r.t.Dir())
	metrics.RunningBuilds.Set(float64(len(s.running)))
	stopping, reset, idle := s.stopping, r.reset, r.idle
	s.mu.Unlock()
	_ = os.Remove(r.t.ScheduledFile())
	if b, err := os.ReadFile(r.t.PIDFile()); err == nil && strings.TrimSpace(string(b)) == strconv.Itoa(r.pid) {
		_ = os.Remove(r.t.PIDFile())
	}
	defer close(r.done)
	defer s.notify()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e, err := journal.Load(r.entry.Path())
	if err != nil {
		s.logger.Error("journal entry unreadable after job", "path", r.entry.Path(), "err", err)
		return
	}
	s.observe(e)
	switch {
	case e.State == journal.Responded, e.State == journal.Released:
		s.settle(ctx, e)
	case e.State == journal.Finished:
		s.resend(ctx, e, r.t)
	case reset:
		s.abandon(ctx, e, "reset by a newer request for the same target")
	case idle > 0:
		s.abandon(ctx, e, fmt.Sprintf("no build output for %s (log idle limit %s); the build was ended as stuck", idle.Round(time.Second), s.cfg.LogIdleLimit))
	case stopping:
		// A shutdown is not the build's fault: it does not count as
		// an attempt.
		if e.Attempts > 0 {
			e.Attempts--
			_ = e.Save()
		}
		s.logger.Info("build stopped by shutdown, will resume", "request_id", e.Request.RequestID)
	case e.Attempts >= 3:
		s.abandon(ctx, e, fmt.Sprintf("the build job died %d times", e.Attempts))
	default:
		s.logger.Warn("build job died without a final response, starting it again", "request_id", e.Request.RequestID, "attempts", e.Attempts)
		s.mu.Lock()
		s.waiting = append(s.waiting, e)
		s.mu.Unlock()
	}
}

// cacheOutcome is the outcome label of a cache lookup.
func cacheOutcome(hit bool) string {
	if hit {
		return "hit"
	}
	return "miss"
}

func (s *Scheduler) observe(e *journal.Entry) {
	g := s.cfg.RunnerGroup
	if e.Prepare > 0 {
		metrics.PrepareDuration.WithLabelValues(g).Observe(e.Prepare.Seconds())
	}
	if e.Build > 0 {
		metrics.BuildDuration.WithLabelValues(g).Observe(e.Build.Seconds())
	}
	if e.CacheHit != nil {
		metrics.BuildrootCache.WithLabelValues(cacheOutcome(*e.CacheHit)).Inc()
	}
	for layer, hit := range e.Layers {
		metrics.BuildrootLayers.WithLabelValues(layer, cacheOutcome(hit)).Inc()
	}
	if e.State == journal.Finished || e.State == journal.Responded {
		result := "failed"
		if message.IsSuccess(e.Code) {
			result = "succeeded"
		}
		metrics.BuildsFinished.WithLabelValues(g, result).Inc()
	}
}

// resend publishes the final response a job recorded but may not have
// sent: a crash between publishing and journaling leaves that open, so the
// ledger decides. A response already on the broker is not sent again.
func (s *Scheduler) resend(ctx context.Context, e *journal.Entry, t target.Target) {
	if l := s.cfg.Ledger; l != nil {
		if err := s.syncLedger(ctx, false); err != nil {
			s.logger.Warn("cannot check whether the final response is out; trying again", "request_id", e.Request.RequestID, "err", err)
			s.retryLater(e, t)
			return
		}
		if l.Final(e.Request.RequestID) {
			s.logger.Info("final response was sent before the crash; not sending it again", "request_id", e.Request.RequestID)
			if err := e.Advance(journal.Responded); err != nil {
				s.logger.Error("journal", "err", err)
				return
			}
			s.settle(ctx, e)
			return
		}
		if host, _, ok := l.Elsewhere(e.Request.RequestID, s.cfg.StuckTimeout); ok {
			s.logger.Info("request taken over by another runner; its answer counts, not this one", "request_id", e.Request.RequestID, "runner", host)
			if err := e.Advance(journal.Released); err != nil {
				s.logger.Error("journal", "err", err)
				return
			}
			s.settle(ctx, e)
			return
		}
	}
	data, err := os.ReadFile(t.ResultFile())
	if err == nil {
		var resp *message.Response
		resp, err = message.DecodeResponse(data)
		if err == nil && resp.RequestID != e.Request.RequestID {
			err = fmt.Errorf("result file belongs to request %s", resp.RequestID)
		}
	}
	if err != nil {
		s.abandon(ctx, e, "result file lost: "+err.Error())
		return
	}
	// As the job would have: the response names this runner's artifact
	// endpoint for the target, where cb-depsolver reads the solver file.
	pub := s.cfg.Publisher
	if s.cfg.ArtifactURL != "" {
		pub = broker.WithHeaders(pub, broker.Header{Key: broker.HeaderArtifactURL, Value: artifact.TargetURL(s.cfg.ArtifactURL, t)})
	}
	if err := e.Respond(ctx, pub, data, s.logger.With("request_id", e.Request.RequestID)); err != nil {
		s.logger.Warn("final response not sent; trying again", "request_id", e.Request.RequestID, "err", err)
		s.retryLater(e, t)
		return
	}
	s.settle(ctx, e)
}

// retryLater queues a finished entry whose final response could not be
// sent; the heartbeat keeps naming it, so that nobody builds it again.
func (s *Scheduler) retryLater(e *journal.Entry, t target.Target) {
	s.mu.Lock()
	s.unsent[e.Request.RequestID] = &run{entry: e, t: t}
	s.mu.Unlock()
}

// resendUnsent tries the queued final responses again.
func (s *Scheduler) resendUnsent(ctx context.Context) {
	s.mu.Lock()
	if len(s.unsent) == 0 || s.fenced {
		s.mu.Unlock()
		return
	}
	runs := make([]*run, 0, len(s.unsent))
	for id, r := range s.unsent {
		runs = append(runs, r)
		delete(s.unsent, id)
	}
	s.mu.Unlock()
	for _, r := range runs {
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		s.resend(rctx, r.entry, r.t)
		cancel()
	}
}

func (s *Scheduler) notify() {
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

// stopAll stops every running job (SIGTERM to the group, SIGKILL after
// the grace period) and waits for them. Their entries stay pending.
func (s *Scheduler) stopAll() {
	s.mu.Lock()
	s.stopping = true
	runs := make([]*run, 0, len(s.running))
	for _, r := range s.running {
		runs = append(runs, r)
	}
	s.mu.Unlock()
	for _, r := range runs {
		s.logger.Info("stopping build job", "target", r.t.ID(), "pid", r.pid)
		_ = proc.KillGroup(r.pid, syscall.SIGTERM)
	}
	deadline := time.After(s.cfg.StopGrace)
	for _, r := range runs {
		select {
		case <-r.done:
		case <-deadline:
			_ = proc.KillGroup(r.pid, syscall.SIGKILL)
			<-r.done
		}
		s.closeGroups(r)
	}
	s.wg.Wait()
}

// scriptFor renders argv as the <target>.sh record of what was started.
// It is written for people and for the original tooling that looks for
// the file; the scheduler itself starts the argv directly, never a shell.
func scriptFor(argv []string) string {
	return "#!/bin/sh\n# started by cb-scheduler; the job runs from this argument vector\nexec " + proc.Quote(argv) + "\n"
}
