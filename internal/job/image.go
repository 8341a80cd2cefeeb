package job

import (
	"context"
	"fmt"
	"time"

	"github.com/cloud-builder/cb/internal/image"
	"github.com/cloud-builder/cb/internal/journal"
	"github.com/cloud-builder/cb/internal/message"
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
