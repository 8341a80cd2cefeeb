package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/cloud-builder/cb/internal/config"
	"github.com/cloud-builder/cb/internal/ctl"
	"github.com/cloud-builder/cb/internal/job"
	"github.com/cloud-builder/cb/internal/message"
)

func init() {
	register(&Command{Name: "ctl", Client: true, Summary: "client: request builds, watch responses, fetch build info, logs and binaries", Run: runCtl})
}

// ExitTimeout is cb-ctl --wait's exit status when the build did not finish
// within the timeout (1 is a failed build, 2 bad flags).
const ExitTimeout = 3

// ctlEnvDepsolverURL names cb-depsolver's API.
const ctlEnvDepsolverURL = "CB_DEPSOLVER_URL"

// ctlEnvArtifactToken overrides cbctl.artifacts.token of the runner config.
const ctlEnvArtifactToken = "CB_ARTIFACT_TOKEN"

const ctlSynopsis = `<command> [flags]

Commands (one of):
  --build-package=<pkg> --project-path=<path> --arch= --dist= [--runner-group=] [--wait]
  --build-image=<img> --project-path= --arch= --selection= [--runner-group=] [--wait]
  --build-package-local --dist=<name> [--arch=] [--clean]     (in the package dir, no broker)
  --build-image-local --selection=<name> [--arch=]
  --build-dependencies=<pkg|img> --project-path= --arch= (--dist=|--selection=) [--timeout=]
  --build-dependencies-local (--dist=|--selection=) [--arch=]
  --dependency-graph [--project-path=] [--format=json|dot] [--depsolver-url=]
  --build-log=<pkg|img> --project-path= --arch= (--dist=|--selection=) [--keep-open] [--timeout=]
  --build-info=<pkg|img> --project-path= --arch= (--dist=|--selection=) [--timeout=]
  --get-binaries=<pkg|img> --project-path= --arch= --target-dir= (--dist=|--selection=)
  --watch [--filter-request-id=] [--filter-service-name=cb-run|...] [--since=] [--timeout=]
  --follow-request-id=<id> [--timeout=]

Exit status: 0 success, 1 failure (failed build, no runner answered, broker
unreachable), 2 bad flags or configuration, 3 --wait/--follow-request-id timed out.

--watch starts at now; with --filter-request-id it starts at the oldest
retained response, so the request's whole history is shown, then
followed. --since (a duration like 1h, or a time like 2026-11-30T09:00:00Z)
brings history back for any watch.`

type ctlFlags struct {
	buildPackage, buildImage, buildDeps, buildLog, buildInfo, getBinaries string
	buildPackageLocal, buildImageLocal, buildDepsLocal, watch             bool
	dependencyGraph                                                       bool
	format, depsolverURL                                                  string
	followRequestID                                                       string

	projectPath, arch, dist, selection, runnerGroup, targetDir string
	filterRequestID, filterService, since                      string
	clean, keepOpen, wait                                      bool
	timeout                                                    float64
	brokerConfig, ctlConfig, runnerConfig                      string
}

func runCtl(ctx context.Context, env *Env, args []string) int {
	fs, common := newFlagSet(env, "ctl", ctlSynopsis)
	// Broker client chatter would drown the JSON on a terminal.
	_ = fs.Set("log-level", "error")
	fs.Lookup("log-level").DefValue = "error"
	f := &ctlFlags{}
	fs.StringVar(&f.buildPackage, "build-package", "", "request a build of package `name` (with --project-path, --arch, --dist)")
	fs.StringVar(&f.buildImage, "build-image", "", "request a build of image `name` (with --project-path, --arch, --selection)")
	fs.BoolVar(&f.buildPackageLocal, "build-package-local", false, "build the package in the current directory, without a broker")
	fs.BoolVar(&f.buildImageLocal, "build-image-local", false, "build the image in the current directory, without a broker")
	fs.StringVar(&f.buildDeps, "build-dependencies", "", "print the solved buildroot/image package list of `name` from its runner")
	fs.BoolVar(&f.buildDepsLocal, "build-dependencies-local", false, "print the buildroot package list of the package in the current directory")
	fs.StringVar(&f.buildLog, "build-log", "", "print the prepare and build logs of `name` from its runner")
	fs.StringVar(&f.buildInfo, "build-info", "", "print what the runners know about the newest build of `name`")
	fs.StringVar(&f.getBinaries, "get-binaries", "", "download the binaries of the newest build of `name` into --target-dir")
	fs.BoolVar(&f.watch, "watch", false, "print the responses on cb-response as they arrive")
	fs.StringVar(&f.followRequestID, "follow-request-id", "", "follow the responses to request `id` until its final response")
	fs.BoolVar(&f.dependencyGraph, "dependency-graph", false, "print cb-depsolver's dependency graph (of --project-path, else all) in build order")
	fs.StringVar(&f.format, "format", "json", "--dependency-graph: json or dot (Graphviz)")
	fs.StringVar(&f.depsolverURL, "depsolver-url", "", "cb-depsolver API (env "+ctlEnvDepsolverURL+"; default for --dependency-graph http://"+DefaultDepsolverListen+"); with --build-dependencies it adds the depsolver's view")

	fs.StringVar(&f.projectPath, "project-path", "", "path below projects/ holding the package or image, e.g. MS")
	fs.StringVar(&f.arch, "arch", "", "target architecture as uname -m prints it (local builds: default host arch)")
	fs.StringVar(&f.dist, "dist", "", "distribution label of a package target")
	fs.StringVar(&f.selection, "selection", "", "selection name of an image target")
	fs.StringVar(&f.runnerGroup, "runner-group", "", "runner group topic (default: runner.group of the broker config, else "+message.TopicDefaultRequests+")")
	fs.StringVar(&f.targetDir, "target-dir", "", "directory --get-binaries writes to")
	fs.StringVar(&f.filterRequestID, "filter-request-id", "", "--watch: only responses to this request id")
	fs.StringVar(&f.filterService, "filter-service-name", "", "--watch: only responses of this service (cb-run, cb-scheduler, ...)")
	fs.StringVar(&f.since, "since", "", "--watch: start this long ago (1h, 30m) or at this time (RFC 3339); default: now, or the oldest response with --filter-request-id")
	fs.BoolVar(&f.clean, "clean", false, "--build-package-local: remove the buildroot after a successful build")
	fs.BoolVar(&f.keepOpen, "keep-open", false, "--build-log: follow the logs until the build ends")
	fs.BoolVar(&f.wait, "wait", false, "--build-package/--build-image: follow the request to its end; exit 0 on success, 1 on failure, 3 on timeout")
	fs.Float64Var(&f.timeout, "timeout", ctl.DefaultTimeout.Seconds(), "seconds of broker silence before giving up")
	fs.StringVar(&f.brokerConfig, "broker-config", env.Paths().BrokerConfig, "broker config file (env "+config.EnvBrokerConfig+")")
	fs.StringVar(&f.ctlConfig, "ctl-config", env.Paths().CtlConfig, "cbctl.yml (env "+config.EnvCtlConfig+")")
	fs.StringVar(&f.runnerConfig, "runner-config", env.Paths().RunnerConfig, "runner config whose cbctl.artifacts block holds the artifact credentials, and broker.sasl (env "+config.EnvRunnerConfig+")")
	if code, done := parse(fs, args); done {
		return code
	}
	usageErr := func(format string, a ...any) int {
		fmt.Fprintf(env.Stderr, "cb-ctl: "+format+"\n", a...)
		return ExitUsage
	}
	cmd, err := f.command()
	if err != nil {
		return usageErr("%v (see cb-ctl --help)", err)
	}
	if f.timeout <= 0 {
		return usageErr("--timeout must be positive")
	}
	since, err := parseSince(f.since, time.Now())
	if err != nil {
		return usageErr("--since: %v", err)
	}

	depsolverURL := f.depsolverURL
	if depsolverURL == "" {
		depsolverURL = env.Getenv(ctlEnvDepsolverURL)
	}
	// Commands without a broker.
	switch cmd {
	case "build-package-local", "build-image-local", "build-dependencies-local":
		if code, refused := linuxOnly(env, "ctl --"+cmd); refused {
			return code
		}
	}
	switch cmd {
	case "dependency-graph":
		if depsolverURL == "" {
			depsolverURL = "http://" + DefaultDepsolverListen
		}
		if f.format != "json" && f.format != "dot" {
			return usageErr("--format: want json or dot, got %q", f.format)
		}
		prefix := ""
		if f.projectPath != "" {
			prefix = strings.TrimSuffix(f.projectPath, "/")
			if !strings.HasPrefix(prefix, "projects/") && prefix != "projects" {
				prefix = "projects/" + prefix
			}
			if err := message.ValidateProject(prefix); err != nil && prefix != "projects" {
				return usageErr("--project-path: %v", err)
			}
		}
		d := ctl.Depsolver{URL: depsolverURL}
		return ctlExit(env, d.Graph(ctx, env.Stdout, prefix, f.format == "dot"))
	case "build-package-local", "build-image-local":
		o := job.Local{Dist: f.dist, Selection: f.selection, Arch: f.arch, Clean: f.clean}
		if cmd == "build-package-local" {
			return buildPackageLocal(ctx, env, common, o)
		}
		return buildImageLocal(ctx, env, common, o)
	case "build-dependencies-local":
		return buildDepsLocal(env, common, job.Local{Dist: f.dist, Selection: f.selection, Arch: f.arch})
	}

	logger := common.Logger(env.Stderr, "cb-ctl")
	bcfg, err := config.LoadBrokerFile(f.brokerConfig)
	if err != nil {
		return badConfig(env, "ctl", err)
	}
	rcfg, found, err := config.LoadRunnerFile(f.runnerConfig)
	if err != nil {
		return badConfig(env, "ctl", err)
	}
	bcfg.Broker.SASL = rcfg.Broker.SASL
	if found {
		bcfg.RunnerFile = f.runnerConfig
	}
	ccfg, err := config.LoadCtlFile(f.ctlConfig)
	if err != nil {
		return badConfig(env, "ctl", err)
	}
	_, ctlErr := os.Stat(f.ctlConfig)
	logConfig(logger, bcfg, append(brokerFiles(bcfg, f.brokerConfig, f.runnerConfig), configFile{"ctl_config", f.ctlConfig, ctlErr == nil})...)
	opts, err := brokerOptions(bcfg, logger, "cb-ctl")
	if err != nil {
		return fail(env, "ctl", fmt.Errorf("%s: %w", f.brokerConfig, err))
	}
	client := &ctl.Client{Broker: opts, Stdout: env.Stdout, Stderr: env.Stderr, Logger: logger,
		Timeout: time.Duration(f.timeout * float64(time.Second)), RunnerCount: ccfg.Cluster.RunnerCount}

	switch cmd {
	case "watch":
		o := ctl.WatchOptions{RequestID: f.filterRequestID, Since: since}
		if o.RequestID != "" && o.Since.IsZero() {
			// The request may have been sent (and answered) before
			// the watch started: show its whole history.
			o.FromStart = true
		}
		if f.filterService != "" {
			if o.Service, err = ctl.ServiceName(f.filterService); err != nil {
				return usageErr("--filter-service-name: %v", err)
			}
		}
		return ctlExit(env, client.Watch(ctx, o))
	case "follow-request-id":
		_, err := client.Follow(ctx, f.followRequestID)
		return ctlExit(env, err)
	}

	name := map[string]string{"build-package": f.buildPackage, "build-image": f.buildImage, "build-dependencies": f.buildDeps,
		"build-log": f.buildLog, "build-info": f.buildInfo, "get-binaries": f.getBinaries}[cmd]
	project, err := ctl.Project(f.projectPath, name)
	if err != nil {
		return usageErr("%v", err)
	}
	switch {
	case cmd == "build-package" && f.selection != "":
		return usageErr("--build-package takes --dist, not --selection")
	case cmd == "build-image" && f.dist != "":
		return usageErr("--build-image takes --selection, not --dist")
	}
	q, err := ctl.NewQuery(project, f.arch, f.dist, f.selection)
	if err != nil {
		return usageErr("%v", err)
	}

	switch cmd {
	case "build-package", "build-image":
		group := f.runnerGroup
		if group == "" {
			group = bcfg.Runner.Group
		}
		if group == "" {
			group = message.TopicDefaultRequests
		}
		req, err := client.BuildRequest(q, group)
		if err != nil {
			return usageErr("%v", err)
		}
		if !f.wait {
			return ctlExit(env, client.Send(ctx, req))
		}
		_, err = client.SendAndWait(ctx, req)
		return ctlExit(env, err)
	case "build-info":
		return ctlExit(env, client.BuildInfo(ctx, q))
	}

	// Artifact commands talk to the runners over HTTP.
	client.HTTP, err = ctl.HTTPClient(rcfg.Ctl.Artifacts)
	if err != nil {
		return fail(env, "ctl", fmt.Errorf("%s: cbctl.artifacts: %w", f.runnerConfig, err))
	}
	client.ArtifactToken = env.Getenv(ctlEnvArtifactToken)
	client.AllowPlainHTTP = rcfg.Ctl.Artifacts.AllowPlainHTTP
	if client.ArtifactToken == "" {
		if client.ArtifactToken, err = rcfg.Ctl.Artifacts.ReadToken(); err != nil {
			return fail(env, "ctl", fmt.Errorf("%s: cbctl.artifacts: %w", f.runnerConfig, err))
		}
	}
	switch cmd {
	case "build-log":
		return ctlExit(env, client.BuildLog(ctx, q, f.keepOpen))
	case "build-dependencies":
		if depsolverURL != "" {
			return ctlExit(env, client.BuildDependenciesWith(ctx, ctl.Depsolver{URL: depsolverURL}, q))
		}
		return ctlExit(env, client.BuildDependencies(ctx, q))
	case "get-binaries":
		if f.targetDir == "" {
			return usageErr("--get-binaries needs --target-dir")
		}
		_, err := client.GetBinaries(ctx, q, f.targetDir)
		return ctlExit(env, err)
	}
	return usageErr("unhandled command %s", cmd)
}

// command returns the one command the flags ask for.
func (f *ctlFlags) command() (string, error) {
	var set []string
	for _, c := range []struct {
		name string
		on   bool
	}{
		{"build-package", f.buildPackage != ""}, {"build-image", f.buildImage != ""},
		{"build-package-local", f.buildPackageLocal}, {"build-image-local", f.buildImageLocal},
		{"build-dependencies", f.buildDeps != ""}, {"build-dependencies-local", f.buildDepsLocal},
		{"build-log", f.buildLog != ""}, {"build-info", f.buildInfo != ""},
		{"get-binaries", f.getBinaries != ""}, {"watch", f.watch}, {"follow-request-id", f.followRequestID != ""},
		{"dependency-graph", f.dependencyGraph},
	} {
		if c.on {
			set = append(set, c.name)
		}
	}
	switch len(set) {
	case 0:
		return "", errors.New("no command given")
	case 1:
	default:
		return "", fmt.Errorf("--%s and --%s exclude each other", set[0], set[1])
	}
	cmd := set[0]
	if f.wait && cmd != "build-package" && cmd != "build-image" {
		return "", errors.New("--wait goes with --build-package or --build-image")
	}
	if f.keepOpen && cmd != "build-log" {
		return "", errors.New("--keep-open goes with --build-log")
	}
	if (f.filterRequestID != "" || f.filterService != "" || f.since != "") && cmd != "watch" {
		return "", errors.New("--filter-request-id, --filter-service-name and --since go with --watch")
	}
	return cmd, nil
}

// ctlExit prints err as one line and maps it to the exit status.
func ctlExit(env *Env, err error) int {
	switch {
	case err == nil:
		return ExitOK
	case errors.Is(err, ctl.ErrTimeout):
		fail(env, "ctl", err)
		return ExitTimeout
	}
	return fail(env, "ctl", err)
}

// parseSince reads --since: "" is zero (the default start), a duration
// counts back from now, anything else must be an RFC 3339 time.
func parseSince(v string, now time.Time) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(v); err == nil {
		if d <= 0 {
			return time.Time{}, fmt.Errorf("%q: want a positive duration", v)
		}
		return now.Add(-d), nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02 15:04:05", "2006-01-02"} {
		if t, err := time.ParseInLocation(layout, v, time.Local); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("%q: want a duration (30m, 2h) or a time (2026-11-30T09:00:00Z)", v)
}
