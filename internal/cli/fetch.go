package cli

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/cloud-builder/cb/internal/broker"
	"github.com/cloud-builder/cb/internal/config"
	"github.com/cloud-builder/cb/internal/fetch"
	"github.com/cloud-builder/cb/internal/message"
	"github.com/cloud-builder/cb/internal/metrics"
	"github.com/cloud-builder/cb/internal/source"
)

func init() {
	register(&Command{Name: "fetch", Summary: "watch the sources repository and request builds of changed packages", Run: runFetch})
}

func runFetch(ctx context.Context, env *Env, args []string) int {
	paths := env.Paths()
	fs, common := newFlagSet(env, "fetch", "--project=<git url> [flags]")
	project := fs.String("project", "", "git URL of the sources repository (default: CB_PROJECT of the settings file)")
	branch := fs.String("branch", "", "branch to follow (default: CB_BRANCH of the settings file, else the remote's default branch)")
	interval := infoDuration{d: fetch.DefaultInterval, unit: time.Second}
	fs.Var(&interval, "update-interval", "time between polls (seconds, or a duration like 1m; default: CB_UPDATE of the settings file, else 30)")
	singleShot := fs.Bool("single-shot", false, "clone or update the checkout once and exit, without requesting builds (runners at boot)")
	stateFile := fs.String("state-file", "", "file keeping the last processed commit (default: <sources>.fetch-state)")
	viaDepsolver := fs.Bool("via-depsolver", false, "send build requests to cb-depsolver ("+message.TopicDepsolverRequests+"), which forwards them in dependency order, instead of to the runner groups")
	initialBuild := fs.Bool("initial-build", false, "on the first start without state, request every target once instead of only recording the head")
	sources := fs.String("sources", paths.Sources, "the source checkout (env "+config.EnvSources+")")
	brokerConfig := fs.String("broker-config", paths.BrokerConfig, "broker config file (env "+config.EnvBrokerConfig+")")
	runnerConfig := fs.String("runner-config", paths.RunnerConfig, "runner config file: SASL (env "+config.EnvRunnerConfig+")")
	settingsFile := fs.String("settings", paths.Settings, "service settings file (env "+config.EnvSettings+")")
	thisHost := fs.String("this-host", "", "host name in response identities (default: this_host of the broker config)")
	metricsListen := fs.String("metrics-listen", "", "serve /healthz and /metrics on this address")
	checkConfig := fs.Bool("check-config", false, "validate the configuration and exit")
	if code, done := parse(fs, args); done {
		return code
	}
	logger := common.Logger(env.Stderr, "fetch")

	settings, err := config.LoadSettingsFile(*settingsFile)
	if err != nil {
		return badConfig(env, "fetch", err)
	}
	_, serr := os.Stat(*settingsFile)
	settingsLog := configFile{"settings", *settingsFile, serr == nil}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if *project == "" {
		*project = settings["CB_PROJECT"]
	}
	if !set["branch"] {
		*branch = settings["CB_BRANCH"]
	}
	if v := settings["CB_UPDATE"]; !set["update-interval"] && v != "" {
		if err := interval.Set(v); err != nil {
			fmt.Fprintf(env.Stderr, "cb-fetch: %s: CB_UPDATE: %v\n", *settingsFile, err)
			return ExitUsage
		}
	}
	if *project == "" {
		fmt.Fprintln(env.Stderr, "cb-fetch: --project is required (or CB_PROJECT in "+*settingsFile+")")
		return ExitUsage
	}
	if err := source.ValidateURL(*project); err != nil {
		return fail(env, "fetch", fmt.Errorf("--project: %w", err))
	}
	if *branch != "" {
		if err := source.ValidateBranch(*branch); err != nil {
			return fail(env, "fetch", fmt.Errorf("--branch: %w", err))
		}
	}
	var c checks
	c.positive("--update-interval", interval.d)
	c.addr("--metrics-listen", *metricsListen)
	if code, ok := c.report(env, "fetch"); !ok {
		return code
	}
	cfg := fetch.Config{
		URL: *project, Branch: *branch, Dir: *sources, StateFile: *stateFile,
		Interval: interval.d, SingleShot: *singleShot, InitialBuild: *initialBuild,
		Logger: logger,
	}
	if *viaDepsolver {
		cfg.RequestTopic = message.TopicDepsolverRequests
	}
	if *singleShot {
		// Only the checkout: no broker needed, so a runner can fetch its
		// sources at boot before the broker is reachable.
		logConfig(logger, nil, settingsLog)
		if *checkConfig {
			fmt.Fprintln(env.Stdout, "configuration ok")
			return ExitOK
		}
		if err := fetch.Run(ctx, cfg); err != nil {
			return fail(env, "fetch", err)
		}
		return ExitOK
	}

	bcfg, err := loadConfig(logger, *brokerConfig, *runnerConfig, settingsLog)
	if err != nil {
		return badConfig(env, "fetch", err)
	}
	opts, err := brokerOptions(bcfg, logger, "cb-fetch")
	if err != nil {
		return fail(env, "fetch", fmt.Errorf("%s: %w", *brokerConfig, err))
	}
	cfg.ThisHost = *thisHost
	if cfg.ThisHost == "" {
		cfg.ThisHost = bcfg.ThisHost
	}
	if *checkConfig {
		fmt.Fprintln(env.Stdout, "configuration ok")
		return ExitOK
	}
	client, err := broker.New(opts)
	if err != nil {
		return fail(env, "fetch", err)
	}
	defer client.Close()
	cfg.Publisher = client

	g, gctx := newGroup(ctx)
	if *metricsListen != "" {
		g.Go("metrics", func() error { return metrics.Serve(gctx, *metricsListen, metrics.Mux(client.Ping), logger, nil) })
	}
	g.Go("fetch", func() error { return fetch.Run(gctx, cfg) })
	if err := g.Wait(); err != nil {
		return fail(env, "fetch", err)
	}
	return ExitOK
}
