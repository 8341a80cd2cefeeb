package job

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cloud-builder/cb/internal/atomicfile"
	"github.com/cloud-builder/cb/internal/image"
	"github.com/cloud-builder/cb/internal/message"
	"github.com/cloud-builder/cb/internal/proc"
	"github.com/cloud-builder/cb/internal/target"
)

// Local names a build of the package or image description in Dir without
// a broker (cb-ctl --build-package-local, --build-image-local,
// --build-dependencies-local).
type Local struct {
	Dir       string // package or image description directory; default the working directory
	Dist      string // packages
	Selection string // images
	Arch      string // default the host's arch
	Clean     bool   // packages: do not reuse a cached buildroot
}

func (o *Local) defaults() error {
	if o.Dir == "" {
		wd, err := os.Getwd()
		if err != nil {
			return err
		}
		o.Dir = wd
	}
	abs, err := filepath.Abs(o.Dir)
	if err != nil {
		return err
	}
	o.Dir = abs
	if o.Arch == "" {
		o.Arch = proc.HostArch()
	}
	return message.ValidateName(o.Arch)
}

// localProject is where local package builds keep their targets below
// the runner root.
const localProject = "projects/local/"

// LocalPackage builds the package in o.Dir without a broker: the
// buildroot and logs live below cfg.RunnerRoot as for a remote build, the
// logs go to cfg.Tee, and the binaries are copied next to the sources into
// <name>@DIST.ARCH.binaries/. It returns the copied files.
func LocalPackage(ctx context.Context, cfg Config, o Local) ([]string, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	meta, err := message.LoadMetadata(o.Dir)
	if err != nil {
		return nil, err
	}
	if o.Dist == "" {
		return nil, errors.New("--dist is required")
	}
	if _, ok := meta.FindDistribution(o.Dist, o.Arch); !ok {
		return nil, fmt.Errorf("%s has no target %s.%s in %s", meta.Name, o.Dist, o.Arch, message.MetadataFile)
	}
	req := &message.BuildRequest{
		SchemaVersion: message.SchemaVersion, RequestID: "local", RunnerGroup: "local",
		Action: message.ActionPackageLocalhost, Project: localProject + meta.Name,
		Package: &message.PackageTarget{Dist: o.Dist, Arch: o.Arch},
	}
	cfg.PackageDir = o.Dir
	progress := cfg.Progress
	if progress == nil {
		progress = io.Discard
	}
	fmt.Fprintf(progress, "==> preparing buildroot for %s %s.%s\n", meta.Name, o.Dist, o.Arch)
	if _, failed, err := Prepare(ctx, cfg, req, o.Clean); err != nil {
		return nil, err
	} else if failed != nil {
		return nil, errors.New(failed.Message)
	}
	fmt.Fprintf(progress, "==> building %s\n", meta.Name)
	final, err := Build(ctx, cfg, req)
	if err != nil {
		return nil, err
	}
	if !message.IsSuccess(final.ResponseCode) {
		return nil, errors.New(final.Message)
	}
	out := filepath.Join(o.Dir, fmt.Sprintf("%s@%s.%s.binaries", meta.Name, o.Dist, o.Arch))
	files, err := copyBinaries(final.Package.BinaryPackages, out)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(progress, "==> %d binaries in %s\n", len(files), out)
	return files, nil
}

// copyBinaries copies the built files into dir/<arch dir>/, replacing what
// an earlier local build left there.
func copyBinaries(paths []string, dir string) ([]string, error) {
	if len(paths) == 0 {
		return nil, errors.New("no binaries were produced")
	}
	if err := os.RemoveAll(dir); err != nil {
		return nil, err
	}
	var out []string
	for _, p := range paths {
		dst := filepath.Join(dir, filepath.Base(filepath.Dir(p)), filepath.Base(p))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return nil, err
		}
		if err := atomicfile.Copy(p, dst, 0o644); err != nil {
			return nil, err
		}
		out = append(out, dst)
	}
	return out, nil
}

// LocalImage builds the image description in o.Dir without a broker: the
// selection's profiles and build arguments come from
// o.Dir/.cb/cloud_builder.yml, the build log streams to cfg.Tee and into
// the local target's build log next to the description. It returns an
// error when no image bundle was produced.
func LocalImage(ctx context.Context, cfg Config, o Local) (*image.Result, error) {
	cfg.defaults()
	if err := o.defaults(); err != nil {
		return nil, err
	}
	if o.Selection == "" {
		return nil, errors.New("--selection is required")
	}
	meta, err := message.LoadMetadata(o.Dir)
	if err != nil {
		return nil, fmt.Errorf("local image build: %w", err)
	}
	if !meta.IsImage() {
		return nil, fmt.Errorf("local image build: %s describes no images", filepath.Join(o.Dir, message.MetadataFile))
	}
	if err := message.ValidateName(o.Selection); err != nil {
		return nil, fmt.Errorf("local image build: selection: %w", err)
	}
	spec, ok := meta.FindImage(o.Selection, o.Arch)
	if !ok {
		return nil, fmt.Errorf("local image build: no image selection %q for arch %s in %s", o.Selection, o.Arch, message.MetadataFile)
	}
	if host := proc.HostArch(); o.Arch != host {
		return nil, fmt.Errorf("local image build: incompatible build arch %s on a %s host", o.Arch, host)
	}
	if err := image.ValidateBuildArgs(spec.Selection.BuildArguments); err != nil {
		return nil, fmt.Errorf("local image build: %w", err)
	}
	t, err := target.Local(o.Dir, meta.Name, o.Selection, o.Arch)
	if err != nil {
		return nil, fmt.Errorf("local image build: %w", err)
	}
	logf, err := os.OpenFile(t.BuildLog(), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("local image build: open build log: %w", err)
	}
	defer logf.Close()
	out := cfg.Tee
	if out == nil {
		out = io.Discard
	}
	prefix := meta.Name + "@"
	res, err := image.Build(ctx, image.Options{
		Description: o.Dir,
		Target:      t,
		BundleID:    image.TimeBundleID(time.Now()),
		Profiles:    spec.Selection.Profiles,
		BuildArgs:   spec.Selection.BuildArguments,
		Log:         io.MultiWriter(out, logf),
		CacheDir:    cfg.ImageCacheDir,
		Logger:      cfg.Logger,
		Timeout:     cfg.BuildTimeout,
		Limits:      cfg.Limits,
		Skip:        func(name string) bool { return strings.HasPrefix(name, prefix) },

		AllowRepositories: cfg.AllowRepositories,
	})
	if err != nil {
		return res, fmt.Errorf("local image build: %w", err)
	}
	if res.ExitCode != 0 || len(res.Binaries) == 0 {
		return res, fmt.Errorf("local image build failed with exit code %d; log: %s", res.ExitCode, t.BuildLog())
	}
	return res, nil
}
