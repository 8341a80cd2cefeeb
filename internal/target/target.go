// Package target names the runner-state files of one build target below a
// runner root (SPEC §5). Every service that reads or writes runner state
// derives its paths from here, so the layout is defined once.
//
//	<root>/<project>@<DIST|SELECTION>.<ARCH>            buildroot / image target dir
//	<root>/<project>@<P>.sh .pid .run.log .prepare.log .build.log
//	<root>/<project>@<P>.solver.json .result.yml .binaries/
//	<root>/scheduled/<name>@<P>.pid
//	<root>/heartbeat.lease                               renewed by every heartbeat that reached the broker
package target

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/cloud-builder/cb/internal/message"
)

// LeaseFile is the runner's heartbeat lease: the scheduler renews it each
// time a heartbeat reached the broker, and a job stops when it is stale.
func LeaseFile(root string) string { return filepath.Join(root, "heartbeat.lease") }

// Target is one build target on a runner.
type Target struct {
	Root    string // runner root
	Project string // validated project path, projects/...
	Profile string // DIST.ARCH or SELECTION.ARCH
}

// New validates project and profile parts and returns the target.
func New(root, project, distOrSelection, arch string) (Target, error) {
	if err := message.ValidateProject(project); err != nil {
		return Target{}, err
	}
	for _, n := range []string{distOrSelection, arch} {
		if err := message.ValidateName(n); err != nil {
			return Target{}, fmt.Errorf("target %s: %w", project, err)
		}
	}
	return Target{Root: root, Project: project, Profile: distOrSelection + "." + arch}, nil
}

// Local is the target of a build outside a runner (cb-ctl
// --build-image-local, a cb-image --target-dir elsewhere):
// <dir>/<name>@<DIST|SELECTION>.<ARCH>, with the logs, solver file and
// binaries next to it. Its project is the bare name.
func Local(dir, name, distOrSelection, arch string) (Target, error) {
	for _, n := range []string{name, distOrSelection, arch} {
		if err := message.ValidateName(n); err != nil {
			return Target{}, fmt.Errorf("target %s: %w", name, err)
		}
	}
	return Target{Root: dir, Project: name, Profile: distOrSelection + "." + arch}, nil
}

// IsLocal reports whether t was made by Local rather than New.
func (t Target) IsLocal() bool { return !strings.Contains(t.Project, "/") }

// Parse is the inverse of Dir: it turns the target directory dir below
// root (<root>/<project>@<DIST|SELECTION>.<ARCH>) back into the target,
// validated as New and Local validate. A project with a slash is a
// runner project (projects/...); a bare name is a Local target. An empty
// root takes dir as relative to the runner root.
func Parse(root, dir string) (Target, error) {
	rel := filepath.ToSlash(dir)
	if root != "" {
		r, err := filepath.Rel(filepath.Clean(root), filepath.Clean(dir))
		if err != nil || r == ".." || strings.HasPrefix(r, "../") || filepath.IsAbs(r) {
			return Target{}, fmt.Errorf("target %s is not below %s", dir, root)
		}
		rel = filepath.ToSlash(r)
	}
	// Project paths cannot contain '@', so the first one ends the project.
	project, profile, ok := strings.Cut(rel, "@")
	if !ok {
		return Target{}, fmt.Errorf("target %s: %w", dir, errNotTarget)
	}
	i := strings.LastIndexByte(profile, '.')
	if i <= 0 || i == len(profile)-1 {
		return Target{}, fmt.Errorf("target %s: profile %q: want DIST.ARCH or SELECTION.ARCH", dir, profile)
	}
	if !strings.Contains(project, "/") {
		return Local(root, project, profile[:i], profile[i+1:])
	}
	return New(root, project, profile[:i], profile[i+1:])
}

var errNotTarget = errors.New("want <project>@<DIST|SELECTION>.<ARCH>")

// ForRequest returns the target a build request addresses.
func ForRequest(root string, r *message.BuildRequest) (Target, error) {
	switch {
	case r.Package != nil:
		return New(root, r.Project, r.Package.Dist, r.Package.Arch)
	case r.Image != nil:
		return New(root, r.Project, r.Image.Selection, r.Image.Arch)
	}
	return Target{}, fmt.Errorf("request %s has neither package nor image", r.RequestID)
}

// Name is the package or image name.
func (t Target) Name() string { return filepath.Base(t.Project) }

// ID is <name>@<profile>, unique per runner within one project name space.
func (t Target) ID() string { return t.Name() + "@" + t.Profile }

// Dir is the buildroot (packages) or image target directory.
func (t Target) Dir() string {
	return filepath.Join(t.Root, filepath.FromSlash(t.Project)+"@"+t.Profile)
}

func (t Target) file(suffix string) string { return t.Dir() + suffix }

func (t Target) Script() string     { return t.file(".sh") }
func (t Target) PIDFile() string    { return t.file(".pid") }
func (t Target) RunLog() string     { return t.file(".run.log") }
func (t Target) PrepareLog() string { return t.file(".prepare.log") }
func (t Target) BuildLog() string   { return t.file(".build.log") }
func (t Target) SolverFile() string { return t.file(".solver.json") }
func (t Target) ResultFile() string { return t.file(".result.yml") }
func (t Target) Binaries() string   { return t.file(".binaries") }

// Work is scratch space of the target (overlay upper/work dirs, staging);
// it is not part of the original layout and may be removed at any time
// while no build runs.
func (t Target) Work() string { return t.file(".work") }

// ScheduledFile is the build-limit accounting file of the target.
func (t Target) ScheduledFile() string {
	return filepath.Join(t.Root, "scheduled", t.ID()+".pid")
}

// RepoPath is the repository path the target's binaries publish to:
// the project's parent path plus the dist or selection, as the original
// sorted them (projects/MS/xclock@TW.x86_64 -> projects/MS/TW).
func (t Target) RepoPath() string {
	return filepath.ToSlash(filepath.Join(filepath.Dir(t.Project), t.DistOrSelection()))
}

// DistOrSelection is the profile without the arch.
func (t Target) DistOrSelection() string {
	for i := len(t.Profile) - 1; i >= 0; i-- {
		if t.Profile[i] == '.' {
			return t.Profile[:i]
		}
	}
	return t.Profile
}

// Arch is the profile's arch.
func (t Target) Arch() string {
	for i := len(t.Profile) - 1; i >= 0; i-- {
		if t.Profile[i] == '.' {
			return t.Profile[i+1:]
		}
	}
	return ""
}
