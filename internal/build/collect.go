package build

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/cloud-builder/cb/internal/atomicfile"
	"github.com/cloud-builder/cb/internal/proc"
)

// Repository types of Result.RepoType.
const (
	RepoDeb = "deb"
	RepoRPM = "rpm"
)

// Arch directories. rpm packages sort by their rpm arch (x86_64, noarch,
// src, nosrc, …). Debian packages sort by their Debian architecture, as
// the file name and the control file state it: amd64, arm64, i386, …, and
// all for architecture-independent packages — the Debian counterpart of
// noarch. No translation to uname names happens, so a repository's arch
// directories are exactly what apt calls them.
var (
	rpmArchRe = regexp.MustCompile(`^[A-Za-z0-9_]+$`)
	debArchRe = regexp.MustCompile(`^[a-z0-9][a-z0-9-]*$`)
)

// classify tells a built package's repository type and arch directory
// from its name; ok is false for files that are not packages.
func classify(name string) (repo, arch string, ok bool) {
	switch {
	case strings.HasSuffix(name, ".src.rpm"):
		return RepoRPM, "src", true
	case strings.HasSuffix(name, ".nosrc.rpm"):
		return RepoRPM, "nosrc", true
	case strings.HasSuffix(name, ".rpm"):
		// rpmbuild names files NAME-VERSION-RELEASE.ARCH.rpm
		base := strings.TrimSuffix(name, ".rpm")
		if i := strings.LastIndexByte(base, '.'); i >= 0 && rpmArchRe.MatchString(base[i+1:]) {
			return RepoRPM, base[i+1:], true
		}
		return RepoRPM, "", true
	}
	for _, ext := range []string{".deb", ".udeb", ".ddeb"} {
		if strings.HasSuffix(name, ext) {
			// dpkg names files NAME_VERSION_ARCH.deb
			base := strings.TrimSuffix(name, ext)
			if i := strings.LastIndexByte(base, '_'); i >= 0 && debArchRe.MatchString(base[i+1:]) {
				return RepoDeb, base[i+1:], true
			}
			return RepoDeb, "", true
		}
	}
	return "", "", false
}

// queryArch asks the package tools for the arch of a package whose name
// does not tell it.
func queryArch(ctx context.Context, repo, file string) (string, error) {
	var argv []string
	re := debArchRe
	if repo == RepoRPM {
		argv = []string{"rpm", "-qp", "--nosignature", "--qf", "%{ARCH}", "--", file}
		re = rpmArchRe
	} else {
		argv = []string{"dpkg-deb", "--field", file, "Architecture"}
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	out, err := proc.Command(ctx, 0, argv...).Output()
	if err != nil {
		return "", fmt.Errorf("query arch of %s: %w", filepath.Base(file), err)
	}
	arch := strings.TrimSpace(string(out))
	if !re.MatchString(arch) {
		return "", fmt.Errorf("query arch of %s: unusable arch %q", filepath.Base(file), arch)
	}
	return arch, nil
}

// hostDir resolves rel below base on the host, refusing symlinks on the
// way: the build ran as root in the sandbox and could have replaced
// usr/src/packages by a link to anywhere on the runner.
func hostDir(base, rel string) (string, bool) {
	p := base
	for _, part := range strings.Split(strings.Trim(filepath.Clean("/"+rel), "/"), "/") {
		if part == "" {
			continue
		}
		p = filepath.Join(p, part)
		fi, err := os.Lstat(p)
		if err != nil || !fi.IsDir() {
			return "", false
		}
	}
	return p, true
}

// found is a built package in the root.
type found struct {
	path, repo, arch string
}

// findBinaries lists the packages written below the result dirs since the
// build started (anything older is a leftover, e.g. a .deb shipped with
// the sources).
func findBinaries(ctx context.Context, base string, dirs []ResultDir, since time.Time) ([]found, error) {
	var out []found
	seen := map[string]bool{}
	add := func(path string, info fs.FileInfo) error {
		repo, arch, ok := classify(info.Name())
		if !ok || !info.Mode().IsRegular() || info.ModTime().Before(since) || seen[path] {
			return nil
		}
		seen[path] = true
		if arch == "" {
			a, err := queryArch(ctx, repo, path)
			if err != nil {
				return err
			}
			arch = a
		}
		out = append(out, found{path: path, repo: repo, arch: arch})
		return nil
	}
	for _, d := range dirs {
		dir, ok := hostDir(base, d.Path)
		if !ok {
			continue
		}
		if !d.Recursive {
			ents, err := os.ReadDir(dir)
			if err != nil {
				return nil, fmt.Errorf("list %s: %w", d.Path, err)
			}
			for _, e := range ents {
				info, err := e.Info()
				if err != nil {
					continue
				}
				if err := add(filepath.Join(dir, e.Name()), info); err != nil {
					return nil, err
				}
			}
			continue
		}
		err := filepath.WalkDir(dir, func(path string, e fs.DirEntry, err error) error {
			if err != nil || e.IsDir() {
				return err
			}
			info, err := e.Info()
			if err != nil {
				return nil
			}
			return add(path, info)
		})
		if err != nil {
			return nil, fmt.Errorf("search %s: %w", d.Path, err)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].path < out[j].path })
	return out, nil
}

// sortBinaries moves the packages into a fresh tree
// <binaries>/<repoPath>/<arch>/ and then swaps it for the previous build's
// binaries, so the directory never mixes two builds. It returns the new
// absolute paths.
func sortBinaries(files []found, binaries, repoPath string) ([]string, error) {
	staging, err := os.MkdirTemp(filepath.Dir(binaries), "."+filepath.Base(binaries)+".new-")
	if err != nil {
		return nil, fmt.Errorf("sort binaries: %w", err)
	}
	defer os.RemoveAll(staging) // only left when something failed
	var rel []string
	for _, f := range files {
		r := filepath.Join(filepath.FromSlash(repoPath), f.arch, filepath.Base(f.path))
		dst := filepath.Join(staging, r)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return nil, fmt.Errorf("sort binaries: %w", err)
		}
		if err := move(f.path, dst); err != nil {
			return nil, fmt.Errorf("sort binaries: %w", err)
		}
		rel = append(rel, r)
	}
	if err := os.Chmod(staging, 0o755); err != nil {
		return nil, fmt.Errorf("sort binaries: %w", err)
	}
	if err := os.RemoveAll(binaries); err != nil {
		return nil, fmt.Errorf("remove previous binaries: %w", err)
	}
	if err := os.Rename(staging, binaries); err != nil {
		return nil, fmt.Errorf("sort binaries: %w", err)
	}
	out := make([]string, len(rel))
	for i, r := range rel {
		out[i] = filepath.Join(binaries, r)
	}
	return out, nil
}

// move renames src to dst, copying when they are on different file
// systems. Moving (rather than copying) also clears the upper layer, so a
// later build in the same layer cannot pick the file up again.
func move(src, dst string) error {
	err := os.Rename(src, dst)
	if !errors.Is(err, syscall.EXDEV) {
		return err
	}
	if err := atomicfile.Copy(src, dst, 0o644); err != nil {
		return err
	}
	return os.Remove(src)
}
