package build

import (
	"os"
	"path"
	"path/filepath"

	"github.com/cloud-builder/cb/internal/buildroot"
)

// dpkgTree builds a Debian source tree (debian/ in the package directory)
// in place. The results land in the parent directory, the buildroot's /.
//
// Only binary packages are built (-b): a source package of a non-native
// format needs the upstream tarball next to the tree, which a git checkout
// rarely has, and the repositories publish binaries only.
type dpkgTree struct{}

var _ Engine = dpkgTree{}

func (dpkgTree) Name() string { return "dpkg-buildpackage" }

func (dpkgTree) SourceKind() string { return buildroot.KindDebian }

func (dpkgTree) Detect(p *Package) bool {
	fi, err := os.Lstat(filepath.Join(p.HostDir, "debian", "control"))
	return err == nil && fi.Mode().IsRegular()
}

func (dpkgTree) Steps(p *Package) ([]Step, error) {
	return []Step{{Argv: dpkgBuildpackage(), Dir: p.Dir}}, nil
}

func (dpkgTree) ResultDirs(*Package) []ResultDir {
	return []ResultDir{{Path: "/"}}
}

// dpkgBuildpackage is the unsigned binary-only build; it runs as root in
// the sandbox, so no fakeroot is needed.
func dpkgBuildpackage() []string {
	return []string{"dpkg-buildpackage", "-us", "-uc", "-b"}
}

// dscBuildDir is where a .dsc is unpacked; its parent collects the results.
const dscBuildDir = "/usr/src/packages/BUILD"

// dpkgSource builds a Debian source package (.dsc and its tarballs in the
// package directory): dpkg-source -x unpacks it, dpkg-buildpackage builds
// the unpacked tree.
type dpkgSource struct{}

var _ Engine = dpkgSource{}

func (dpkgSource) Name() string { return "dpkg-source" }

func (dpkgSource) SourceKind() string { return buildroot.KindDsc }

func (dpkgSource) Detect(p *Package) bool { return len(p.Files(".dsc")) > 0 }

func (dpkgSource) Steps(p *Package) ([]Step, error) {
	dsc, err := p.pick(p.Files(".dsc"), ".dsc")
	if err != nil {
		return nil, err
	}
	tree := path.Join(dscBuildDir, p.Name)
	return []Step{
		// dpkg-source refuses to unpack into an existing directory; a
		// rebuild in the same upper layer starts from a clean one.
		{Argv: []string{"rm", "-rf", "--one-file-system", dscBuildDir}, Dir: "/"},
		{Argv: []string{"mkdir", "-p", dscBuildDir}, Dir: "/"},
		{Argv: []string{"dpkg-source", "-x", path.Join(p.Dir, dsc), tree}, Dir: dscBuildDir},
		{Argv: dpkgBuildpackage(), Dir: tree},
	}, nil
}

func (dpkgSource) ResultDirs(*Package) []ResultDir {
	return []ResultDir{{Path: dscBuildDir}}
}
