package scheduler

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cloud-builder/cb/internal/message"
)

// sourceTree writes a fake checkout with the packages and images the
// validation chain looks at.
func sourceTree(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	write := func(rel, content string) {
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("projects/MS/xclock/.cb/cloud_builder.yml", `schema_version: 0.1
name: xclock
distributions:
  - dist: TW
    arch: x86_64
    runner_group: suse
  - dist: TW
    arch: aarch64
    runner_group: suse
`)
	write("projects/MS/nometa/xclock.spec", "Name: nometa\n")
	write("projects/MS/broken/.cb/cloud_builder.yml", "schema_version: 0.1\nname: broken\ndistributions:\n  - dist: TW\n")
	write("projects/images/disk/.cb/cloud_builder.yml", `schema_version: 0.1
name: disk
images:
  - arch: x86_64
    runner_group: suse
    selection:
      name: standard
  - arch: x86_64
    runner_group: suse
    selection:
      name: evil
      build_arguments: ["--target-dir=/etc"]
`)
	return root
}

func pkgRequest(project, dist, arch string) *message.BuildRequest {
	return &message.BuildRequest{SchemaVersion: 0.2, RequestID: "r", RunnerGroup: "suse",
		Action: message.ActionPackageRebuild, Project: project,
		Package: &message.PackageTarget{Dist: dist, Arch: arch}}
}

func imgRequest(project, selection, arch string) *message.BuildRequest {
	return &message.BuildRequest{SchemaVersion: 0.2, RequestID: "r", RunnerGroup: "suse",
		Action: message.ActionImageRebuild, Project: project,
		Image: &message.ImageTarget{Selection: selection, Arch: arch}}
}

func TestValidationChain(t *testing.T) {
	src := sourceTree(t)
	tests := []struct {
		name  string
		req   *message.BuildRequest
		group string
		want  message.ResponseCode
		text  string // part of the message
	}{
		{"accepted", pkgRequest("projects/MS/xclock", "TW", "x86_64"), "suse", message.PackageRequestAccepted, "Accept"},
		{"project does not exist", pkgRequest("projects/MS/nothere", "TW", "x86_64"), "suse", message.ProjectDoesNotExist, "projects/MS/nothere"},
		{"metadata does not exist", pkgRequest("projects/MS/nometa", "TW", "x86_64"), "suse", message.ProjectMetadataDoesNotExist, ".cb/cloud_builder.yml"},
		{"invalid metadata names file and field", pkgRequest("projects/MS/broken", "TW", "x86_64"), "suse", message.InvalidPackageMetadata, "projects/MS/broken/.cb/cloud_builder.yml: distributions[0].arch: required"},
		{"dist not configured", pkgRequest("projects/MS/xclock", "Leap", "x86_64"), "suse", message.PackageTargetNotConfigured, "No package config for: Leap.x86_64 in runner group suse"},
		{"other runner group", pkgRequest("projects/MS/xclock", "TW", "x86_64"), "fedora", message.PackageTargetNotConfigured, "runner group fedora"},
		{"local group accepts any", pkgRequest("projects/MS/xclock", "TW", "x86_64"), "local", message.PackageRequestAccepted, ""},
		{"incompatible arch", pkgRequest("projects/MS/xclock", "TW", "aarch64"), "suse", message.IncompatibleBuildArch, "aarch64"},
		{"image accepted", imgRequest("projects/images/disk", "standard", "x86_64"), "suse", message.ImageRequestAccepted, ""},
		{"image selection not configured", imgRequest("projects/images/disk", "other", "x86_64"), "suse", message.ImageTargetNotConfigured, "other.x86_64"},
		{"image build argument off the allow-list", imgRequest("projects/images/disk", "evil", "x86_64"), "suse", message.InvalidPackageMetadata, "--target-dir"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := Validate(src, tc.group, "x86_64", tc.req)
			if v.Code != tc.want {
				t.Fatalf("code = %q (%s), want %q", v.Code, v.Message, tc.want)
			}
			if tc.text != "" && !strings.Contains(v.Message, tc.text) {
				t.Fatalf("message %q does not contain %q", v.Message, tc.text)
			}
			if v.Accepted() != (v.Metadata != nil) {
				t.Fatalf("accepted verdict without metadata or the reverse: %+v", v)
			}
		})
	}
}

func TestScriptQuotesArguments(t *testing.T) {
	got := scriptFor([]string{"/usr/bin/cb", "job", "--journal", "/r/it's here.yml"})
	want := "#!/bin/sh\n# started by cb-scheduler; the job runs from this argument vector\nexec /usr/bin/cb job --journal '/r/it'\\''s here.yml'\n"
	if got != want {
		t.Fatalf("scriptFor = %q\nwant %q", got, want)
	}
}
