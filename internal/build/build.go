// Package build runs a package build in a prepared buildroot and collects
// its results (the cb-run step of SPEC §4).
//
// The buildroot is the overlay a buildroot preparation left behind (a
// cached base root plus the target's own upper layer holding the package
// sources in /<name>/). Each command of the build runs in a fresh rootless
// sandbox (package sandbox): root of a user namespace mapped to an
// unprivileged id range, in a cgroup with the build's limits, with the
// overlay, /proc and /dev mounted privately, so no mount or process
// survives the build, whatever way it ends. An Engine
// chooses the commands: the OBS build script when the buildroot has it and
// a build config, else rpmbuild for a .spec, dpkg-buildpackage for a
// debian/ tree, or dpkg-source plus dpkg-buildpackage for a .dsc.
//
// Programs using this package must call sandbox.Init first in main.
package build

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/cloud-builder/cb/internal/buildroot"
	"github.com/cloud-builder/cb/internal/cgroup"
	"github.com/cloud-builder/cb/internal/proc"
	"github.com/cloud-builder/cb/internal/sandbox"
	"github.com/cloud-builder/cb/internal/target"
)

// Options configure one build.
type Options struct {
	Target target.Target
	Layout *buildroot.Layout
	// Arch is the target arch as uname -m prints it (default: the
	// target's); it is recorded in the log. Packages sort by their own
	// arch, so noarch/all packages of an x86_64 build land in noarch/all.
	Arch string
	// Timeout ends the build (SIGTERM, then SIGKILL); zero means none.
	Timeout time.Duration
	// MaxLogBytes caps the tool output written to Log; zero means no cap.
	// The build continues when the cap is reached.
	MaxLogBytes int64
	// Log receives the build log as the build runs.
	Log    io.Writer
	Logger *slog.Logger
	// Engines overrides DefaultEngines (first that detects wins).
	Engines []Engine
	// Network gives the build the host network; builds have none by
	// default so that they depend only on the buildroot.
	Network bool
	// IDs is the id range the build runs as (sandbox.DefaultIDs when
	// zero); the buildroot must belong to it (buildroot.Prepare sees to
	// that).
	IDs sandbox.IDMap
	// Limits are the build's cgroup limits (memory, processes, CPU).
	Limits cgroup.Limits
	// MaxWrite caps what the build may store in its writable layer, in
	// bytes; zero means no cap.
	MaxWrite int64
	// LogIdle ends a build that wrote no output for that long (OBS'
	// logidlelimit); zero means no limit.
	LogIdle time.Duration
}

// Result is the outcome of a build that ran.
type Result struct {
	ExitCode int
	Engine   string
	// Binaries are absolute paths below Target.Binaries(), sorted into
	// <repo path>/<arch>/. Empty when the build failed or produced none.
	Binaries []string
	// RepoType is RepoDeb or RepoRPM, after the binaries found ("" without
	// binaries).
	RepoType string
	Duration time.Duration
}

// ErrTimeout is wrapped by the error of a build that ran out of time.
var ErrTimeout = sandbox.ErrTimeout

// buildEnv is the whole environment of a build: nothing leaks in from the
// runner, so builds are the same wherever they run.
var buildEnv = []string{
	"HOME=/root",
	"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
	"LANG=C.UTF-8",
	"SHELL=/bin/sh",
	"USER=root",
	"LOGNAME=root",
	"TERM=dumb",
}

// Run builds the target's package in its prepared buildroot, moves the
// built packages to Target.Binaries() (replacing those of the previous
// build) and returns the result.
//
// A build that ran to its end returns a Result and a nil error, whatever
// its exit code; the caller decides between "succeeded", "failed" and
// "failed, no binaries found". A timeout or cancellation returns a Result
// (ExitCode -1) and an error (errors.Is(err, ErrTimeout) for a timeout);
// a buildroot that cannot be used returns only an error.
func Run(ctx context.Context, o Options) (*Result, error) {
	if o.Layout == nil {
		return nil, errors.New("build: no buildroot layout")
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	t := o.Target
	logger := o.Logger
	if logger == nil {
		logger = slog.Default()
	}
	logger = logger.With("component", "build", "target", t.ID())
	// The mount point may be gone after a clean; the overlay needs it.
	if err := os.MkdirAll(o.Layout.Merged, 0o755); err != nil {
		return nil, fmt.Errorf("build %s: %w", t.ID(), err)
	}
	if o.Arch == "" {
		o.Arch = t.Arch()
	}
	engines := o.Engines
	if engines == nil {
		engines = DefaultEngines()
	}

	tree := NewTree(o.Layout)
	base := o.Layout.Upper // where everything the build writes ends up
	if o.Layout.Lower == "" {
		base = o.Layout.Merged
	}
	dir := o.Layout.PackageDir
	if dir == "" {
		dir = "/" + t.Name()
	}
	dir = filepath.Clean("/" + dir)
	pkg := &Package{Name: t.Name(), Dir: dir, HostDir: filepath.Join(base, dir), Root: tree}
	if fi, err := os.Lstat(pkg.HostDir); err != nil || !fi.IsDir() || dir == "/" {
		return nil, fmt.Errorf("build %s: package sources missing in the buildroot", t.ID())
	}
	engine := chooseEngine(engines, pkg, o.Layout.SourceKind)
	if engine == nil {
		return nil, fmt.Errorf("build %s: no build recipe found (need a .spec, a debian/ tree or a .dsc)", t.ID())
	}
	steps, err := engine.Steps(pkg)
	if err != nil {
		return nil, fmt.Errorf("build %s: %w", t.ID(), err)
	}

	log := &cappedLog{w: o.Log, max: o.MaxLogBytes}
	start := time.Now()
	// File times are compared with the start; the second of slack covers
	// file systems with coarse timestamps.
	since := start.Add(-time.Second)
	res := &Result{Engine: engine.Name()}
	log.Printf("=== build of %s (%s) with %s\n", t.ID(), o.Arch, engine.Name())
	log.Printf("=== started %s\n", start.UTC().Format(time.RFC3339))
	logger.Info("build started", "engine", engine.Name(), "steps", len(steps))

	var deadline time.Time
	if o.Timeout > 0 {
		deadline = start.Add(o.Timeout)
	}
	code, runErr := 0, error(nil)
	for _, s := range steps {
		log.Printf("=== %s$ %s\n", s.Dir, proc.Quote(s.Argv))
		spec := sandbox.Spec{
			Lower: o.Layout.Lower, Upper: o.Layout.Upper, Work: o.Layout.Work,
			Root: o.Layout.Merged, Dir: s.Dir, Argv: s.Argv, Env: buildEnv,
			Stdout: log, Stderr: log, Network: o.Network,
			IDs: o.IDs, Limits: o.Limits, MaxWrite: o.MaxWrite, IdleTimeout: o.LogIdle,
		}
		if !deadline.IsZero() {
			spec.Timeout = time.Until(deadline)
			if spec.Timeout <= 0 {
				code, runErr = -1, fmt.Errorf("build %s: %w after %s", t.ID(), ErrTimeout, o.Timeout)
				break
			}
		}
		code, runErr = sandbox.Run(ctx, spec)
		if runErr != nil {
			if errors.Is(runErr, ErrTimeout) {
				runErr = fmt.Errorf("build %s: %w after %s", t.ID(), ErrTimeout, o.Timeout)
			} else {
				runErr = fmt.Errorf("build %s: %w", t.ID(), runErr)
			}
			code = -1
			break
		}
		if code != 0 {
			break
		}
	}
	res.ExitCode = code

	// A failed build publishes nothing, and the previous build's binaries
	// must not pass for its results either.
	var files []found
	if code == 0 && runErr == nil {
		files, err = findBinaries(ctx, base, engine.ResultDirs(pkg), since)
		if err != nil {
			runErr = fmt.Errorf("build %s: %w", t.ID(), err)
		}
	}
	if bins, err := sortBinaries(files, t.Binaries(), t.RepoPath()); err != nil {
		runErr = errors.Join(runErr, fmt.Errorf("build %s: %w", t.ID(), err))
	} else {
		res.Binaries = bins
	}
	for _, f := range files {
		res.RepoType = f.repo
	}
	res.Duration = time.Since(start)

	if log.err != nil {
		logger.Warn("build log write failed", "err", log.err)
	}
	for _, b := range res.Binaries {
		log.Printf("=== binary %s\n", b)
	}
	if runErr != nil {
		log.Printf("=== %v\n", runErr)
	}
	log.Printf("=== finished %s: exit code %d after %s, %d binaries\n",
		time.Now().UTC().Format(time.RFC3339), code, res.Duration.Round(time.Millisecond), len(res.Binaries))
	logger.Info("build finished", "exit_code", code, "duration", res.Duration, "binaries", len(res.Binaries), "err", runErr)
	return res, runErr
}
