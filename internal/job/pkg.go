package job

import (
	"context"
	"fmt"
	"time"

	"github.com/cloud-builder/cb/internal/build"
	"github.com/cloud-builder/cb/internal/buildroot"
	"github.com/cloud-builder/cb/internal/journal"
	"github.com/cloud-builder/cb/internal/message"
)

// pkg prepares the buildroot, builds the package and transfers the
// results; it returns the final response.
func (r *runner) pkg(ctx context.Context) *message.Response {
	layout, failed := r.prepare(ctx)
	if failed != nil {
		return failed
	}
	return r.build(ctx, layout)
}

// build runs the build step in a prepared buildroot.
func (r *runner) build(ctx context.Context, layout *buildroot.Layout) *message.Response {
	final := r.response(message.ServiceRun, message.PackageBuildSucceeded, "Package build finished")
	res := &message.PackageResult{
		LogFile:        r.t.BuildLog(),
		PrepareLogFile: r.t.PrepareLog(),
		SolverFile:     r.t.SolverFile(),
		BinaryPackages: []string{},
	}
	final.Package = res
	logf, err := r.openLog(r.t.BuildLog())
	if err != nil {
		final.ResponseCode, final.Message, res.ExitCode = message.PackageBuildFailed, "open build log: "+err.Error(), 1
		return final
	}
	defer logf.Close()
	start := time.Now()
	out, err := build.Run(ctx, build.Options{
		Target:      r.t,
		Layout:      layout,
		Arch:        r.t.Arch(),
		Timeout:     r.cfg.BuildTimeout,
		MaxLogBytes: r.cfg.MaxLogBytes,
		IDs:         r.cfg.IDs,
		Limits:      r.cfg.Limits,
		MaxWrite:    r.cfg.MaxWrite,
		LogIdle:     r.cfg.LogIdle,
		Log:         logf,
		Logger:      r.logger,
	})
	r.note(func(e *journal.Entry) { e.Build = time.Since(start) })
	r.save()
	switch {
	case err != nil:
		fmt.Fprintf(logf, "\nbuild failed: %v\n", err)
		r.logger.Error("package build failed", "err", err)
		final.ResponseCode, final.Message, res.ExitCode = message.PackageBuildFailed, "Package build failed: "+firstLine(err.Error()), 1
		if out != nil && out.ExitCode != 0 {
			res.ExitCode = out.ExitCode
		}
		return final
	case out.ExitCode != 0:
		final.ResponseCode, final.Message, res.ExitCode = message.PackageBuildFailed, fmt.Sprintf("Package build failed with exit code %d", out.ExitCode), out.ExitCode
		return final
	case len(out.Binaries) == 0:
		final.ResponseCode, final.Message, res.ExitCode = message.PackageBuildFailedNoBinaries, "Package build finished but produced no binaries", 1
		return final
	}
	res.BinaryPackages = out.Binaries
	if err := r.upload(ctx, out.Binaries, out.RepoType); err != nil {
		r.logger.Error("binaries sync failed", "err", err)
		final.ResponseCode, final.Message, res.ExitCode = message.PackageBinariesSyncFailed, "Binaries sync failed: "+firstLine(err.Error()), 1
		return final
	}
	r.logger.Info("package build succeeded", "binaries", len(out.Binaries), "engine", out.Engine)
	return final
}
