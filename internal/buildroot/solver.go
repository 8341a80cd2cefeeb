package buildroot

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/cloud-builder/cb/internal/atomicfile"
)

// SolverVersion is the format version of the solver file.
const SolverVersion = 1

// InstalledPackage is one package of a buildroot.
type InstalledPackage struct {
	Version string `json:"version"`
	Arch    string `json:"arch"`
}

// Solved is the content of <target>.solver.json: every package installed
// in the base buildroot. Packages is a map so the JSON is sorted by name.
type Solved struct {
	SchemaVersion  int                         `json:"schema_version"`
	Profile        string                      `json:"profile"`
	Backend        string                      `json:"backend"`
	PackageManager string                      `json:"package_manager"`
	CacheKey       string                      `json:"cache_key"`
	Packages       map[string]InstalledPackage `json:"packages"`
}

// InstalledPackages lists the packages installed in root: from the dpkg
// database when the root has one, else from the rpm database.
func InstalledPackages(ctx context.Context, root string) (map[string]InstalledPackage, error) {
	var argv []string
	admin, err := dpkgStatusCopy(root)
	if err != nil {
		return nil, fmt.Errorf("list installed packages: %w", err)
	}
	if admin != "" {
		defer os.RemoveAll(admin)
		argv = []string{"dpkg-query", "--admindir=" + admin, "-W",
			"-f=${db:Status-Abbrev}\t${Package}\t${Version}\t${Architecture}\n"}
	} else {
		argv = []string{"rpm", "--root", root, "-qa",
			"--qf", "ii \t%{NAME}\t%|EPOCH?{%{EPOCH}:}:{}|%{VERSION}-%{RELEASE}\t%{ARCH}\n"}
	}
	var out bytes.Buffer
	var stderr bytes.Buffer
	if err := runCapture(ctx, &out, &stderr, argv); err != nil {
		return nil, fmt.Errorf("list installed packages: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	pkgs := map[string]InstalledPackage{}
	for _, line := range strings.Split(out.String(), "\n") {
		f := strings.Split(line, "\t")
		if len(f) != 4 || !strings.HasPrefix(f[0], "ii") {
			continue
		}
		name := f[1]
		if prev, dup := pkgs[name]; dup && prev.Arch != f[3] {
			// Multi-arch co-installations get an arch-qualified key.
			name += ":" + f[3]
		}
		pkgs[name] = InstalledPackage{Version: f[2], Arch: f[3]}
	}
	if len(pkgs) == 0 {
		return nil, fmt.Errorf("list installed packages: none found in %s", root)
	}
	return pkgs, nil
}

// ReadSolved reads a solver file.
func ReadSolved(path string) (*Solved, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var s Solved
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("read solver file %s: %w", path, err)
	}
	return &s, nil
}

// writeJSON writes v indented to path atomically.
func writeJSON(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "    ")
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(path, append(data, '\n'), 0o644)
}

// dpkgStatusCopy copies the dpkg status file of root into a new temporary
// directory for dpkg-query and returns it ("" when root has none). Maintainer
// scripts wrote root's tree, so the file is opened beneath root (a link
// pointing out of it is an error), never followed to the host's own.
func dpkgStatusCopy(root string) (string, error) {
	r, err := os.OpenRoot(root)
	if err != nil {
		return "", err
	}
	defer r.Close()
	f, err := r.Open("var/lib/dpkg/status")
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return "", fmt.Errorf("%s/var/lib/dpkg/status is not a regular file", root)
	}
	dir, err := os.MkdirTemp("", "cb-dpkg-status-")
	if err != nil {
		return "", err
	}
	out, err := os.Create(filepath.Join(dir, "status"))
	if err == nil {
		_, err = io.Copy(out, f)
		err = errors.Join(err, out.Close())
	}
	if err != nil {
		return "", errors.Join(err, os.RemoveAll(dir))
	}
	return dir, nil
}
