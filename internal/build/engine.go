package build

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"github.com/cloud-builder/cb/internal/buildroot"
)

// Engine knows how to build one kind of package source in a buildroot.
type Engine interface {
	// Name appears in the build log and in Result.Engine.
	Name() string
	// Detect reports whether the engine builds this package in this root.
	Detect(p *Package) bool
	// Steps are the commands of the build, run one after the other in the
	// sandbox; the first one that fails ends the build.
	Steps(p *Package) ([]Step, error)
	// ResultDirs are the directories (inside the root) where the engine's
	// tools leave the built packages.
	ResultDirs(p *Package) []ResultDir
}

// Step is one command of a build.
type Step struct {
	Argv []string
	Dir  string // working directory inside the root
}

// ResultDir is a directory inside the root that holds build results.
type ResultDir struct {
	Path string
	// Recursive also searches subdirectories (rpmbuild's RPMS/<arch>/).
	// dpkg-buildpackage writes into the parent of the source tree, which
	// is the buildroot's / for a debian/ tree; only its top level counts.
	Recursive bool
}

// recipeEngine is implemented by the engines of one kind of recipe
// (buildroot.KindDebian, KindDsc, KindSpec).
type recipeEngine interface {
	SourceKind() string
}

// buildsKind reports whether e may build a package whose buildroot was
// prepared for a recipe of kind (the layout's SourceKind; "" when not
// known). The preparation chose the recipe and installed what it needs:
// a Debian source tree that also ships an upstream .spec (dtach, many C
// projects) must not be handed to rpmbuild. Engines of no one recipe
// kind (the OBS build tool) build any.
func buildsKind(e Engine, kind string) bool {
	r, ok := e.(recipeEngine)
	return !ok || kind == "" || r.SourceKind() == kind
}

// chooseEngine returns the first of engines that detects its recipe in p
// and may build a recipe of kind (see buildsKind), or nil.
func chooseEngine(engines []Engine, p *Package, kind string) Engine {
	for _, e := range engines {
		if buildsKind(e, kind) && e.Detect(p) {
			return e
		}
	}
	return nil
}

// DefaultEngines is the detection order: the OBS build tool when the
// buildroot carries it and a build config, else the native tool of the
// recipe found in the package directory.
func DefaultEngines() []Engine {
	return []Engine{obsBuild{}, rpmBuild{}, dpkgTree{}, dpkgSource{}}
}

// Package is the package source as the engines see it, from the host, while
// no overlay is mounted.
type Package struct {
	Name string // package name
	Dir  string // package directory inside the root, /<name>
	// HostDir is the package directory on the host (in the upper layer,
	// where the buildroot preparation copied the sources).
	HostDir string
	Root    Tree
}

// Files lists the regular files in the package directory whose names end
// in suffix, sorted. Symlinks are skipped: the sources come from a git
// repository and a link could point anywhere on the runner.
func (p *Package) Files(suffix string) []string {
	ents, err := os.ReadDir(p.HostDir)
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range ents {
		if e.Type().IsRegular() && strings.HasSuffix(e.Name(), suffix) && !strings.HasPrefix(e.Name(), ".") {
			out = append(out, e.Name())
		}
	}
	sort.Strings(out)
	return out
}

// pick chooses the recipe among candidates: the only one, or the one named
// after the package when there are several.
func (p *Package) pick(candidates []string, suffix string) (string, error) {
	switch len(candidates) {
	case 0:
		return "", fmt.Errorf("no *%s file in %s", suffix, p.Name)
	case 1:
		return candidates[0], nil
	}
	for _, c := range candidates {
		if c == p.Name+suffix {
			return c, nil
		}
	}
	return "", fmt.Errorf("several *%s files in %s and none is named %s%s", suffix, p.Name, p.Name, suffix)
}

// Tree reads the buildroot's overlay layers from the host the way the
// overlay will show them: the topmost layer that has a path wins, and a
// whiteout there hides it.
type Tree struct {
	Layers []string // topmost first: upper, then the lower layers
}

// NewTree returns the tree of a layout.
func NewTree(l *buildroot.Layout) Tree {
	if l.Lower == "" {
		return Tree{Layers: []string{l.Merged}}
	}
	return Tree{Layers: append([]string{l.Upper}, strings.Split(l.Lower, ":")...)}
}

// Exists reports whether rel (a path inside the root) exists.
func (t Tree) Exists(rel string) bool {
	rel = filepath.Join("/", rel)
	for _, layer := range t.Layers {
		fi, err := os.Lstat(filepath.Join(layer, rel))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return false
		}
		return !isWhiteout(fi)
	}
	return false
}

// isWhiteout recognises overlayfs' mark for a deleted file: a character
// device with device number 0/0.
func isWhiteout(fi fs.FileInfo) bool {
	if fi.Mode()&fs.ModeCharDevice == 0 {
		return false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && st.Rdev == 0
}

// Entries lists the top-level entries of the package directory except
// hidden ones (.cb, .git), sorted.
func (p *Package) Entries() []string {
	ents, err := os.ReadDir(p.HostDir)
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), ".") {
			out = append(out, e.Name())
		}
	}
	return out
}
