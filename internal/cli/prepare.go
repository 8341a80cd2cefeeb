package cli

import (
	"context"
	"errors"
	"fmt"

	"github.com/cloud-builder/cb/internal/broker"
	"github.com/cloud-builder/cb/internal/job"
	"github.com/cloud-builder/cb/internal/message"
	"github.com/cloud-builder/cb/internal/target"
)

func init() {
	register(&Command{Name: "prepare", Summary: "create the buildroot of a package target", Run: runPrepare})
	register(&Command{Name: "run", Summary: "build a package in its prepared buildroot", Run: runBuild})
}

// stepFlags are the original cb-prepare / cb-run flags.
type stepFlags struct {
	runnerFlags
	common                                      *Common
	root, pkg, profile, requestID, brokerConfig string
	clean, local                                bool
}

// request reconstructs the build request from the --root path
// <runner root>/<project>@<DIST>.<ARCH>.
func (f *stepFlags) request() (*message.BuildRequest, error) {
	if f.root == "" {
		return nil, errors.New("--root is required")
	}
	t, err := target.Parse(f.runnerRoot, f.root)
	if err != nil {
		return nil, fmt.Errorf("--root: %w (set --runner-root)", err)
	}
	if t.IsLocal() {
		return nil, fmt.Errorf("--root %s: want <runner root>/<project>@<DIST>.<ARCH>", f.root)
	}
	if f.profile != "" && f.profile != t.Profile {
		return nil, fmt.Errorf("--profile %s does not match --root (%s)", f.profile, t.Profile)
	}
	id := f.requestID
	if id == "" {
		id = "local"
	}
	if err := message.ValidateName(id); err != nil {
		return nil, err
	}
	return &message.BuildRequest{
		SchemaVersion: message.SchemaVersion, RequestID: id, Action: message.ActionPackageRebuild,
		Project: t.Project, Package: &message.PackageTarget{Dist: t.DistOrSelection(), Arch: t.Arch()},
		RunnerGroup: "local",
	}, nil
}

// config wires the step: the job's Config, with a broker and the
// collector unless --local.
func (f *stepFlags) config(env *Env, name string) (job.Config, *message.BuildRequest, func(), error) {
	logger := f.common.Logger(env.Stderr, name)
	cfg, err := loadConfig(logger, f.brokerConfig, f.runnerConfig)
	if err != nil {
		return job.Config{}, nil, nil, err
	}
	f.resolve(env, cfg)
	req, err := f.request()
	if err != nil {
		return job.Config{}, nil, nil, err
	}
	jc := f.jobConfig(logger)
	jc.PackageDir = f.pkg
	closeFn := func() {}
	if !f.local {
		opts, err := brokerOptions(cfg, logger, "cb-"+name)
		if err != nil {
			return job.Config{}, nil, nil, err
		}
		client, err := broker.New(opts)
		if err != nil {
			return job.Config{}, nil, nil, err
		}
		jc.Publisher, closeFn = client, client.Close
		if jc.Uploader, err = f.uploader(env, cfg, req, logger); err != nil {
			client.Close()
			return job.Config{}, nil, nil, err
		}
	}
	return jc, req, closeFn, nil
}

func stepFlagSet(env *Env, name, synopsis string) (*stepFlags, func([]string) (int, bool)) {
	fs, common := newFlagSet(env, name, synopsis)
	f := &stepFlags{common: common}
	f.register(fs, env)
	fs.StringVar(&f.root, "root", "", "buildroot directory: <runner root>/<project>@<DIST>.<ARCH>")
	fs.StringVar(&f.requestID, "request-id", "", "request id to answer with")
	fs.StringVar(&f.brokerConfig, "broker-config", env.Paths().BrokerConfig, "broker config file (env CB_BROKER_CONFIG)")
	fs.BoolVar(&f.local, "local", false, "do not talk to the broker or the collector")
	if name == "prepare" {
		fs.StringVar(&f.pkg, "package", "", "package source directory (default: <sources>/<project>)")
		fs.StringVar(&f.profile, "profile", "", "DIST.ARCH (must match --root)")
		fs.BoolVar(&f.clean, "clean", false, "do not reuse a cached buildroot")
	} else {
		fs.BoolVar(&f.clean, "clean", false, "accepted for compatibility: buildroots are overlays and never modified")
	}
	return f, func(args []string) (int, bool) {
		if code, done := parse(fs, args); done {
			return code, done
		}
		var c checks
		c.positive("--build-timeout", f.buildTimeout)
		c.size("--cache-budget", f.cacheBudget)
		if code, ok := c.report(env, name); !ok {
			return code, true
		}
		return 0, false
	}
}

func runPrepare(ctx context.Context, env *Env, args []string) int {
	f, parseArgs := stepFlagSet(env, "prepare", "--root=DIR --package=DIR --profile=DIST.ARCH --request-id=ID")
	if code, done := parseArgs(args); done {
		return code
	}
	cfg, req, closeFn, err := f.config(env, "prepare")
	if err != nil {
		return fail(env, "prepare", err)
	}
	defer closeFn()
	layout, failed, err := job.Prepare(ctx, cfg, req, f.clean)
	switch {
	case err != nil:
		return fail(env, "prepare", err)
	case failed != nil:
		return fail(env, "prepare", errors.New(failed.Message))
	}
	fmt.Fprintf(env.Stdout, "buildroot ready: %s (cache hit: %v)\n", layout.Merged, layout.CacheHit)
	return ExitOK
}

func runBuild(ctx context.Context, env *Env, args []string) int {
	f, parseArgs := stepFlagSet(env, "run", "--root=DIR --request-id=ID [--local] [--clean]")
	if code, done := parseArgs(args); done {
		return code
	}
	cfg, req, closeFn, err := f.config(env, "run")
	if err != nil {
		return fail(env, "run", err)
	}
	defer closeFn()
	final, err := job.Build(ctx, cfg, req)
	if err != nil && final == nil {
		return fail(env, "run", err)
	}
	fmt.Fprintf(env.Stdout, "%s: %s\n", final.ResponseCode, final.Message)
	if err != nil {
		return fail(env, "run", err)
	}
	if !message.IsSuccess(final.ResponseCode) {
		return ExitFailure
	}
	return ExitOK
}
