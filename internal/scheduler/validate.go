package scheduler

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/cloud-builder/cb/internal/image"
	"github.com/cloud-builder/cb/internal/message"
)

// Verdict is the outcome of validating a build request against the
// runner's source checkout: a response code and its human message.
type Verdict struct {
	Code     message.ResponseCode
	Message  string
	Metadata *message.Metadata // set when accepted
}

// Accepted reports whether the request may be built.
func (v Verdict) Accepted() bool {
	return v.Code == message.PackageRequestAccepted || v.Code == message.ImageRequestAccepted
}

// Validate runs the validation chain of the original scheduler, in its
// order: project exists, metadata exists, metadata valid, target
// configured for this runner group, arch matches the host.
func Validate(sources, runnerGroup, hostArch string, req *message.BuildRequest) Verdict {
	dir := filepath.Join(sources, filepath.FromSlash(req.Project))
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return Verdict{Code: message.ProjectDoesNotExist, Message: "Project does not exist: " + req.Project}
	}
	meta, err := message.LoadMetadata(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return Verdict{Code: message.ProjectMetadataDoesNotExist, Message: "Project metadata does not exist: " + filepath.ToSlash(filepath.Join(req.Project, message.MetadataFile))}
	case err != nil:
		return Verdict{Code: message.InvalidPackageMetadata, Message: "Invalid package metadata: " + relError(sources, err)}
	}
	if req.IsImage() {
		spec, ok := meta.FindImage(req.Image.Selection, req.Image.Arch)
		if !ok || (spec.RunnerGroup != runnerGroup && runnerGroup != "local") {
			return Verdict{Code: message.ImageTargetNotConfigured, Message: fmt.Sprintf("No image config for: %s in runner group %s", req.Image.Profile(), runnerGroup)}
		}
		if err := image.ValidateBuildArgs(spec.Selection.BuildArguments); err != nil {
			return Verdict{Code: message.InvalidPackageMetadata, Message: fmt.Sprintf("Invalid package metadata: %s/%s: %v", req.Project, message.MetadataFile, err)}
		}
	} else {
		d, ok := meta.FindDistribution(req.Package.Dist, req.Package.Arch)
		if !ok || (d.RunnerGroup != runnerGroup && runnerGroup != "local") {
			return Verdict{Code: message.PackageTargetNotConfigured, Message: fmt.Sprintf("No package config for: %s in runner group %s", req.Package.Profile(), runnerGroup)}
		}
	}
	if req.Arch() != hostArch {
		return Verdict{Code: message.IncompatibleBuildArch, Message: fmt.Sprintf("Incompatible arch: %s is not the runner's %s", req.Arch(), hostArch)}
	}
	if req.IsImage() {
		return Verdict{Code: message.ImageRequestAccepted, Message: "Accept image build request", Metadata: meta}
	}
	return Verdict{Code: message.PackageRequestAccepted, Message: "Accept package build request", Metadata: meta}
}

// relError shortens absolute checkout paths in err to repository paths.
func relError(sources string, err error) string {
	s := err.Error()
	prefix := filepath.Clean(sources) + string(filepath.Separator)
	for i := 0; i+len(prefix) <= len(s); i++ {
		if s[i:i+len(prefix)] == prefix {
			return s[:i] + s[i+len(prefix):]
		}
	}
	return s
}
