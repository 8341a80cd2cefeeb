package cli

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/cloud-builder/cb/internal/broker"
	"github.com/cloud-builder/cb/internal/job"
	"github.com/cloud-builder/cb/internal/message"
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
	rel, err := filepath.Rel(f.runnerRoot, filepath.Clean(f.root))
	if err != nil || strings.HasPrefix(rel, "..") {
		return nil, fmt.Errorf("--root %s is not below the runner root %s (set --runner-root)", f.root, f.runnerRoot)
	}
	project, profile, ok := strings.Cut(filepath.ToSlash(rel), "@")
	if !ok {
		return nil, fmt.Errorf("--root %s: want <runner root>/<project>@<DIST>.<ARCH>", f.root)
	}
	if f.profile != "" && f.profile != profile {
		return nil, fmt.Errorf("--profile %s does not match --root (%s)", f.profile, profile)
	}
	dot := strings.LastIndex(profile, ".")
	if dot < 0 {
		return nil, fmt.Errorf("profile %q: want DIST.ARCH", profile)
	}
	id := f.requestID
	if id == "" {
		id = "local"
	}
	req := &message.BuildRequest{
		SchemaVersion: message.SchemaVersion, RequestID: id, Action: message.ActionPackageRebuild,
		Project: project, Package: &message.PackageTarget{Dist: profile[:dot], Arch: profile[dot+1:]},
		RunnerGroup: "local",
	}
	if err := message.ValidateProject(project); err != nil {
		return nil, err
	}
	for _, n := range []string{id, req.Package.Dist, req.Package.Arch} {
		if err := message.ValidateName(n); err != nil {
			return nil, err
		}
	}
	return req, nil
}

func (f *stepFlags) step(ctx context.Context, env *Env, name string) (*job.Step, func(), error) {
	common := f.common
	logger := common.Logger(env.Stderr, name)
	cfg, err := loadConfig(logger, f.brokerConfig, f.runnerConfig)
	if err != nil {
		return nil, nil, err
	}
	f.resolve(env, cfg)
	req, err := f.request()
	if err != nil {
		return nil, nil, err
	}
	jc := job.Config{RunnerRoot: f.runnerRoot, Sources: f.sources, PackageDir: f.pkg, ThisHost: f.thisHost,
		RunnerGroup: f.group, Backend: f.backend, CacheDir: f.cacheDir, BuildTimeout: f.buildTimeout, Logger: logger}
	f.confine(&jc)
	closeFn := func() {}
	if !f.local {
		opts, err := brokerOptions(cfg, logger, "cb-"+name)
		if err != nil {
			return nil, nil, err
		}
		client, err := broker.New(opts)
		if err != nil {
			return nil, nil, err
		}
		jc.Publisher, closeFn = client, client.Close
		if jc.Uploader, err = f.uploader(env, cfg, logger); err != nil {
			client.Close()
			return nil, nil, err
		}
	}
	return &job.Step{Config: jc, Request: req, Clean: f.clean}, closeFn, nil
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
	step, closeFn, err := f.step(ctx, env, "prepare")
	if err != nil {
		return fail(env, "prepare", err)
	}
	defer closeFn()
	layout, failed, err := step.Prepare(ctx)
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
	step, closeFn, err := f.step(ctx, env, "run")
	if err != nil {
		return fail(env, "run", err)
	}
	defer closeFn()
	final, err := step.Build(ctx)
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
