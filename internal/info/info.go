// Package info is cb-info: every runner answers info requests about a build
// target from its runner-state files (SPEC §3.5, §5). Each runner reads
// cb-info-request with a consumer group of its own, so every runner sees
// every request; the requester collects the answers and keeps the newest.
package info

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/cloud-builder/cb/internal/artifact"
	"github.com/cloud-builder/cb/internal/broker"
	"github.com/cloud-builder/cb/internal/message"
	"github.com/cloud-builder/cb/internal/proc"
	"github.com/cloud-builder/cb/internal/target"
)

// Config is what cb-info needs.
type Config struct {
	Broker   broker.Options
	Root     string // runner root
	ThisHost string // this_host: source_ip and identity host
	// RespondAlways answers every request, also for targets this runner
	// never built, so a requester can stop at one answer per runner.
	RespondAlways bool
	// ArtifactURL is the base URL of this runner's artifact endpoint as
	// clients reach it; "" announces none.
	ArtifactURL string
	// PollTimeout bounds one broker poll (original --poll-timeout); 0
	// means 5s.
	PollTimeout time.Duration
	// UpdateInterval is the pause after a broker error before polling
	// again (original --update-interval); 0 means 1s.
	UpdateInterval time.Duration
	// Since: requests published at or after it are answered; zero means
	// from the moment Run starts. A caller that publishes right after
	// starting Run in the background sets it before.
	Since  time.Time
	Logger *slog.Logger
}

// Build status values of an info response besides the four build result
// codes.
const StatusUnknown = "unknown"

// Run answers info requests until ctx is done. Requests published after Run
// started are answered even if they arrive before the consumer group has
// settled.
func Run(ctx context.Context, cfg Config) error {
	if cfg.PollTimeout <= 0 {
		cfg.PollTimeout = 5 * time.Second
	}
	if cfg.UpdateInterval <= 0 {
		cfg.UpdateInterval = time.Second
	}
	log := cfg.logger()
	// Start at the time of start rather than at the end of the topic: a
	// fresh group resolves "latest" only once it has joined, and a
	// request sent in between would go unanswered.
	start := cfg.Since
	if start.IsZero() {
		start = time.Now()
	}
	cons, err := broker.NewConsumer(cfg.Broker, broker.ConsumerConfig{
		Group:  broker.SubscriberGroup("cb-info"),
		Topics: []string{message.TopicInfoRequest},
		Start:  broker.AtTime(start),
	})
	if err != nil {
		return fmt.Errorf("cb-info: %w", err)
	}
	defer cons.Close()
	pub, err := broker.New(cfg.Broker)
	if err != nil {
		return fmt.Errorf("cb-info: %w", err)
	}
	defer pub.Close()
	log.Info("answering info requests", "root", cfg.Root, "respond_always", cfg.RespondAlways, "artifact_url", cfg.ArtifactURL)
	for {
		pctx, cancel := context.WithTimeout(ctx, cfg.PollTimeout)
		recs, err := cons.Poll(pctx)
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, broker.ErrClosed) {
			return fmt.Errorf("cb-info: %w", err)
		}
		if err != nil {
			if !errors.Is(err, context.DeadlineExceeded) {
				log.Warn("poll info requests", "err", err)
				if !proc.Sleep(ctx, cfg.UpdateInterval) {
					return nil
				}
			}
			continue
		}
		for _, rec := range recs {
			cfg.handle(ctx, pub, rec.Value, log)
			if err := cons.Ack(ctx, rec); err != nil && ctx.Err() == nil {
				log.Warn("acknowledge info request", "err", err)
			}
		}
	}
}

func (c Config) logger() *slog.Logger {
	l := c.Logger
	if l == nil {
		l = slog.New(slog.DiscardHandler)
	}
	return l
}

// handle answers one request. An invalid request is logged and dropped:
// info responses have no error form the requester would understand.
func (c Config) handle(ctx context.Context, pub *broker.Client, data []byte, log *slog.Logger) {
	req, err := message.DecodeInfoRequest(data)
	if err != nil {
		log.Warn("invalid info request", "request_id", message.PeekRequestID(data), "err", err)
		return
	}
	log = log.With("request_id", req.RequestID, "project", req.Project)
	resp, ok := c.Answer(req)
	if !ok {
		log.Debug("target unknown here, not answering")
		return
	}
	out, err := message.Encode(resp)
	if err != nil {
		log.Error("encode info response", "err", err)
		return
	}
	var headers []broker.Header
	if resp.ArtifactURL != "" {
		headers = append(headers, broker.Header{Key: broker.HeaderArtifactURL, Value: resp.ArtifactURL})
	}
	if err := pub.PublishHeaders(ctx, message.TopicInfoResponse, out, headers); err != nil {
		log.Warn("send info response", "err", err)
		return
	}
	log.Info("info response sent", "is_running", resp.IsRunning, "build_status", resp.BuildStatus, "utc_modification_time", resp.UTCModificationTime)
}

// Answer computes the response to req from the runner-state files. ok is
// false when this runner neither built nor is building the target and does
// not respond always.
func (c Config) Answer(req *message.InfoRequest) (resp *message.InfoResponse, ok bool) {
	var t target.Target
	var err error
	image := req.Image != nil
	if image {
		t, err = target.New(c.Root, req.Project, req.Image.Selection, req.Image.Arch)
	} else if req.Package != nil {
		t, err = target.New(c.Root, req.Project, req.Package.Dist, req.Package.Arch)
	} else {
		err = errors.New("neither package nor image")
	}
	if err != nil {
		// Decoding validated all of this already.
		return nil, false
	}
	st := readState(t)
	if !st.known() && !c.RespondAlways {
		return nil, false
	}
	resp = &message.InfoResponse{
		SchemaVersion:       message.SchemaVersion,
		Identity:            message.Identity(message.ServiceInfo, c.ThisHost, req.Project),
		RequestID:           req.RequestID,
		Project:             req.Project,
		SourceIP:            c.ThisHost,
		IsRunning:           st.running,
		BinaryPackages:      []string{},
		LogFile:             pathOrNone(st.buildLog, t.BuildLog()),
		SolverFile:          pathOrNone(st.solver, t.SolverFile()),
		UTCModificationTime: message.None,
		BuildStatus:         StatusUnknown,
	}
	if image {
		resp.Image = &message.ImageTarget{Arch: req.Image.Arch, Selection: req.Image.Selection}
	} else {
		resp.Package = &message.InfoPackage{Arch: req.Package.Arch, Dist: req.Package.Dist, PrepareLogFile: pathOrNone(st.prepareLog, t.PrepareLog())}
	}
	if !st.modified.IsZero() {
		resp.UTCModificationTime = message.FormatTime(st.modified)
	}
	if !st.running && st.result != nil {
		resp.BuildStatus = buildStatus(st.result.ResponseCode, image)
		switch {
		case st.result.Package != nil && st.result.Package.BinaryPackages != nil:
			resp.BinaryPackages = st.result.Package.BinaryPackages
		case st.result.Image != nil && st.result.Image.BinaryPackages != nil:
			resp.BinaryPackages = st.result.Image.BinaryPackages
		}
	}
	if c.ArtifactURL != "" && st.known() {
		resp.ArtifactURL = artifact.TargetURL(c.ArtifactURL, t)
	}
	return resp, true
}

// buildStatus maps the final response code of the last build to one of the
// four build_status values. Every failure of a build (also at buildroot
// setup or binaries sync) is a failed build; anything else is unknown.
func buildStatus(code message.ResponseCode, image bool) string {
	switch {
	case message.IsSuccess(code):
		return code
	case code == message.PackageBuildFailed, code == message.ImageBuildFailed:
		return code
	case message.IsFinal(code):
		switch code {
		case message.PackageBuildFailedNoBinaries, message.PackageBinariesSyncFailed,
			message.BuildRootSetupFailed, message.ImageBinariesSyncFailed:
			if image {
				return message.ImageBuildFailed
			}
			return message.PackageBuildFailed
		}
	}
	return StatusUnknown
}

// state is what the runner-state files say about one target.
type state struct {
	running                      bool
	buildLog, prepareLog, solver bool
	binaries, resultExists       bool
	result                       *message.Response
	modified                     time.Time
}

// known: this runner built or is building the target.
func (s state) known() bool {
	return s.running || s.resultExists || s.buildLog || s.prepareLog || s.binaries
}

func readState(t target.Target) state {
	var s state
	_, s.running = artifact.Running(t.PIDFile())
	mtime := func(p string) (time.Time, bool) {
		fi, err := os.Stat(p)
		if err != nil {
			return time.Time{}, false
		}
		return fi.ModTime(), true
	}
	buildLogTime, buildLog := mtime(t.BuildLog())
	prepareLogTime, prepareLog := mtime(t.PrepareLog())
	resultTime, resultExists := mtime(t.ResultFile())
	pidTime, _ := mtime(t.PIDFile())
	_, s.solver = mtime(t.SolverFile())
	_, s.binaries = mtime(t.Binaries())
	s.buildLog, s.prepareLog, s.resultExists = buildLog, prepareLog, resultExists
	if resultExists {
		if data, err := os.ReadFile(t.ResultFile()); err == nil {
			s.result, _ = message.DecodeResponse(data)
		}
	}
	// While a build runs its newest log tells how fresh it is; after it,
	// the result file.
	switch {
	case s.running:
		s.modified = latest(buildLogTime, prepareLogTime, pidTime)
	case resultExists:
		s.modified = resultTime
	default:
		s.modified = latest(buildLogTime, prepareLogTime)
	}
	return s
}

func latest(ts ...time.Time) time.Time {
	var l time.Time
	for _, t := range ts {
		if t.After(l) {
			l = t
		}
	}
	return l
}

func pathOrNone(exists bool, p string) string {
	if exists {
		return p
	}
	return message.None
}
