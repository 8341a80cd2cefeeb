// Package job is the one way into a build. A scheduled build on a runner
// (Run: buildroot preparation and package build, or an image build, then
// the transfer of the results to the collector, the result file and the
// final response), the stand-alone steps cb-prepare and cb-run (Prepare,
// Build), cb-image (Image), and the local builds of cb-ctl (LocalPackage,
// LocalImage, LocalDependencies) are all wired from one Config, so the
// buildroot, build engine, image and mirror are put together in one place.
//
// A scheduled job runs in its own process, started by the scheduler as the
// leader of a new process group, so a reset can kill the job and every
// tool it started at once. It writes its progress into its journal entry;
// the final response is written to <target>.result.yml and the entry
// marked finished before it is published, so a crash between the two is
// repaired by the scheduler's recovery and never causes a second build.
package job

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cloud-builder/cb/internal/broker"
	"github.com/cloud-builder/cb/internal/buildroot"
	"github.com/cloud-builder/cb/internal/cachebudget"
	"github.com/cloud-builder/cb/internal/cgroup"
	"github.com/cloud-builder/cb/internal/journal"
	"github.com/cloud-builder/cb/internal/message"
	"github.com/cloud-builder/cb/internal/sandbox"
	"github.com/cloud-builder/cb/internal/target"
	"github.com/cloud-builder/cb/internal/upload"
)

// Config is what a build needs from its caller; every way into a build
// takes one. Fields a kind of build does not use are ignored.
type Config struct {
	RunnerRoot string
	Sources    string // the runner's source checkout
	// PackageDir overrides <Sources>/<project> as the package or image
	// source directory (local builds, stand-alone cb-prepare).
	PackageDir string
	// Tee, when set, also receives everything written to the prepare and
	// build logs (local builds and cb-image --local stream them to the
	// terminal).
	Tee io.Writer
	// Progress, when set, receives progress lines: the steps of a local
	// package build, the progress of cb-image's image build.
	Progress    io.Writer
	ThisHost    string
	RunnerGroup string
	Publisher   broker.Publisher // nil: no responses are sent
	Uploader    upload.Uploader  // nil: results stay on the runner
	CacheDir    string           // buildroot cache, default <runner root>/.cache/buildroot
	// CacheBudget caps the disk of the buildroot cache, the downloads
	// and kiwi's shared cache (see cachebudget; zero: the default).
	CacheBudget cachebudget.Size
	// ImageCacheDir is kiwi's shared cache directory; empty means one
	// per target below $CB_IMAGE_CACHE or the image package's default.
	ImageCacheDir string
	Backend       string // buildroot backend: auto, kiwi, native
	BuildTimeout  time.Duration
	MaxLogBytes   int64
	// IDs is the host id range builds run as (sandbox.DefaultIDs when
	// zero).
	IDs sandbox.IDMap
	// Limits are each build's cgroup limits; zero fields take
	// DefaultLimits' values.
	Limits cgroup.Limits
	// MaxWrite caps the bytes a build may write (DefaultMaxWrite when 0).
	MaxWrite int64
	// LogIdle ends a build that wrote no output for that long
	// (DefaultLogIdle when 0).
	LogIdle time.Duration
	// PrepareTimeout bounds the creation of a buildroot
	// (buildroot.DefaultTimeout when 0).
	PrepareTimeout time.Duration
	// AllowRepositories are the repository URLs a build_root.kiwi may
	// name besides the runner's apt sources: the collector's and the
	// configured ones.
	AllowRepositories []string
	// Lease is the file the scheduler touches each time its heartbeat
	// reached the broker. When it is older than FenceAfter the job stops
	// without a final response and releases its request: the runner has
	// lost the broker, and the request's partition owner is about to
	// build it elsewhere. "" or 0 turns the fence off (stand-alone use).
	Lease      string
	FenceAfter time.Duration
	Logger     *slog.Logger

	// ProjectRepos, when set, puts the target's project repositories of
	// the collector into its buildroot.
	ProjectRepos *buildroot.ProjectRepos
}

// ErrFenced is the cause of a job stopped because its runner lost contact
// with the broker for longer than the fence time.
// It wraps sandbox.ErrAbandoned: the build is killed at once, with no
// grace, since another runner may take the request over.
var ErrFenced = fmt.Errorf("%w: runner lost contact with the broker for longer than the fence time", sandbox.ErrAbandoned)

// DefaultBuildTimeout bounds one build step.
const DefaultBuildTimeout = 4 * time.Hour

// DefaultMaxLogBytes caps a build log.
const DefaultMaxLogBytes = 64 << 20

// DefaultLimits are a build's cgroup limits when the runner sets none.
var DefaultLimits = cgroup.Limits{Memory: 8 << 30, Pids: 4096, CPUWeight: 100}

// DefaultMaxWrite caps what one build may write.
const DefaultMaxWrite = 32 << 30

// DefaultLogIdle ends a build that printed nothing for two hours, like
// OBS' logidlelimit and sbuild's stalled-package timeout.
const DefaultLogIdle = 120 * time.Minute

func (c *Config) defaults() {
	if c.CacheDir == "" {
		c.CacheDir = filepath.Join(c.RunnerRoot, ".cache", "buildroot")
	}
	if c.Backend == "" {
		c.Backend = "auto"
	}
	if c.BuildTimeout == 0 {
		c.BuildTimeout = DefaultBuildTimeout
	}
	if c.MaxLogBytes == 0 {
		c.MaxLogBytes = DefaultMaxLogBytes
	}
	if c.Limits.Memory == 0 {
		c.Limits.Memory = DefaultLimits.Memory
	}
	if c.Limits.Pids == 0 {
		c.Limits.Pids = DefaultLimits.Pids
	}
	if c.Limits.CPUWeight == 0 {
		c.Limits.CPUWeight = DefaultLimits.CPUWeight
	}
	if c.MaxWrite == 0 {
		c.MaxWrite = DefaultMaxWrite
	}
	if c.LogIdle == 0 {
		c.LogIdle = DefaultLogIdle
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Run executes the journaled request e to its final response.
func Run(ctx context.Context, cfg Config, e *journal.Entry) error {
	cfg.defaults()
	req := &e.Request
	t, err := target.ForRequest(cfg.RunnerRoot, req)
	if err != nil {
		return fmt.Errorf("job %s: %w", req.RequestID, err)
	}
	logger := cfg.Logger.With("request_id", req.RequestID, "target", t.ID(), "project", req.Project)
	e.PID = os.Getpid()
	e.Attempts++
	if err := e.Advance(journal.Running); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(t.Dir()), 0o755); err != nil {
		return fmt.Errorf("job %s: %w", req.RequestID, err)
	}
	ctx, stopFence := fence(ctx, cfg.Lease, cfg.FenceAfter, logger)
	defer stopFence()
	r := &runner{cfg: cfg, e: e, t: t, req: req, logger: logger}
	r.clean = e.Clean
	var final *message.Response
	if req.IsImage() {
		final = r.image(ctx)
	} else {
		final = r.pkg(ctx)
	}
	if errors.Is(context.Cause(ctx), ErrFenced) {
		// Not this build's fault, and not ours to answer any more.
		e.Attempts--
		if err := e.Advance(journal.Released); err != nil {
			return err
		}
		return fmt.Errorf("job %s: %w", req.RequestID, ErrFenced)
	}
	if ctx.Err() != nil {
		// Stopped from outside (reset, shutdown): no final response; the
		// scheduler answers for a reset and resumes after a shutdown.
		return fmt.Errorf("job %s: %w", req.RequestID, context.Cause(ctx))
	}
	return e.Finish(ctx, cfg.Publisher, &t, final, logger)
}

// fence cancels ctx with ErrFenced once the lease file is older than
// after. A lease that cannot be read counts as stale only once it has been
// missing for after as well: the scheduler writes it before any job starts.
func fence(ctx context.Context, lease string, after time.Duration, logger *slog.Logger) (context.Context, func()) {
	if lease == "" || after <= 0 {
		return ctx, func() {}
	}
	ctx, cancel := context.WithCancelCause(ctx)
	done := make(chan struct{})
	go func() {
		tick := time.NewTicker(min(after/4, time.Second))
		defer tick.Stop()
		seen := time.Now()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			if fi, err := os.Stat(lease); err == nil {
				seen = fi.ModTime()
			}
			if age := time.Since(seen); age > after {
				logger.Warn("stopping the build: the runner's heartbeat has not reached the broker", "since", age.Round(time.Second), "fence_after", after)
				cancel(ErrFenced)
				return
			}
		}
	}()
	return ctx, func() { close(done); cancel(nil) }
}

type runner struct {
	cfg    Config
	e      *journal.Entry // nil for the stand-alone cb-prepare / cb-run
	t      target.Target
	req    *message.BuildRequest
	clean  bool
	logger *slog.Logger
}

// save records progress in the journal entry, when there is one.
func (r *runner) save() {
	if r.e != nil {
		_ = r.e.Save()
	}
}

func (r *runner) note(f func(e *journal.Entry)) {
	if r.e != nil {
		f(r.e)
	}
}

// newRunner is the runner of a build outside the scheduler's journal.
func newRunner(cfg Config, req *message.BuildRequest, clean bool) (*runner, error) {
	cfg.defaults()
	t, err := target.ForRequest(cfg.RunnerRoot, req)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(t.Dir()), 0o755); err != nil {
		return nil, err
	}
	logger := cfg.Logger.With("request_id", req.RequestID, "target", t.ID())
	return &runner{cfg: cfg, t: t, req: req, clean: clean, logger: logger}, nil
}

// Prepare is cb-prepare: it creates the buildroot of req's target and
// sends the prepare response. The returned response is the final one when
// preparation failed, else nil.
func Prepare(ctx context.Context, cfg Config, req *message.BuildRequest, clean bool) (*buildroot.Layout, *message.Response, error) {
	r, err := newRunner(cfg, req, clean)
	if err != nil {
		return nil, nil, err
	}
	layout, failed := r.prepare(ctx)
	return layout, failed, nil
}

// Build is cb-run: it runs the build in the buildroot Prepare made,
// transfers the results and returns the final response after recording it
// in the result file and sending it.
func Build(ctx context.Context, cfg Config, req *message.BuildRequest) (*message.Response, error) {
	r, err := newRunner(cfg, req, false)
	if err != nil {
		return nil, err
	}
	layout, err := buildroot.LoadLayout(r.t)
	if err != nil {
		return nil, fmt.Errorf("no prepared buildroot for %s (run cb-prepare first): %w", r.t.ID(), err)
	}
	final := r.build(ctx, layout)
	data, err := message.Encode(final)
	if err != nil {
		return nil, err
	}
	if err := journal.WriteResult(r.t, data); err != nil {
		return nil, err
	}
	return final, broker.PublishRetry(ctx, r.cfg.Publisher, message.TopicResponse, data, r.logger)
}

func (r *runner) respond(ctx context.Context, resp *message.Response) {
	data, err := message.Encode(resp)
	if err == nil {
		err = broker.PublishRetry(ctx, r.cfg.Publisher, message.TopicResponse, data, r.logger)
	}
	if err != nil {
		r.logger.Warn("response not sent", "response_code", resp.ResponseCode, "err", err)
	}
}

func (r *runner) response(service, code, msg string) *message.Response {
	name := r.req.Project
	if service == message.ServicePrepare || service == message.ServiceImage {
		name = r.req.Name()
	}
	return &message.Response{
		SchemaVersion: message.SchemaVersion,
		Identity:      message.Identity(service, r.cfg.ThisHost, name),
		RequestID:     r.req.RequestID,
		Project:       r.req.Project,
		ResponseCode:  code,
		Message:       msg,
	}
}

func (r *runner) pkgDir() string {
	if r.cfg.PackageDir != "" {
		return r.cfg.PackageDir
	}
	return filepath.Join(r.cfg.Sources, filepath.FromSlash(r.req.Project))
}

// logFile is an open log of the target, copied to the Tee when set.
type logFile struct {
	io.Writer
	f *os.File
}

func (l *logFile) Close() error { return l.f.Close() }

// openLog truncates and opens a log file of the target.
func (r *runner) openLog(path string) (*logFile, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, err
	}
	if r.cfg.Tee != nil {
		return &logFile{Writer: io.MultiWriter(f, r.cfg.Tee), f: f}, nil
	}
	return &logFile{Writer: f, f: f}, nil
}

// prepare creates the buildroot and answers with the package_prepare
// block. On failure it returns the final response instead of a layout.
func (r *runner) prepare(ctx context.Context) (*buildroot.Layout, *message.Response) {
	resp := r.response(message.ServicePrepare, message.BuildRootSetupSucceeded, message.BuildRootReadyMessage)
	pp := &message.PackagePrepare{BuildRoot: r.t.Dir(), PrepareLogFile: r.t.PrepareLog(), SolverFile: r.t.SolverFile()}
	resp.PackagePrepare = pp
	logf, err := r.openLog(r.t.PrepareLog())
	if err != nil {
		resp.ResponseCode, resp.Message, pp.ExitCode = message.BuildRootSetupFailed, "open prepare log: "+err.Error(), 1
		return nil, resp
	}
	defer logf.Close()
	start := time.Now()
	layout, err := buildroot.Prepare(ctx, buildroot.Options{
		CacheDir:          r.cfg.CacheDir,
		Budget:            r.cfg.CacheBudget,
		Backend:           r.cfg.Backend,
		Fresh:             r.req.FreshBuildRoot || r.clean,
		Timeout:           r.cfg.PrepareTimeout,
		MaxLogBytes:       r.cfg.MaxLogBytes,
		IDs:               r.cfg.IDs,
		AllowRepositories: r.cfg.AllowRepositories,
		Log:               logf,
		Logger:            r.logger,

		ProjectRepos: r.cfg.ProjectRepos,
	}, r.pkgDir(), r.t)
	r.note(func(e *journal.Entry) { e.Prepare = time.Since(start) })
	if err != nil {
		fmt.Fprintf(logf, "\nbuildroot setup failed: %v\n", err)
		r.logger.Error("buildroot setup failed", "err", err)
		resp.ResponseCode = message.BuildRootSetupFailed
		resp.Message = "Buildroot setup failed: " + firstLine(err.Error())
		pp.ExitCode = 1
		return nil, resp
	}
	hit := layout.CacheHit
	if hit {
		resp.Message = message.BuildRootCachedMessage
	}
	r.note(func(e *journal.Entry) { e.CacheHit, e.Layers = &hit, layout.Layers })
	r.save()
	if ctx.Err() == nil {
		r.respond(ctx, resp)
	}
	return layout, nil
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}

// upload hands the binaries to the collector. Files are named relative to
// the target's repository directory below the binaries dir.
func (r *runner) upload(ctx context.Context, binaries []string, repoType string) error {
	if r.cfg.Uploader == nil || len(binaries) == 0 {
		return nil
	}
	base := filepath.Join(r.t.Binaries(), filepath.FromSlash(r.t.RepoPath()))
	u := upload.Upload{
		RequestID: r.req.RequestID,
		Project:   r.req.Project,
		Name:      r.req.Name(),
		RepoPath:  r.t.RepoPath(),
		Arch:      r.t.Arch(),
		RepoType:  repoType,
	}
	for _, b := range binaries {
		rel, err := filepath.Rel(base, b)
		if err != nil || strings.HasPrefix(rel, "..") {
			return fmt.Errorf("binary %s is outside %s", b, base)
		}
		u.Files = append(u.Files, upload.File{Path: b, Name: filepath.ToSlash(rel)})
	}
	if err := r.cfg.Uploader.Upload(ctx, u); err != nil {
		return fmt.Errorf("upload to collector: %w", err)
	}
	return nil
}
