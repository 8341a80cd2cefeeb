package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/cloud-builder/cb/internal/image"
	"github.com/cloud-builder/cb/internal/job"
	"github.com/cloud-builder/cb/internal/target"
)

func init() {
	register(&Command{Name: "image", Summary: "build a KIWI image and bundle it as rpm", Run: runImage})
}

// multiFlag collects a repeatable flag such as --profile.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// runImage is the stand-alone cb-image of the original. It builds the
// image and sorts the bundle into <target-dir>.binaries; it neither
// talks to the broker nor transfers the bundle (on a runner the job that
// cb-scheduler starts does both around the same build code). The original
// repo server flags are accepted so that old scripts keep working, and
// ignored with a warning.
func runImage(ctx context.Context, env *Env, args []string) int {
	const name = "image"
	var kiwiArgs []string
	for i, a := range args {
		if a == "--" {
			args, kiwiArgs = args[:i], args[i+1:]
			break
		}
	}
	fs, common := newFlagSet(env, name,
		"--description=DIR --target-dir=<root>/<project>@<SELECTION>.<ARCH> [--bundle-id=ID] [--request-id=UUID] [--profile=NAME]... [--local] [-- KIWI_BUILD_ARGS...]")
	var (
		description, targetDir, bundleID, requestID, runnerRoot, cacheDir string
		repoServer, repoPath, sshUser, sshPkey                            string
		local                                                             bool
		profiles                                                          multiFlag
	)
	fs.StringVar(&description, "description", "", "KIWI image description directory (required)")
	fs.StringVar(&targetDir, "target-dir", "", "image target <runner root>/<project>@<SELECTION>.<ARCH>; logs, solver file and binaries are written next to it (required)")
	fs.StringVar(&bundleID, "bundle-id", "", "id kiwi adds to the bundled file names (default: the UTC build time, YYYYMMDDhhmmss)")
	fs.StringVar(&requestID, "request-id", "", "request id, for the log")
	fs.Var(&profiles, "profile", "KIWI profile (repeatable)")
	fs.BoolVar(&local, "local", false, "stream the whole build log to stdout, not only the progress")
	fs.StringVar(&runnerRoot, "runner-root", env.Paths().RunnerRoot, "runner state directory; a --target-dir below it gets the runner's repository path (env CB_RUNNER_ROOT)")
	fs.StringVar(&cacheDir, "cache-dir", "", "kiwi shared cache directory (default: per target below $"+image.EnvCacheRoot+" or "+image.DefaultCacheRoot+")")
	fs.StringVar(&repoServer, "repo-server", "", "ignored: the runner's job transfers the results")
	fs.StringVar(&repoPath, "repo-path", "", "ignored: the repository path follows from --target-dir")
	fs.StringVar(&sshUser, "ssh-user", "", "ignored")
	fs.StringVar(&sshPkey, "ssh-pkey", "", "ignored")
	if code, done := parse(fs, args); done {
		return code
	}
	logger := common.Logger(env.Stderr, name)
	if repoServer != "" || repoPath != "" || sshUser != "" || sshPkey != "" {
		logger.Warn("--repo-server, --repo-path, --ssh-user and --ssh-pkey are ignored; on a runner the job started by cb-scheduler transfers the bundle to the collector")
	}
	if description == "" || targetDir == "" {
		fs.Usage()
		return ExitUsage
	}
	cfg := job.Config{RunnerRoot: runnerRoot, ImageCacheDir: cacheDir, Progress: env.Stdout, Logger: logger}
	if local {
		cfg.Tee, cfg.Progress = env.Stdout, nil
	}
	t, res, err := job.Image(ctx, cfg, job.ImageBuild{Description: description, TargetDir: targetDir,
		BundleID: bundleID, RequestID: requestID, Profiles: profiles, BuildArgs: kiwiArgs})
	if err != nil {
		return fail(env, name, err)
	}
	if err := printImageResult(env.Stdout, t, res); err != nil {
		return fail(env, name, err)
	}
	if res.ExitCode != 0 {
		fmt.Fprintf(env.Stderr, "cb-image: image build failed with exit code %d, see %s\n", res.ExitCode, t.BuildLog())
		return ExitFailure
	}
	return ExitOK
}

// printImageResult prints the image block of the original response as
// JSON, keys sorted, indented by 4, as cb-ctl prints messages.
func printImageResult(w io.Writer, t target.Target, res *image.Result) error {
	if res == nil {
		return errors.New("no result")
	}
	solver := t.SolverFile()
	if _, err := os.Stat(solver); err != nil {
		solver = "none"
	}
	out := map[string]any{
		"binary_packages": res.Binaries,
		"exit_code":       res.ExitCode,
		"log_file":        t.BuildLog(),
		"solver_file":     solver,
	}
	data, err := json.MarshalIndent(out, "", "    ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", data)
	return err
}
