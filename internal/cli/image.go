package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cloud-builder/cb/internal/image"
	"github.com/cloud-builder/cb/internal/message"
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
	t, err := imageTarget(targetDir, runnerRoot)
	if err != nil {
		return fail(env, name, err)
	}
	if requestID != "" {
		if err := message.ValidateName(requestID); err != nil {
			return fail(env, name, fmt.Errorf("--request-id: %w", err))
		}
		logger = logger.With("request_id", requestID)
	}
	if bundleID == "" {
		bundleID = image.TimeBundleID(time.Now())
	}
	if err := image.ValidateBuildArgs(kiwiArgs); err != nil {
		return fail(env, name, err)
	}
	if err := os.MkdirAll(filepath.Dir(t.BuildLog()), 0o755); err != nil {
		return fail(env, name, err)
	}
	logf, err := os.OpenFile(t.BuildLog(), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fail(env, name, fmt.Errorf("open build log: %w", err))
	}
	defer logf.Close()
	o := image.Options{
		Description: description,
		Target:      t,
		BundleID:    bundleID,
		Profiles:    profiles,
		BuildArgs:   kiwiArgs,
		Log:         logf,
		Progress:    env.Stdout,
		CacheDir:    cacheDir,
		Logger:      logger,
	}
	if local {
		o.Log, o.Progress = io.MultiWriter(logf, env.Stdout), nil
	}
	res, err := image.Build(ctx, o)
	if err != nil {
		fmt.Fprintf(logf, "\nimage build failed: %v\n", err)
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

// imageTarget turns --target-dir into a target. Below the runner root it
// is the runner's layout <root>/<project>@<SELECTION>.<ARCH> and the
// binaries land below the project's repository path; elsewhere
// <dir>/<name>@<SELECTION>.<ARCH> sorts them below <SELECTION>.
func imageTarget(targetDir, runnerRoot string) (target.Target, error) {
	abs, err := filepath.Abs(targetDir)
	if err != nil {
		return target.Target{}, err
	}
	if runnerRoot != "" {
		if root, err := filepath.Abs(runnerRoot); err == nil {
			if rel, err := filepath.Rel(root, abs); err == nil && strings.HasPrefix(rel, "projects/") {
				project, profile, ok := strings.Cut(filepath.ToSlash(rel), "@")
				if ok {
					sel, arch, ok := cutLast(profile, ".")
					if !ok {
						return target.Target{}, fmt.Errorf("--target-dir %s: want <project>@<SELECTION>.<ARCH>", targetDir)
					}
					return target.New(root, project, sel, arch)
				}
			}
		}
	}
	name, profile, ok := strings.Cut(filepath.Base(abs), "@")
	if !ok {
		return target.Target{}, fmt.Errorf("--target-dir %s: want <dir>/<name>@<SELECTION>.<ARCH>", targetDir)
	}
	sel, arch, ok := cutLast(profile, ".")
	if !ok {
		return target.Target{}, fmt.Errorf("--target-dir %s: want <name>@<SELECTION>.<ARCH>", targetDir)
	}
	for _, n := range []string{name, sel, arch} {
		if err := message.ValidateName(n); err != nil {
			return target.Target{}, fmt.Errorf("--target-dir: %w", err)
		}
	}
	return image.LocalTarget(filepath.Dir(abs), name, sel, arch), nil
}

func cutLast(s, sep string) (before, after string, ok bool) {
	i := strings.LastIndex(s, sep)
	if i <= 0 || i == len(s)-1 {
		return "", "", false
	}
	return s[:i], s[i+1:], true
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
