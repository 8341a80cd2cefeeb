package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/cloud-builder/cb/internal/ctl"
	"github.com/cloud-builder/cb/internal/job"
)

// The commands of cb-ctl that need no broker: builds in the current
// directory, wired to the terminal. The work is job's.

func localConfig(env *Env, c *Common, name string) job.Config {
	host, _ := os.Hostname()
	return job.Config{RunnerRoot: env.Paths().RunnerRoot, ThisHost: host, RunnerGroup: "local",
		Tee: env.Stdout, Progress: env.Stderr, Logger: c.Logger(env.Stderr, name)}
}

// buildPackageLocal is --build-package-local: the buildroot and logs live
// below the runner root as for a remote build, the logs stream to the
// terminal, and the binaries are copied next to the sources.
func buildPackageLocal(ctx context.Context, env *Env, c *Common, o job.Local) int {
	files, err := job.LocalPackage(ctx, localConfig(env, c, "ctl"), o)
	if err != nil {
		return fail(env, "ctl", err)
	}
	for _, f := range files {
		fmt.Fprintln(env.Stdout, f)
	}
	return ExitOK
}

// buildImageLocal is --build-image-local.
func buildImageLocal(ctx context.Context, env *Env, c *Common, o job.Local) int {
	res, err := job.LocalImage(ctx, localConfig(env, c, "ctl"), o)
	if err != nil {
		return fail(env, "ctl", err)
	}
	fmt.Fprintf(env.Stderr, "==> image bundle: %s\n", strings.Join(res.Binaries, ", "))
	return ExitOK
}

// buildDepsLocal is --build-dependencies-local.
func buildDepsLocal(env *Env, c *Common, o job.Local) int {
	deps, err := job.LocalDependencies(localConfig(env, c, "ctl"), o)
	if err == nil {
		err = printDependencies(env, deps)
	}
	if err != nil {
		return fail(env, "ctl", err)
	}
	return ExitOK
}

func printDependencies(env *Env, deps *job.Dependencies) error {
	if deps.SolverFile != "" {
		f, err := os.Open(deps.SolverFile)
		if err != nil {
			return err
		}
		defer f.Close()
		fmt.Fprintf(env.Stderr, "cb-ctl: resolved package list of the local build: %s\n", deps.SolverFile)
		_, err = io.Copy(env.Stdout, f)
		return err
	}
	fmt.Fprintf(env.Stderr, "cb-ctl: no local build newer than %s: printing what the %s profile requests (unresolved)\n", deps.Description, deps.Requested.Profile)
	return ctl.PrintJSON(env.Stdout, deps.Requested)
}
