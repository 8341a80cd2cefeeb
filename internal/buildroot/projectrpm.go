package buildroot

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/cloud-builder/cb/internal/sandbox"
	"github.com/cloud-builder/cb/internal/target"
)

// maxRPM bounds one package download.
const maxRPM = 2 << 30

// rpmDBPath is where project packages are recorded in a buildroot's rpm
// database. Debian's rpm keeps its database in ~/.rpmdb unless told; the
// place rpm-based distributions use is given explicitly instead.
const rpmDBPath = "/var/lib/rpm"

// projectRPMs are the packages a spec's buildroot takes from the project's
// rpm-md repositories of the collector.
type projectRPMs struct {
	Packages []rpmPackage
	// Repos maps each repository used to the sha256 of its verified
	// repomd.xml.
	Repos map[string]string
}

// Digest stands for the packages in the cache key: repository, name,
// version, arch and file checksum of each, so a new version of a
// dependency gives a new root and an unrelated publication does not.
func (s *projectRPMs) Digest() string {
	h := sha256.New()
	for _, p := range s.Packages {
		fmt.Fprintf(h, "%s %s %s %s %s:%s\n", p.repo, p.Name, p.EVR(), p.Arch, p.SumType, p.Sum)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// installed is how the packages appear in the solver file.
func (s *projectRPMs) installed() map[string]InstalledPackage {
	out := map[string]InstalledPackage{}
	for _, p := range s.Packages {
		out[p.Name] = InstalledPackage{Version: p.EVR(), Arch: p.Arch}
	}
	return out
}

// projectRepoPaths returns the collector paths of the target's project
// repositories: <project parent>/<dist> unless the package's
// .cb/depsolver.yml turns it off, plus the repositories that file lists.
func projectRepoPaths(pkgDir string, t target.Target, step func(string, ...any)) ([]string, error) {
	cfg, err := depsolverConfig(pkgDir)
	if err != nil {
		return nil, err
	}
	dist := t.Profile
	if i := strings.LastIndexByte(dist, '.'); i >= 0 {
		dist = dist[:i]
	}
	var paths []string
	if cfg.ProjectRepository {
		paths = append(paths, path.Dir(t.Project)+"/"+dist)
	} else {
		step("project repository: turned off by .cb/depsolver.yml")
	}
	return append(paths, cfg.Repositories...), nil
}

// projectRPMRepositories reads the project's rpm-md repositories of the
// collector for a spec's buildroot, verifies each (signed repomd.xml,
// primary checksum) and chooses what the spec's BuildRequires take from
// them. nil when nothing is needed.
func projectRPMRepositories(ctx context.Context, pr *ProjectRepos, cacheDir, pkgDir string, t target.Target, p *Profile, step func(string, ...any)) (*projectRPMs, error) {
	if pr == nil || pr.URL == "" {
		return nil, nil
	}
	if p.PackageManager != "apt" {
		// A root of an rpm distribution would have to take them through
		// its own package manager; that is not done.
		step("project repositories: not used (rpm packages of the project are installed into Debian buildroots only; this one uses %s)", p.PackageManager)
		return nil, nil
	}
	reqs, err := SpecBuildRequires(pkgDir)
	if err != nil {
		return nil, err
	}
	paths, err := projectRepoPaths(pkgDir, t, step)
	if err != nil || len(paths) == 0 || len(reqs) == 0 {
		return nil, err
	}
	key, err := collectorKey(ctx, pr, cacheDir)
	if err != nil {
		return nil, err
	}
	base := strings.TrimRight(pr.URL, "/")
	set := &projectRPMs{Repos: map[string]string{}}
	var all []rpmPackage
	for _, rp := range paths {
		u := base + "/" + rp
		if err := validateURL(u); err != nil {
			return nil, err
		}
		md, err := fetchRPMMD(ctx, u, key)
		if err != nil {
			if errors.Is(err, errMissing) || errors.Is(err, fs.ErrNotExist) {
				step("project repository %s: no rpm-md repository published yet", rp)
				continue
			}
			return nil, fmt.Errorf("project repository %s: %w", rp, err)
		}
		step("project repository %s: repomd.xml sha256 %s, signature verified with %s, %d packages", u, md.RepomdSHA256, key, len(md.Packages))
		set.Repos[u] = md.RepomdSHA256
		for _, pkg := range md.Packages {
			pkg.repo = u
			all = append(all, pkg)
		}
	}
	chosen, err := resolveRPMs(all, p.Arch, reqs)
	if err != nil {
		return nil, fmt.Errorf("project repositories: %w", err)
	}
	if len(chosen) == 0 {
		step("project repositories: nothing needed from them")
		return nil, nil
	}
	set.Packages = chosen
	var names []string
	for _, c := range chosen {
		names = append(names, c.Name+"="+c.EVR())
	}
	step("project packages for the BuildRequires: %s", strings.Join(names, " "))
	return set, nil
}

// installProjectRPMs downloads the chosen packages from the collector
// (only below their repository, each checked against primary.xml's
// checksum) and installs them into the root dir with rpm --root, as the
// id range's root in a user namespace with no network, as the native
// backend installs Debian packages: their scriptlets hold no privilege on
// the host. rpm runs with --nodeps: what they need from the system is
// Debian's, which rpm's database does not know.
//
// With lower set, dir is the upper dir of an overlay on the layers lower
// (a target layer on its base, see Bind.Lower): rpm writes only there.
// That needs the id range.
func installProjectRPMs(ctx context.Context, s *projectRPMs, dir, lower, cacheDir string, ids sandbox.IDMap, log io.Writer) error {
	if lower != "" && ids.Count == 0 {
		return fmt.Errorf("install project packages into a layer: needs the build's id range")
	}
	tmp, err := os.MkdirTemp(cacheDir, "rpms-")
	if err != nil {
		return fmt.Errorf("install project packages: %w", err)
	}
	defer os.RemoveAll(tmp)
	if err := os.Chmod(tmp, 0o755); err != nil {
		return err
	}
	var files []string
	for _, p := range s.Packages {
		name := p.Sum + ".rpm"
		if err := downloadRPM(ctx, p, filepath.Join(tmp, name)); err != nil {
			return fmt.Errorf("install project packages: %w", err)
		}
		files = append(files, name)
	}
	root, rpms := dir, tmp
	o := ExecOptions{Env: []string{"HOME=/nonexistent"}}
	if ids.Count != 0 {
		root, rpms = BindPath("root"), BindPath("rpms")
		o.PrivateMounts, o.Isolate, o.UserNS = true, true, ids
		o.Binds = []Bind{{Source: dir, Name: "root"}, {Source: tmp, Name: "rpms"}}
		if lower != "" {
			// The overlay's workdir, on dir's file system; the host's
			// root mounts the overlay and so owns what it leaves there.
			work := dir + ".work"
			if err := os.Mkdir(work, 0o700); err != nil {
				return fmt.Errorf("install project packages: %w", err)
			}
			defer removeAll(work)
			o.Binds[0].Lower, o.Binds[0].Work = lower, work
		}
		// A network namespace whose proxy allows nothing.
		o.Repositories = []string{}
	}
	argv := []string{"rpm", "--root", root, "--dbpath", rpmDBPath, "--install", "--nodeps", "--"}
	for _, f := range files {
		argv = append(argv, rpms+"/"+f)
	}
	if err := Exec(ctx, log, o, argv...); err != nil {
		return fmt.Errorf("install project packages: %w", err)
	}
	return nil
}

// downloadRPM fetches p to dst, verifying its checksum on the way.
func downloadRPM(ctx context.Context, p rpmPackage, dst string) error {
	base := p.repo
	u := base + "/" + p.Location
	// The same check the repository proxy applies.
	if err := validLocation(p.Location, ".rpm"); err != nil || !allowedURL(u, []string{base}) {
		return fmt.Errorf("%s: not below the repository %s", u, base)
	}
	body, err := openURL(ctx, u)
	if err != nil {
		return err
	}
	defer body.Close()
	f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	h := newHash(p.SumType)
	n, err := io.Copy(io.MultiWriter(f, h), io.LimitReader(body, maxRPM+1))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	switch {
	case err != nil:
		return fmt.Errorf("%s: %w", u, err)
	case n > maxRPM:
		return fmt.Errorf("%s: larger than %d bytes", u, maxRPM)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != p.Sum {
		return fmt.Errorf("%s: %s checksum %s, primary.xml says %s: %w", u, p.SumType, got, p.Sum, errChecksum)
	}
	return nil
}

// mergePackages adds the project's rpm packages to a root's package list;
// a name the root's Debian packages have too is listed as "<name> (rpm)".
func mergePackages(pkgs, rpms map[string]InstalledPackage) map[string]InstalledPackage {
	for _, n := range slices.Sorted(maps.Keys(rpms)) {
		key := n
		if _, dup := pkgs[n]; dup {
			key = n + " (rpm)"
		}
		pkgs[key] = rpms[n]
	}
	return pkgs
}
