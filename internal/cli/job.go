package cli

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/cloud-builder/cb/internal/artifact"
	"github.com/cloud-builder/cb/internal/broker"
	"github.com/cloud-builder/cb/internal/buildroot"
	"github.com/cloud-builder/cb/internal/cachebudget"
	"github.com/cloud-builder/cb/internal/cgroup"
	"github.com/cloud-builder/cb/internal/collect"
	"github.com/cloud-builder/cb/internal/config"
	"github.com/cloud-builder/cb/internal/job"
	"github.com/cloud-builder/cb/internal/journal"
	"github.com/cloud-builder/cb/internal/message"
	"github.com/cloud-builder/cb/internal/sandbox"
	"github.com/cloud-builder/cb/internal/scheduler"
	"github.com/cloud-builder/cb/internal/target"
	"github.com/cloud-builder/cb/internal/upload"
)

func init() {
	register(&Command{Name: "job", Hidden: true, Summary: "run one journaled build (started by cb-scheduler)", Run: runJob})
}

// runnerFlags are shared by cb-scheduler and the job processes it starts.
type runnerFlags struct {
	runnerRoot, sources, thisHost, group string
	runnerConfig                         string
	brokerHosts                          string
	collectorURL, collectorTokenFile     string
	collectorKeyFile                     string
	noProjectRepos                       bool
	backend, cacheDir                    string
	cacheBudget                          string
	buildTimeout                         time.Duration
	logIdle                              time.Duration
	sandbox                              config.Sandbox
	fenceAfter                           time.Duration
}

func (f *runnerFlags) register(fs *flag.FlagSet, env *Env) {
	p := env.Paths()
	fs.StringVar(&f.runnerConfig, "runner-config", p.RunnerConfig, "runner config file: collector and artifact endpoints, SASL (env "+config.EnvRunnerConfig+")")
	fs.StringVar(&f.runnerRoot, "runner-root", p.RunnerRoot, "runner state directory (env CB_RUNNER_ROOT)")
	fs.StringVar(&f.sources, "sources", p.Sources, "source checkout (env CB_SOURCES)")
	fs.StringVar(&f.thisHost, "this-host", "", "name of this machine in identities (default: this_host of the broker config)")
	fs.StringVar(&f.group, "runner-group", "", "runner group topic (default: runner.group of the broker config, else cb-build-request)")
	fs.StringVar(&f.brokerHosts, "broker", "", "broker seeds host:port[,host:port] (default: broker.host of the broker config)")
	fs.StringVar(&f.collectorURL, "collector-url", "", "collector upload URL, e.g. http://repo:8080 (default: collector.url of the runner config; empty keeps results on the runner)")
	fs.StringVar(&f.collectorTokenFile, "collector-token-file", "", "file holding the collector upload token (or env CB_COLLECTOR_TOKEN)")
	fs.StringVar(&f.collectorKeyFile, "collector-key-file", "", "the collector's public signing key, for the project repositories in buildroots (default: collector.key_file of the runner config, else fetched from the collector once and pinned)")
	fs.BoolVar(&f.noProjectRepos, "no-project-repositories", false, "do not add the collector's project repositories to buildroots")
	fs.StringVar(&f.backend, "backend", "auto", "buildroot backend: auto (native for apt), native, kiwi")
	fs.StringVar(&f.cacheDir, "cache-dir", "", "buildroot cache (default <runner root>/.cache/buildroot)")
	fs.StringVar(&f.cacheBudget, "cache-budget", "", "disk budget of the buildroot cache, downloads and kiwi's shared cache: bytes (200G) or a percentage of the cache's file system (default: cache.budget of the runner config, else "+cachebudget.Size{Percent: cachebudget.DefaultPercent}.String()+")")
	fs.DurationVar(&f.buildTimeout, "build-timeout", job.DefaultBuildTimeout, "maximum duration of one build step")
	fs.DurationVar(&f.logIdle, "log-idle-limit", 0, "end a build that printed nothing for this long (default: sandbox.log_idle of the runner config, else "+job.DefaultLogIdle.String()+")")
	fs.DurationVar(&f.fenceAfter, "fence-after", scheduler.DefaultFenceAfter, "stop builds when the runner's heartbeat has not reached the broker this long")
}

// resolve fills defaults from the broker config.
func (f *runnerFlags) resolve(env *Env, cfg *config.Broker) {
	if f.thisHost == "" {
		f.thisHost = cfg.ThisHost
	}
	if f.group == "" {
		f.group = cfg.Runner.Group
	}
	if f.group == "" {
		f.group = "cb-build-request"
	}
	if f.brokerHosts != "" {
		cfg.Broker.Host = f.brokerHosts
	}
	f.brokerHosts = cfg.Broker.Host
	if f.collectorURL == "" {
		f.collectorURL = cfg.Collector.URL
	}
	if f.collectorTokenFile == "" {
		f.collectorTokenFile = cfg.Collector.TokenFile
	}
	if f.collectorKeyFile == "" {
		f.collectorKeyFile = cfg.Collector.KeyFile
	}
	f.sandbox = cfg.Sandbox
	if f.cacheBudget == "" {
		f.cacheBudget = cfg.Cache.Budget
	}
	if f.logIdle == 0 {
		f.logIdle = f.sandbox.LogIdle
	}
}

// confine sets how the job's builds are confined: sandbox: of the runner
// config, the flags, and the collector as an allowed repository.
func (f *runnerFlags) confine(jc *job.Config) {
	sb := f.sandbox
	jc.IDs = sandbox.IDMap{UID: sb.IDs.UID, GID: sb.IDs.GID, Count: sb.IDs.Count}
	jc.Limits = cgroup.Limits{Memory: sb.Memory, Pids: sb.Pids, CPUWeight: sb.CPUWeight}
	jc.MaxWrite = sb.MaxWrite
	jc.LogIdle = f.logIdle
	jc.PrepareTimeout = sb.PrepareTimeout
	jc.AllowRepositories = append([]string(nil), sb.AllowRepositories...)
	if f.collectorURL != "" {
		jc.AllowRepositories = append(jc.AllowRepositories, strings.TrimRight(f.collectorURL, "/"))
	}
}

// projectRepos returns where buildroots find the project repositories.
func (f *runnerFlags) projectRepos() *buildroot.ProjectRepos {
	if f.collectorURL == "" || f.noProjectRepos {
		return nil
	}
	return &buildroot.ProjectRepos{URL: strings.TrimRight(f.collectorURL, "/"), KeyFile: f.collectorKeyFile}
}

// jobArgs is the argument list of a `cb job` process that runs with the
// same runner flags; register parses it back (TestJobArgsRoundTrip). The
// job gets no upload token at all, neither on the argv nor its file: the
// scheduler passes it an upload ticket for its request
// (scheduler.Config.UploadSecret).
func (f *runnerFlags) jobArgs(brokerConfig string) []string {
	args := []string{"--runner-root", f.runnerRoot, "--sources", f.sources,
		"--this-host", f.thisHost, "--runner-group", f.group, "--broker", f.brokerHosts,
		"--broker-config", brokerConfig, "--runner-config", f.runnerConfig, "--backend", f.backend, "--build-timeout", f.buildTimeout.String(),
		"--fence-after", f.fenceAfter.String()}
	if f.logIdle != 0 {
		args = append(args, "--log-idle-limit", f.logIdle.String())
	}
	if f.cacheDir != "" {
		args = append(args, "--cache-dir", f.cacheDir)
	}
	if f.cacheBudget != "" {
		args = append(args, "--cache-budget", f.cacheBudget)
	}
	if f.collectorURL != "" {
		args = append(args, "--collector-url", f.collectorURL)
	}
	if f.collectorKeyFile != "" {
		args = append(args, "--collector-key-file", f.collectorKeyFile)
	}
	if f.noProjectRepos {
		args = append(args, "--no-project-repositories")
	}
	return args
}

// jobConfig is the part of a job's Config the runner flags give.
func (f *runnerFlags) jobConfig(logger *slog.Logger) job.Config {
	jc := job.Config{RunnerRoot: f.runnerRoot, Sources: f.sources, ThisHost: f.thisHost, RunnerGroup: f.group,
		Backend: f.backend, CacheDir: f.cacheDir, BuildTimeout: f.buildTimeout,
		Lease: target.LeaseFile(f.runnerRoot), FenceAfter: f.fenceAfter, Logger: logger,
		ProjectRepos: f.projectRepos()}
	// Checked at start (budget).
	jc.CacheBudget, _ = cachebudget.ParseSize(f.cacheBudget)
	f.confine(&jc)
	return jc
}

// uploadToken is the runner group's upload secret: CB_COLLECTOR_TOKEN,
// else the token (file) of the collector endpoint; "" when none is set.
func (f *runnerFlags) uploadToken(env *Env, cfg *config.Broker) (string, error) {
	if f.collectorURL == "" {
		return "", nil
	}
	if t := env.Getenv(upload.EnvToken); t != "" {
		return t, nil
	}
	ep := cfg.Collector
	if f.collectorTokenFile != "" {
		ep.Token, ep.TokenFile = "", f.collectorTokenFile
	}
	return ep.ReadToken()
}

// uploader returns the collector client of request r's job, or nil when no
// collector is set. It uploads with the ticket the scheduler passed in
// the environment. A job started by hand, without one, mints its own
// from the upload token, so it is bound to its request all the same.
func (f *runnerFlags) uploader(env *Env, cfg *config.Broker, r *message.BuildRequest, logger *slog.Logger) (upload.Uploader, error) {
	if f.collectorURL == "" {
		return nil, nil
	}
	c := &collect.Client{URL: strings.TrimRight(f.collectorURL, "/"), Token: env.Getenv(upload.EnvTicket),
		AllowPlainHTTP: cfg.Collector.AllowPlainHTTP, Logger: logger}
	if c.Token != "" {
		return c, nil
	}
	secret, err := f.uploadToken(env, cfg)
	if err != nil || secret == "" {
		return c, err
	}
	logger.Info("no upload ticket from a scheduler: minting one for this request from the upload token")
	t, err := target.ForRequest(f.runnerRoot, r)
	if err != nil {
		return nil, err
	}
	c.Token, err = upload.MintTicket([]byte(secret), upload.Claims{RequestID: r.RequestID, Project: r.Project,
		RepoPath: t.RepoPath(), Arch: t.Arch(), Expires: time.Now().Add(upload.DefaultTicketTTL)})
	return c, err
}

func runJob(ctx context.Context, env *Env, args []string) int {
	fs, common := newFlagSet(env, "job", "--journal FILE [flags]")
	var rf runnerFlags
	rf.register(fs, env)
	journalFile := fs.String("journal", "", "journal entry of the request to build")
	brokerConfig := fs.String("broker-config", env.Paths().BrokerConfig, "broker config file (env CB_BROKER_CONFIG)")
	if code, done := parse(fs, args); done {
		return code
	}
	if *journalFile == "" {
		fmt.Fprintln(env.Stderr, "cb-job: --journal is required")
		return ExitUsage
	}
	var c checks
	c.positive("--build-timeout", rf.buildTimeout)
	c.size("--cache-budget", rf.cacheBudget)
	if code, ok := c.report(env, "job"); !ok {
		return code
	}
	logger := common.Logger(env.Stderr, "job")
	cfg, err := loadConfig(logger, *brokerConfig, rf.runnerConfig)
	if err != nil {
		return badConfig(env, "job", err)
	}
	rf.resolve(env, cfg)
	e, err := journal.Load(*journalFile)
	if err != nil {
		return fail(env, "job", err)
	}
	opts, err := brokerOptions(cfg, logger, "cb-job")
	if err != nil {
		return fail(env, "job", err)
	}
	client, err := broker.New(opts)
	if err != nil {
		return fail(env, "job", err)
	}
	defer client.Close()
	up, err := rf.uploader(env, cfg, &e.Request, logger)
	if err != nil {
		return fail(env, "job", err)
	}
	jc := rf.jobConfig(logger)
	jc.Publisher, jc.Uploader = rf.responsePublisher(client, cfg, &e.Request), up
	err = job.Run(ctx, jc, e)
	if err != nil {
		return fail(env, "job", fmt.Errorf("request %s: %w", e.Request.RequestID, err))
	}
	return ExitOK
}

// responsePublisher is the publisher of a job's responses: they name this
// runner's artifact endpoint for the target (header cb-artifact-url),
// where cb-depsolver reads the solver file without a shared disk.
func (f *runnerFlags) responsePublisher(client *broker.Client, cfg *config.Broker, req *message.BuildRequest) broker.Publisher {
	base := announcedArtifactURL(cfg, f.thisHost)
	if base == "" {
		return client
	}
	t, err := target.ForRequest(f.runnerRoot, req)
	if err != nil {
		return client
	}
	return broker.WithHeaders(client, broker.Header{Key: broker.HeaderArtifactURL, Value: artifact.TargetURL(base, t)})
}
