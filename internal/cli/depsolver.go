package cli

import (
	"context"
	"flag"
	"fmt"
	"path/filepath"
	"time"

	"github.com/cloud-builder/cb/internal/broker"
	"github.com/cloud-builder/cb/internal/config"
	"github.com/cloud-builder/cb/internal/ctl"
	"github.com/cloud-builder/cb/internal/depsolver"
	"github.com/cloud-builder/cb/internal/message"
	"github.com/cloud-builder/cb/internal/metrics"
	"github.com/cloud-builder/cb/internal/mirror"
	"github.com/cloud-builder/cb/internal/source"
)

func init() {
	register(&Command{Name: "depsolver", Summary: "keep the dependency graph of every target and request builds in dependency order", Run: runDepsolver})
}

// DefaultDepsolverListen is where cb-depsolver's API listens by default.
const DefaultDepsolverListen = "127.0.0.1:8082"

func runDepsolver(ctx context.Context, env *Env, args []string) int {
	paths := env.Paths()
	fs, common := newFlagSet(env, "depsolver", "--project=<git url> [flags]")
	project := fs.String("project", "", "git URL of the sources repository (default: CB_PROJECT of the settings file)")
	branch := fs.String("branch", "", "branch to follow (default: CB_BRANCH of the settings file, else the remote's default branch)")
	stateDir := fs.String("state-dir", "/var/lib/cloud_builder/depsolver", "own checkout of the sources and the state file")
	collectorURL := fs.String("collector-url", "", "base URL of the collector's repositories (default: collector.url of the runner config)")
	listen := fs.String("listen", DefaultDepsolverListen, "address of the API (graph, target state) cb-ctl reads; empty: none")
	baseInterval := fs.Duration("base-interval", 10*time.Minute, "shortest time between checks of the base repositories for changes (0: no rebuilds on base repository changes)")
	runnerRoot := fs.String("runner-root", "", "runner root on this machine, to read solver files of finished builds from disk (else they are read from the runners' artifact endpoints)")
	brokerConfig := fs.String("broker-config", paths.BrokerConfig, "broker config file (env "+config.EnvBrokerConfig+")")
	runnerConfig := fs.String("runner-config", paths.RunnerConfig, "runner config file: collector URL, SASL (env "+config.EnvRunnerConfig+")")
	settingsFile := fs.String("settings", paths.Settings, "service settings file (env "+config.EnvSettings+")")
	thisHost := fs.String("this-host", "", "host name in response identities (default: this_host of the broker config)")
	metricsListen := fs.String("metrics-listen", "", "serve /healthz and /metrics on this address")
	checkConfig := fs.Bool("check-config", false, "validate the configuration and exit")
	if code, done := parse(fs, args); done {
		return code
	}
	logger := common.Logger(env.Stderr, "depsolver")
	settings, err := config.LoadSettingsFile(*settingsFile)
	if err != nil {
		return badConfig(env, "depsolver", err)
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if *project == "" {
		*project = settings["CB_PROJECT"]
	}
	if !set["branch"] {
		*branch = settings["CB_BRANCH"]
	}
	if *project == "" {
		fmt.Fprintln(env.Stderr, "cb-depsolver: --project is required (or CB_PROJECT in "+*settingsFile+")")
		return ExitUsage
	}
	if err := source.ValidateURL(*project); err != nil {
		return fail(env, "depsolver", fmt.Errorf("--project: %w", err))
	}
	if *branch != "" {
		if err := source.ValidateBranch(*branch); err != nil {
			return fail(env, "depsolver", fmt.Errorf("--branch: %w", err))
		}
	}
	var c checks
	if *baseInterval < 0 {
		c.add("--base-interval: must not be negative")
	}
	c.addr("--listen", *listen)
	c.addr("--metrics-listen", *metricsListen)
	if code, ok := c.report(env, "depsolver"); !ok {
		return code
	}
	bcfg, err := loadConfig(logger, *brokerConfig, *runnerConfig)
	if err != nil {
		return badConfig(env, "depsolver", err)
	}
	opts, err := brokerOptions(bcfg, logger, "cb-depsolver")
	if err != nil {
		return fail(env, "depsolver", fmt.Errorf("%s: %w", *brokerConfig, err))
	}
	if *collectorURL == "" {
		*collectorURL = bcfg.Collector.URL
	}
	if *collectorURL == "" {
		return fail(env, "depsolver", fmt.Errorf("--collector-url is required (or collector.url in %s)", *runnerConfig))
	}
	if *thisHost == "" {
		*thisHost = bcfg.ThisHost
	}
	// Solver files of runners on other machines come from their artifact
	// endpoints, read as a client like cb-ctl and the web UI do.
	rcfg, _, err := config.LoadRunnerFile(*runnerConfig)
	if err != nil {
		return badConfig(env, "depsolver", err)
	}
	artifactEP := rcfg.Ctl.Artifacts
	artifactToken, err := artifactEP.ReadToken()
	allowPlain := artifactEP.AllowPlainHTTP
	if err == nil && artifactToken == "" {
		artifactToken, err = bcfg.Artifacts.ReadToken()
		allowPlain = bcfg.Artifacts.AllowPlainHTTP
	}
	if err != nil {
		return fail(env, "depsolver", fmt.Errorf("%s: artifact token: %w", *runnerConfig, err))
	}
	artifactClient, err := ctl.HTTPClient(artifactEP)
	if err != nil {
		return fail(env, "depsolver", fmt.Errorf("%s: %w", *runnerConfig, err))
	}
	cfg := depsolver.Config{Broker: opts, URL: *project, Branch: *branch, Dir: filepath.Join(*stateDir, "sources"),
		StateFile: filepath.Join(*stateDir, "state.json"), CollectorURL: *collectorURL, Listen: *listen,
		BaseInterval: *baseInterval, RunnerRoot: *runnerRoot, Substitute: mirror.Substitute, ThisHost: *thisHost,
		ArtifactToken: artifactToken, ArtifactClient: artifactClient, ArtifactAllowPlainHTTP: allowPlain,
		Logger: logger}
	s, err := depsolver.New(cfg)
	if err != nil {
		return fail(env, "depsolver", err)
	}
	if *checkConfig {
		fmt.Fprintln(env.Stdout, "configuration ok")
		return ExitOK
	}
	client, err := broker.New(opts)
	if err != nil {
		return fail(env, "depsolver", err)
	}
	defer client.Close()
	// A day of retention: requests wait there while the depsolver is down.
	if err := client.EnsureTopics(ctx, 1, 24*time.Hour, message.TopicDepsolverRequests); err != nil {
		logger.Warn("create request topic", "err", err)
	}
	g, gctx := newGroup(ctx)
	if *metricsListen != "" {
		g.Go("metrics", func() error { return metrics.Serve(gctx, *metricsListen, metrics.Mux(client.Ping), logger, nil) })
	}
	g.Go("depsolver", func() error { return s.Run(gctx) })
	if err := g.Wait(); err != nil {
		return fail(env, "depsolver", err)
	}
	return ExitOK
}
