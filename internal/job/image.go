package job

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cloud-builder/cb/internal/image"
	"github.com/cloud-builder/cb/internal/journal"
	"github.com/cloud-builder/cb/internal/message"
	"github.com/cloud-builder/cb/internal/target"
)

// image builds a KIWI image, bundles it as rpm and transfers it; it returns
// the final response.
func (r *runner) image(ctx context.Context) *message.Response {
	final := r.response(message.ServiceImage, message.ImageBuildSucceeded, "Image build bundled as RPM package")
	res := &message.ImageResult{LogFile: r.t.BuildLog(), SolverFile: r.t.SolverFile(), BinaryPackages: []string{}}
	final.Image = res
	fail := func(code, msg string) *message.Response {
		final.ResponseCode, final.Message = code, msg
		if res.ExitCode == 0 {
			res.ExitCode = 1
		}
		return final
	}
	meta, err := message.LoadMetadata(r.pkgDir())
	if err != nil {
		return fail(message.ImageBuildFailed, "Image metadata: "+firstLine(err.Error()))
	}
	spec, ok := meta.FindImage(r.req.Image.Selection, r.req.Image.Arch)
	if !ok {
		return fail(message.ImageBuildFailed, "Image selection vanished from metadata: "+r.req.Image.Profile())
	}
	if err := image.ValidateBuildArgs(spec.Selection.BuildArguments); err != nil {
		return fail(message.ImageBuildFailed, err.Error())
	}
	logf, err := r.openLog(r.t.BuildLog())
	if err != nil {
		return fail(message.ImageBuildFailed, "open build log: "+err.Error())
	}
	defer logf.Close()
	start := time.Now()
	out, err := image.Build(ctx, image.Options{
		Description: r.pkgDir(),
		Target:      r.t,
		BundleID:    bundleID(r.req.RequestID),
		Profiles:    spec.Selection.Profiles,
		BuildArgs:   spec.Selection.BuildArguments,
		Log:         logf,
		Logger:      r.logger,
		Timeout:     r.cfg.BuildTimeout,
		Limits:      r.cfg.Limits,

		AllowRepositories: r.cfg.AllowRepositories,
	})
	r.note(func(e *journal.Entry) { e.Build = time.Since(start) })
	r.save()
	switch {
	case err != nil:
		fmt.Fprintf(logf, "\nimage build failed: %v\n", err)
		if out != nil {
			res.ExitCode = out.ExitCode
		}
		return fail(message.ImageBuildFailed, "Image build failed: "+firstLine(err.Error()))
	case out.ExitCode != 0:
		res.ExitCode = out.ExitCode
		return fail(message.ImageBuildFailed, fmt.Sprintf("Image build failed with exit code %d", out.ExitCode))
	case len(out.Binaries) == 0:
		return fail(message.ImageBuildFailed, "Image build produced no bundle")
	}
	res.BinaryPackages = out.Binaries
	if err := r.upload(ctx, out.Binaries, out.RepoType); err != nil {
		return fail(message.ImageBinariesSyncFailed, "Binaries sync failed: "+firstLine(err.Error()))
	}
	return final
}

// bundleID is the kiwi bundle id of a build: the first group of the
// request id, unique enough per build and a valid rpm release string.
func bundleID(requestID string) string {
	for i, c := range requestID {
		if c == '-' {
			return requestID[:i]
		}
	}
	if len(requestID) > 12 {
		return requestID[:12]
	}
	return requestID
}

// ImageBuild is a stand-alone image build (cb-image): the description,
// the target directory and what kiwi gets, all from the command line.
type ImageBuild struct {
	Description string
	// TargetDir is <runner root>/<project>@<SELECTION>.<ARCH> below
	// cfg.RunnerRoot, or <dir>/<name>@<SELECTION>.<ARCH> elsewhere; the
	// logs, solver file and binaries go next to it.
	TargetDir string
	BundleID  string // default: the UTC build time
	RequestID string // for the log
	Profiles  []string
	BuildArgs []string
}

// Image is cb-image: it builds the image and sorts the bundle into the
// target's binaries directory. It neither talks to the broker nor
// transfers the bundle; on a runner, Run does both around the same build
// code. The build log goes to the target's build log and cfg.Tee, the
// progress lines to cfg.Progress.
func Image(ctx context.Context, cfg Config, o ImageBuild) (target.Target, *image.Result, error) {
	cfg.defaults()
	t, err := ImageTarget(o.TargetDir, cfg.RunnerRoot)
	if err != nil {
		return t, nil, err
	}
	logger := cfg.Logger
	if o.RequestID != "" {
		if err := message.ValidateName(o.RequestID); err != nil {
			return t, nil, fmt.Errorf("--request-id: %w", err)
		}
		logger = logger.With("request_id", o.RequestID)
	}
	if o.BundleID == "" {
		o.BundleID = image.TimeBundleID(time.Now())
	}
	if err := image.ValidateBuildArgs(o.BuildArgs); err != nil {
		return t, nil, err
	}
	if err := os.MkdirAll(filepath.Dir(t.BuildLog()), 0o755); err != nil {
		return t, nil, err
	}
	logf, err := os.OpenFile(t.BuildLog(), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return t, nil, fmt.Errorf("open build log: %w", err)
	}
	defer logf.Close()
	var log io.Writer = logf
	if cfg.Tee != nil {
		log = io.MultiWriter(logf, cfg.Tee)
	}
	res, err := image.Build(ctx, image.Options{
		Description: o.Description,
		Target:      t,
		BundleID:    o.BundleID,
		Profiles:    o.Profiles,
		BuildArgs:   o.BuildArgs,
		Log:         log,
		Progress:    cfg.Progress,
		CacheDir:    cfg.ImageCacheDir,
		Logger:      logger,
		Timeout:     cfg.BuildTimeout,
		Limits:      cfg.Limits,

		AllowRepositories: cfg.AllowRepositories,
	})
	if err != nil {
		fmt.Fprintf(logf, "\nimage build failed: %v\n", err)
		return t, res, err
	}
	return t, res, nil
}

// ImageTarget turns a cb-image --target-dir into a target. Below the
// runner root it is the runner's layout <root>/<project>@<SELECTION>.<ARCH>
// and the binaries land below the project's repository path; elsewhere
// <dir>/<name>@<SELECTION>.<ARCH> is a local target that sorts them below
// <SELECTION>.
func ImageTarget(targetDir, runnerRoot string) (target.Target, error) {
	abs, err := filepath.Abs(targetDir)
	if err != nil {
		return target.Target{}, err
	}
	if runnerRoot != "" {
		if root, err := filepath.Abs(runnerRoot); err == nil {
			if rel, err := filepath.Rel(root, abs); err == nil && strings.HasPrefix(filepath.ToSlash(rel), "projects/") {
				t, err := target.Parse(root, abs)
				if err != nil {
					return target.Target{}, fmt.Errorf("--target-dir: %w", err)
				}
				return t, nil
			}
		}
	}
	t, err := target.Parse(filepath.Dir(abs), abs)
	if err != nil {
		return target.Target{}, fmt.Errorf("--target-dir: %w", err)
	}
	return t, nil
}
