package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/cloud-builder/cb/internal/broker"
	"github.com/cloud-builder/cb/internal/buildroot"
	"github.com/cloud-builder/cb/internal/config"
	"github.com/cloud-builder/cb/internal/job"
	"github.com/cloud-builder/cb/internal/message"
	"github.com/cloud-builder/cb/internal/metrics"
	"github.com/cloud-builder/cb/internal/scheduler"
	"github.com/cloud-builder/cb/internal/source"
	"github.com/cloud-builder/cb/internal/upload"
)

func init() {
	register(&Command{Name: "scheduler", Summary: "consume build requests of a runner group and run the builds", Run: runScheduler})
}

func runScheduler(ctx context.Context, env *Env, args []string) int {
	fs, common := newFlagSet(env, "scheduler", "[flags]")
	var rf runnerFlags
	rf.register(fs, env)
	brokerConfig := fs.String("broker-config", env.Paths().BrokerConfig, "broker config file (env CB_BROKER_CONFIG)")
	updateInterval := fs.Int("update-interval", 10, "accepted for compatibility (seconds, at least 1); consumption is continuous")
	pollTimeout := fs.Int("poll-timeout", 5000, "broker poll timeout in milliseconds")
	buildLimit := fs.Int("build-limit", 10, "maximum number of builds running at once")
	repoServer := fs.String("repo-server", "", "original option: collector host; an http(s) URL is used as --collector-url")
	fs.String("ssh-user", "", "accepted for compatibility; results are uploaded over HTTP")
	fs.String("ssh-pkey", "", "accepted for compatibility; results are uploaded over HTTP")
	metricsListen := fs.String("metrics-listen", "", "serve /healthz and /metrics here, e.g. 127.0.0.1:9101")
	heartbeat := fs.Duration("heartbeat-interval", scheduler.DefaultHeartbeatInterval, "how often the runner heartbeat is published")
	stuck := fs.Duration("stuck-timeout", scheduler.DefaultStuckTimeout, "build a request of this runner's partitions here when the runner building it has not named it in a heartbeat for this long")
	session := fs.Duration("session-timeout", 45*time.Second, "Kafka group session timeout: how long a silent runner keeps its partitions")
	lookback := fs.Duration("response-lookback", 24*time.Hour, "how far back cb-response is read to recognise requests answered already")
	checkConfig := fs.Bool("check-config", false, "validate the configuration and exit")
	if code, done := parse(fs, args); done {
		return code
	}
	var c checks
	c.atLeast("--build-limit", *buildLimit, 1)
	c.atLeast("--poll-timeout", *pollTimeout, 1)
	c.atLeast("--update-interval", *updateInterval, 1)
	c.positive("--build-timeout", rf.buildTimeout)
	c.size("--cache-budget", rf.cacheBudget)
	c.addr("--metrics-listen", *metricsListen)
	if code, ok := c.report(env, "scheduler"); !ok {
		return code
	}
	logger := common.Logger(env.Stderr, "scheduler")
	cfg, err := loadConfig(logger, *brokerConfig, rf.runnerConfig)
	if err != nil {
		return badConfig(env, "scheduler", err)
	}
	if strings.HasPrefix(*repoServer, "http://") || strings.HasPrefix(*repoServer, "https://") {
		rf.collectorURL = *repoServer
	} else if *repoServer != "" {
		logger.Warn("--repo-server is not an http(s) URL; results are uploaded to --collector-url instead of rsync over ssh", "repo_server", *repoServer)
	}
	rf.resolve(env, cfg)
	if err := scheduler.CheckTimeouts(*heartbeat, rf.fenceAfter, *stuck); err != nil {
		return fail(env, "scheduler", err)
	}
	if *checkConfig {
		fmt.Fprintln(env.Stdout, "configuration ok")
		return ExitOK
	}
	err = runRunner(ctx, env, logger, cfg, &rf, runnerOptions{
		brokerConfig: *brokerConfig, buildLimit: *buildLimit,
		pollTimeout: time.Duration(*pollTimeout) * time.Millisecond, metricsListen: *metricsListen,
		heartbeat: *heartbeat, stuck: *stuck, session: *session, lookback: *lookback,
	})
	if err != nil {
		return fail(env, "scheduler", err)
	}
	return ExitOK
}

type runnerOptions struct {
	brokerConfig  string
	buildLimit    int
	pollTimeout   time.Duration
	metricsListen string
	// Runner loss: zero values take the scheduler's defaults.
	heartbeat, stuck, session, lookback time.Duration
}

// runRunner runs a scheduler for rf.group until ctx is done.
func runRunner(ctx context.Context, env *Env, logger *slog.Logger, cfg *config.Broker, rf *runnerFlags, o runnerOptions) error {
	opts, err := brokerOptions(cfg, logger, "cb-scheduler")
	if err != nil {
		return err
	}
	client, err := broker.New(opts)
	if err != nil {
		return err
	}
	defer client.Close()
	// A request stays uncommitted until it is answered: its topic must
	// keep it for longer than a build may take.
	if err := client.EnsureTopics(ctx, 1, 24*time.Hour, rf.group, message.TopicHeartbeat); err != nil {
		logger.Warn("cannot ensure the runner group and heartbeat topics exist", "topic", rf.group, "err", err)
	}
	consumer, err := broker.NewConsumer(opts, broker.ConsumerConfig{Group: rf.group, Topics: []string{rf.group}, Start: broker.Earliest,
		SessionTimeout: o.session})
	if err != nil {
		return err
	}
	defer consumer.Close()
	if o.lookback <= 0 {
		o.lookback = 24 * time.Hour
	}
	since := time.Now().Add(-o.lookback)
	reader, err := broker.NewConsumer(opts, broker.ConsumerConfig{Topics: []string{message.TopicResponse, message.TopicHeartbeat}, Start: broker.AtTime(since)})
	if err != nil {
		return err
	}
	defer reader.Close()
	ledger := scheduler.NewLedger(reader, since, rf.thisHost, logger.With("component", "ledger"))
	// The one log idle limit: the job's sandbox ends a silent build at
	// it, the scheduler (outside the job) a minute later.
	logIdle := rf.logIdle
	if logIdle <= 0 {
		logIdle = job.DefaultLogIdle
	}
	if rf.fenceAfter <= 0 {
		rf.fenceAfter = scheduler.DefaultFenceAfter
	}
	jobCmd := append([]string{env.Exe, "job"}, rf.jobArgs(o.brokerConfig)...)
	// The scheduler holds the upload secret; its jobs get a ticket each.
	secret, err := rf.uploadToken(env, cfg)
	if err != nil {
		return fmt.Errorf("collector: %w", err)
	}
	sources := rf.sources
	s, err := scheduler.New(scheduler.Config{
		RunnerGroup: rf.group, RunnerRoot: rf.runnerRoot, Sources: sources, ThisHost: rf.thisHost,
		BuildLimit: o.buildLimit, PollTimeout: o.pollTimeout, JobCommand: jobCmd, UploadSecret: []byte(secret),
		TicketTTL: ticketTTL(rf.buildTimeout, rf.sandbox.PrepareTimeout),
		Pull:      func(ctx context.Context) error { return source.Pull(ctx, sources, logger) },
		Consumer:  consumer, Publisher: client, Logger: logger, ArtifactURL: announcedArtifactURL(cfg, rf.thisHost), Ledger: ledger,
		HeartbeatInterval: o.heartbeat, StuckTimeout: o.stuck, FenceAfter: rf.fenceAfter, LogIdleLimit: logIdle,
	})
	if err != nil {
		return err
	}
	g, gctx := newGroup(ctx)
	if o.metricsListen != "" {
		g.Go("metrics", func() error {
			healthy := func(ctx context.Context) error {
				return errors.Join(client.Ping(ctx), s.Healthy(ctx))
			}
			return metrics.Serve(gctx, o.metricsListen, metrics.Mux(healthy), logger, func(a net.Addr) {
				logger.Info("metrics and health", "url", "http://"+a.String()+"/metrics")
			})
		})
	}
	watchCacheBudget(gctx, g, logger, rf)
	g.Go("ledger", func() error { return ledger.Run(gctx) })
	g.Go("scheduler", func() error {
		logger.Info("scheduler running", "runner_group", rf.group, "build_limit", o.buildLimit, "runner_root", rf.runnerRoot)
		return s.Run(gctx)
	})
	return g.Wait()
}

// ticketTTL is how long a job's upload ticket stays valid: a day, or
// longer when the job's time limits (prepare, build, an hour for the
// upload and its retries) add up to more.
func ticketTTL(build, prepare time.Duration) time.Duration {
	if prepare <= 0 {
		prepare = buildroot.DefaultTimeout
	}
	return max(upload.DefaultTicketTTL, build+prepare+time.Hour)
}

// announcedArtifactURL is the artifact endpoint URL a runner announces in
// its heartbeat: artifacts.url, else this_host with the port of
// artifacts.listen, else "" (no endpoint known).
func announcedArtifactURL(cfg *config.Broker, host string) string {
	if cfg.Artifacts.URL != "" {
		return cfg.Artifacts.URL
	}
	if cfg.Artifacts.Listen == "" || cfg.Artifacts.Listen == "off" || host == "" {
		return ""
	}
	_, port, err := net.SplitHostPort(cfg.Artifacts.Listen)
	if err != nil {
		return ""
	}
	scheme := "http"
	if cfg.Artifacts.TLSCert != "" {
		scheme = "https"
	}
	return scheme + "://" + net.JoinHostPort(host, port)
}
