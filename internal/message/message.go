// Package message holds the wire messages of Cloud Builder: build requests,
// responses, info requests and info responses, plus the per-package
// .cb/cloud_builder.yml. Field names, nesting and response codes match the
// original Python services so both can share one broker.
//
// Decoding is defensive: every message arrives from the network, so the
// decoders bound the document size and alias expansion, check every field's
// type, validate names and project paths, and name the offending field in
// their errors. Unknown fields are ignored.
package message

import (
	"bytes"
	"fmt"
	"os"
	"time"

	"go.yaml.in/yaml/v3"
)

// PackageTarget selects a package build: DIST.ARCH.
type PackageTarget struct {
	Arch string `yaml:"arch" json:"arch"`
	Dist string `yaml:"dist" json:"dist"`
}

// Profile is the kiwi profile / target name DIST.ARCH.
func (t PackageTarget) Profile() string { return t.Dist + "." + t.Arch }

// ImageTarget selects an image build: SELECTION.ARCH.
type ImageTarget struct {
	Arch      string `yaml:"arch" json:"arch"`
	Selection string `yaml:"selection" json:"selection"`
}

// Profile is the target name SELECTION.ARCH.
func (t ImageTarget) Profile() string { return t.Selection + "." + t.Arch }

// BuildRequest is sent to a runner group topic.
type BuildRequest struct {
	Action string `yaml:"action" json:"action"`
	// FreshBuildRoot is an extension: the request was caused by a change of
	// the package's build metadata (.cb/), so a cached buildroot must not be
	// reused. On the wire it travels in a record header (the original's
	// schema refuses unknown fields); the field is kept in the runner's
	// journal. Encode a request for the wire with WireRequest.
	FreshBuildRoot bool           `yaml:"fresh_build_root,omitempty" json:"fresh_build_root,omitempty"`
	Image          *ImageTarget   `yaml:"image,omitempty" json:"image,omitempty"`
	Package        *PackageTarget `yaml:"package,omitempty" json:"package,omitempty"`
	Project        string         `yaml:"project" json:"project"`
	RequestID      string         `yaml:"request_id" json:"request_id"`
	RunnerGroup    string         `yaml:"runner_group" json:"runner_group"`
	SchemaVersion  float64        `yaml:"schema_version" json:"schema_version"`
}

// WireRequest returns a copy of r without the extension fields, ready to
// be encoded for the original's build_request_schema.
func (r BuildRequest) WireRequest() *BuildRequest {
	r.FreshBuildRoot = false
	return &r
}

// IsImage reports whether r requests an image build.
func (r *BuildRequest) IsImage() bool { return r.Image != nil }

// Name is the package or image name: the last element of the project.
func (r *BuildRequest) Name() string { return baseName(r.Project) }

// Profile is DIST.ARCH or SELECTION.ARCH.
func (r *BuildRequest) Profile() string {
	if r.Image != nil {
		return r.Image.Profile()
	}
	if r.Package != nil {
		return r.Package.Profile()
	}
	return ""
}

// Arch is the requested architecture.
func (r *BuildRequest) Arch() string {
	if r.Image != nil {
		return r.Image.Arch
	}
	if r.Package != nil {
		return r.Package.Arch
	}
	return ""
}

// Target is the target block of a response: arch plus dist or selection.
type Target struct {
	Arch      string `yaml:"arch" json:"arch"`
	Dist      string `yaml:"dist,omitempty" json:"dist,omitempty"`
	Selection string `yaml:"selection,omitempty" json:"selection,omitempty"`
}

// PackagePrepare is the package_prepare block after buildroot creation.
type PackagePrepare struct {
	BuildRoot      string `yaml:"build_root" json:"build_root"`
	ExitCode       int    `yaml:"exit_code" json:"exit_code"`
	PrepareLogFile string `yaml:"prepare_log_file" json:"prepare_log_file"`
	SolverFile     string `yaml:"solver_file" json:"solver_file"`
}

// PackageResult is the package block after a package build.
type PackageResult struct {
	BinaryPackages []string `yaml:"binary_packages" json:"binary_packages"`
	ExitCode       int      `yaml:"exit_code" json:"exit_code"`
	LogFile        string   `yaml:"log_file" json:"log_file"`
	PrepareLogFile string   `yaml:"prepare_log_file" json:"prepare_log_file"`
	SolverFile     string   `yaml:"solver_file" json:"solver_file"`
}

// ImageResult is the image block after an image build.
type ImageResult struct {
	BinaryPackages []string `yaml:"binary_packages" json:"binary_packages"`
	ExitCode       int      `yaml:"exit_code" json:"exit_code"`
	LogFile        string   `yaml:"log_file" json:"log_file"`
	SolverFile     string   `yaml:"solver_file" json:"solver_file"`
}

// Response is written to cb-response by every service.
type Response struct {
	Identity       string          `yaml:"identity" json:"identity"`
	Image          *ImageResult    `yaml:"image,omitempty" json:"image,omitempty"`
	Message        string          `yaml:"message" json:"message"`
	Package        *PackageResult  `yaml:"package,omitempty" json:"package,omitempty"`
	PackagePrepare *PackagePrepare `yaml:"package_prepare,omitempty" json:"package_prepare,omitempty"`
	Project        string          `yaml:"project" json:"project"`
	RequestID      string          `yaml:"request_id" json:"request_id"`
	ResponseCode   ResponseCode    `yaml:"response_code" json:"response_code"`
	SchemaVersion  float64         `yaml:"schema_version" json:"schema_version"`
	Target         *Target         `yaml:"target,omitempty" json:"target,omitempty"`
}

// InfoRequest asks runners about one target.
type InfoRequest struct {
	Image         *ImageTarget   `yaml:"image,omitempty" json:"image,omitempty"`
	Package       *PackageTarget `yaml:"package,omitempty" json:"package,omitempty"`
	Project       string         `yaml:"project" json:"project"`
	RequestID     string         `yaml:"request_id" json:"request_id"`
	SchemaVersion float64        `yaml:"schema_version" json:"schema_version"`
}

// InfoPackage is the package block of an info response.
type InfoPackage struct {
	Arch           string `yaml:"arch" json:"arch"`
	Dist           string `yaml:"dist" json:"dist"`
	PrepareLogFile string `yaml:"prepare_log_file" json:"prepare_log_file"`
}

// InfoResponse is a runner's answer to an InfoRequest.
type InfoResponse struct {
	// ArtifactURL is an extension: the base URL of the runner's artifact
	// endpoint for this target (logs, solver file, binaries). It travels
	// in a record header, never in the body: the original's info-response
	// schema refuses unknown fields and would drop the whole answer.
	ArtifactURL         string       `yaml:"-" json:"artifact_url,omitempty"`
	BinaryPackages      []string     `yaml:"binary_packages" json:"binary_packages"`
	BuildStatus         string       `yaml:"build_status" json:"build_status"`
	Identity            string       `yaml:"identity" json:"identity"`
	Image               *ImageTarget `yaml:"image,omitempty" json:"image,omitempty"`
	IsRunning           bool         `yaml:"is_running" json:"is_running"`
	LogFile             string       `yaml:"log_file" json:"log_file"`
	Package             *InfoPackage `yaml:"package,omitempty" json:"package,omitempty"`
	Project             string       `yaml:"project" json:"project"`
	RequestID           string       `yaml:"request_id" json:"request_id"`
	SchemaVersion       float64      `yaml:"schema_version" json:"schema_version"`
	SolverFile          string       `yaml:"solver_file" json:"solver_file"`
	SourceIP            string       `yaml:"source_ip" json:"source_ip"`
	UTCModificationTime string       `yaml:"utc_modification_time" json:"utc_modification_time"`
}

// None is how the original writes a missing path or time.
const None = "none"

// TimeFormat is the layout of utc_modification_time.
const TimeFormat = "2006-01-02 15:04:05.000000"

// FormatTime renders t as utc_modification_time.
func FormatTime(t time.Time) string { return t.UTC().Format(TimeFormat) }

// Identity builds SERVICE:HOST:PID:NAME.
func Identity(service, host, name string) string {
	return fmt.Sprintf("%s:%s:%d:%s", service, host, os.Getpid(), name)
}

// Service names used in identities.
const (
	ServiceFetch     = "CBFetch"
	ServiceScheduler = "CBScheduler"
	ServicePrepare   = "CBPrepare"
	ServiceRun       = "CBRun"
	ServiceImage     = "CBImage"
	ServiceInfo      = "CBInfo"
	ServiceCollect   = "CBCollect"
	ServiceDepsolver = "CBDepsolver"
	ServiceCtl       = "CBCtl"
)

// Encode renders a message as YAML. Every message type's fields are declared
// in key order, so the output has sorted keys as the original's yaml.dump.
func Encode(v any) ([]byte, error) {
	b, err := yaml.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode message: %w", err)
	}
	// A plain scalar "=" is YAML 1.1's value-key indicator: PyYAML's
	// safe_load, which the original services read with, refuses the whole
	// document ("could not determine a constructor for the tag
	// tag:yaml.org,2002:value"). yaml.v3 follows YAML 1.2 and leaves it
	// unquoted, so quote it. The cheap byte check keeps the common path at a
	// single marshal.
	if bytes.Contains(b, []byte(" =\n")) {
		return encodeQuotingValueIndicator(v)
	}
	return b, nil
}

func encodeQuotingValueIndicator(v any) ([]byte, error) {
	var n yaml.Node
	if err := n.Encode(v); err != nil {
		return nil, fmt.Errorf("encode message: %w", err)
	}
	quoteValueIndicator(&n)
	b, err := yaml.Marshal(&n)
	if err != nil {
		return nil, fmt.Errorf("encode message: %w", err)
	}
	return b, nil
}

func quoteValueIndicator(n *yaml.Node) {
	if n.Kind == yaml.ScalarNode && n.Value == "=" && n.Style == 0 {
		n.Style = yaml.SingleQuotedStyle
	}
	for _, c := range n.Content {
		quoteValueIndicator(c)
	}
}

func baseName(p string) string {
	for i := len(p) - 1; i >= 0; i-- {
		if p[i] == '/' {
			return p[i+1:]
		}
	}
	return p
}
