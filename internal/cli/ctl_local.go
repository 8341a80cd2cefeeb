package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/cloud-builder/cb/internal/image"
	"github.com/cloud-builder/cb/internal/job"
	"github.com/cloud-builder/cb/internal/message"
	"github.com/cloud-builder/cb/internal/scheduler"
)

// LocalBuild are the options of cb-ctl --build-package-local and
// --build-image-local: a build in the current directory without a broker.
type LocalBuild struct {
	Dir       string // package or image description directory (cwd)
	Dist      string // packages
	Selection string // images
	Arch      string // defaults to the host arch
	Clean     bool
}

func (o *LocalBuild) defaults() error {
	if o.Dir == "" {
		wd, err := os.Getwd()
		if err != nil {
			return err
		}
		o.Dir = wd
	}
	if o.Arch == "" {
		o.Arch = scheduler.HostArch()
	}
	return message.ValidateName(o.Arch)
}

// buildPackageLocal builds the package in o.Dir without a broker: the
// buildroot and logs live below the runner root as for a remote build, the
// logs stream to the terminal, and the binaries are copied next to the
// sources into <name>@DIST.ARCH.binaries/.
func buildPackageLocal(ctx context.Context, env *Env, c *Common, o LocalBuild) int {
	const name = "ctl"
	if err := o.defaults(); err != nil {
		return fail(env, name, err)
	}
	meta, err := message.LoadMetadata(o.Dir)
	if err != nil {
		return fail(env, name, err)
	}
	if o.Dist == "" {
		return fail(env, name, errors.New("--dist is required"))
	}
	if _, ok := meta.FindDistribution(o.Dist, o.Arch); !ok {
		return fail(env, name, fmt.Errorf("%s has no target %s.%s in %s", meta.Name, o.Dist, o.Arch, message.MetadataFile))
	}
	req := &message.BuildRequest{
		SchemaVersion: message.SchemaVersion, RequestID: "local", RunnerGroup: "local",
		Action: message.ActionPackageLocalhost, Project: "projects/local/" + meta.Name,
		Package: &message.PackageTarget{Dist: o.Dist, Arch: o.Arch},
	}
	host, _ := os.Hostname()
	step := &job.Step{Config: job.Config{
		RunnerRoot: env.Paths().RunnerRoot, PackageDir: o.Dir, ThisHost: host, RunnerGroup: "local",
		Tee: env.Stdout, Logger: c.Logger(env.Stderr, name),
	}, Request: req, Clean: o.Clean}
	fmt.Fprintf(env.Stderr, "==> preparing buildroot for %s %s.%s\n", meta.Name, o.Dist, o.Arch)
	if _, failed, err := step.Prepare(ctx); err != nil {
		return fail(env, name, err)
	} else if failed != nil {
		return fail(env, name, errors.New(failed.Message))
	}
	fmt.Fprintf(env.Stderr, "==> building %s\n", meta.Name)
	final, err := step.Build(ctx)
	if err != nil {
		return fail(env, name, err)
	}
	if !message.IsSuccess(final.ResponseCode) {
		return fail(env, name, errors.New(final.Message))
	}
	out := filepath.Join(o.Dir, fmt.Sprintf("%s@%s.%s.binaries", meta.Name, o.Dist, o.Arch))
	files, err := copyBinaries(final.Package.BinaryPackages, out)
	if err != nil {
		return fail(env, name, err)
	}
	fmt.Fprintf(env.Stderr, "==> %d binaries in %s\n", len(files), out)
	for _, f := range files {
		fmt.Fprintln(env.Stdout, f)
	}
	return ExitOK
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
		if err := copyFile(p, dst); err != nil {
			return nil, fmt.Errorf("copy %s: %w", filepath.Base(p), err)
		}
		out = append(out, dst)
	}
	return out, nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp := dst + ".part"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, in); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, dst)
}

// buildImageLocal builds the image description in o.Dir without a broker.
func buildImageLocal(ctx context.Context, env *Env, c *Common, o LocalBuild) int {
	const name = "ctl"
	if err := o.defaults(); err != nil {
		return fail(env, name, err)
	}
	if o.Selection == "" {
		return fail(env, name, errors.New("--selection is required"))
	}
	res, err := image.BuildLocal(ctx, o.Dir, o.Selection, o.Arch, env.Stdout, c.Logger(env.Stderr, name))
	if err != nil {
		return fail(env, name, err)
	}
	if res.ExitCode != 0 || len(res.Binaries) == 0 {
		return fail(env, name, fmt.Errorf("image build failed (exit code %d)", res.ExitCode))
	}
	fmt.Fprintf(env.Stderr, "==> image bundle: %s\n", strings.Join(res.Binaries, ", "))
	return ExitOK
}
