package build

import (
	"path"

	"github.com/cloud-builder/cb/internal/buildroot"
)

// rpmTopdir is rpmbuild's working tree inside the buildroot, the same place
// the OBS build script uses.
const rpmTopdir = "/usr/src/packages"

// rpmBuild builds a .spec with rpmbuild, with the package directory's files
// as its SOURCES.
type rpmBuild struct{}

var _ Engine = rpmBuild{}

func (rpmBuild) Name() string { return "rpmbuild" }

func (rpmBuild) SourceKind() string { return buildroot.KindSpec }

func (rpmBuild) Detect(p *Package) bool { return len(p.Files(".spec")) > 0 }

func (rpmBuild) Steps(p *Package) ([]Step, error) {
	spec, err := p.pick(p.Files(".spec"), ".spec")
	if err != nil {
		return nil, err
	}
	mkdir := []string{"mkdir", "-p"}
	for _, d := range []string{"SOURCES", "SPECS", "BUILD", "BUILDROOT", "RPMS", "SRPMS"} {
		mkdir = append(mkdir, path.Join(rpmTopdir, d))
	}
	// Every top-level file and directory of the package goes to SOURCES,
	// so tarballs and patches are found whatever the spec calls them.
	// Hidden entries (.cb, .git) are not sources.
	cp := []string{"cp", "-a", "-t", path.Join(rpmTopdir, "SOURCES"), "--"}
	for _, f := range p.Entries() {
		cp = append(cp, path.Join(p.Dir, f))
	}
	steps := []Step{{Argv: mkdir, Dir: "/"}}
	if len(cp) > 5 {
		steps = append(steps, Step{Argv: cp, Dir: "/"})
	}
	// --nodeps: BuildRequires name rpm packages; in a Debian buildroot the
	// rpm database holds only the project's own packages (the preparation
	// installs those from the project's rpm-md repository) and the
	// description installs the Debian equivalents of the rest, so the
	// check could only fail spuriously.
	build := []string{"rpmbuild", "-ba", "--nodeps", "--define", "_topdir " + rpmTopdir, path.Join(p.Dir, spec)}
	return append(steps, Step{Argv: build, Dir: p.Dir}), nil
}

func (rpmBuild) ResultDirs(*Package) []ResultDir {
	return []ResultDir{
		{Path: path.Join(rpmTopdir, "RPMS"), Recursive: true},
		{Path: path.Join(rpmTopdir, "SRPMS"), Recursive: true},
	}
}
