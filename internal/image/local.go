package image

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/cloud-builder/cb/internal/message"
	"github.com/cloud-builder/cb/internal/target"
)

// LocalTarget is the target of a local build of the image description in
// dir: <dir>/<name>@<selection>.<arch> with its .build.log, .solver.json and
// .binaries/<selection>/<arch>/ next to it, inside the description
// directory (a .gitignore entry "*@*" keeps them out of git).
func LocalTarget(dir, name, selection, arch string) target.Target {
	return target.Target{Root: dir, Project: name, Profile: selection + "." + arch}
}

// BuildLocal builds the image description in dir without a broker, as
// cb-ctl --build-image-local does: the selection's profiles and build
// arguments come from dir/.cb/cloud_builder.yml, arch defaults to the
// host's, and the build log streams to out (and into the target's build
// log file). It returns an error when no image bundle was produced.
func BuildLocal(ctx context.Context, dir, selection, arch string, out io.Writer, logger *slog.Logger) (*Result, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("local image build: %w", err)
	}
	meta, err := message.LoadMetadata(abs)
	if err != nil {
		return nil, fmt.Errorf("local image build: %w", err)
	}
	if !meta.IsImage() {
		return nil, fmt.Errorf("local image build: %s describes no images", filepath.Join(abs, message.MetadataFile))
	}
	host := HostArch()
	if arch == "" {
		arch = host
	}
	if err := message.ValidateName(selection); err != nil {
		return nil, fmt.Errorf("local image build: selection: %w", err)
	}
	spec, ok := meta.FindImage(selection, arch)
	if !ok {
		return nil, fmt.Errorf("local image build: no image selection %q for arch %s in %s", selection, arch, message.MetadataFile)
	}
	if arch != host {
		return nil, fmt.Errorf("local image build: incompatible build arch %s on a %s host", arch, host)
	}
	if err := ValidateBuildArgs(spec.Selection.BuildArguments); err != nil {
		return nil, fmt.Errorf("local image build: %w", err)
	}
	t := LocalTarget(abs, meta.Name, selection, arch)
	logf, err := os.OpenFile(t.BuildLog(), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("local image build: open build log: %w", err)
	}
	defer logf.Close()
	if out == nil {
		out = io.Discard
	}
	prefix := meta.Name + "@"
	res, err := Build(ctx, Options{
		Description: abs,
		Target:      t,
		BundleID:    TimeBundleID(time.Now()),
		Profiles:    spec.Selection.Profiles,
		BuildArgs:   spec.Selection.BuildArguments,
		Log:         io.MultiWriter(out, logf),
		Logger:      logger,
		skip:        func(name string) bool { return strings.HasPrefix(name, prefix) },
	})
	if err != nil {
		return res, fmt.Errorf("local image build: %w", err)
	}
	if res.ExitCode != 0 || len(res.Binaries) == 0 {
		return res, fmt.Errorf("local image build failed with exit code %d; log: %s", res.ExitCode, t.BuildLog())
	}
	return res, nil
}

// TimeBundleID is a bundle id from the build time, UTC, to the second:
// increasing from build to build, and a valid rpm release string.
func TimeBundleID(t time.Time) string { return t.UTC().Format("20060102150405") }

// HostArch is the machine name as uname -m prints it.
func HostArch() string {
	var u syscall.Utsname
	if err := syscall.Uname(&u); err != nil {
		return ""
	}
	b := make([]byte, 0, len(u.Machine))
	for _, c := range u.Machine {
		if c == 0 {
			break
		}
		b = append(b, byte(c))
	}
	return string(b)
}
