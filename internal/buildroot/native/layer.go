package native

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/cloud-builder/cb/internal/buildroot"
	"github.com/cloud-builder/cb/internal/sandbox"
)

var _ buildroot.LayerBackend = Backend{}

// layerSources is the apt sources file of a target layer's project
// repositories, and layerKeys the directory of their keys, in the root.
const (
	layerSources = "etc/apt/sources.list.d/cloud-builder-project.list"
	layerKeys    = "etc/apt/keyrings"
)

// CreateLayer implements buildroot.LayerBackend: apt-get installs the
// build dependencies into an overlay whose lower dir is the base layer
// and whose upper dir is the new layer. The host's root mounts the
// overlay in a mount namespace of the command's own; apt-get runs under
// bubblewrap (for /proc and /dev of its own) as root of a user namespace
// mapped to the build's id range, in a network namespace whose only way
// out is the repository proxy, in the PID namespace and cgroup of the
// tool, as mmdebstrap does for a whole root. The base layer's indexes
// serve apt; the project repositories of the layer, if any, are fetched
// first. Downloaded packages are shared with mmdebstrap's runs through
// r.Downloads.
func (Backend) CreateLayer(ctx context.Context, r buildroot.LayerRequest) error {
	if r.IDs.Count == 0 {
		return fmt.Errorf("create buildroot layer: needs the build's id range")
	}
	p, upper, log := r.Profile, r.Dir, r.Log
	if err := likeBase(r.Base, upper, ".", r.IDs); err != nil {
		return fmt.Errorf("create buildroot layer: %w", err)
	}
	if err := likeBase(r.Base, upper, archives+"/partial", r.IDs); err != nil {
		return fmt.Errorf("create buildroot layer: %w", err)
	}
	if r.Downloads != "" {
		n, err := linkDebs(r.Downloads, filepath.Join(upper, archives))
		if err != nil {
			return fmt.Errorf("reuse downloaded packages: %w", err)
		}
		fmt.Fprintf(log, "reusing %d downloaded packages from %s\n", n, r.Downloads)
	}
	extra := p.Repositories[len(p.Repositories)-r.Extra:]
	if len(extra) > 0 {
		if err := writeLayerSources(r.Base, upper, extra, r.IDs); err != nil {
			return fmt.Errorf("create buildroot layer: %w", err)
		}
	}
	o := buildroot.ExecOptions{PrivateMounts: true, Isolate: true, Repositories: buildroot.RepositoryURLs(p), UserNS: r.IDs,
		Binds: []buildroot.Bind{{Source: upper, Name: "root", Lower: r.Base, Work: r.Work}},
		Env:   []string{"HOME=/nonexistent"}}
	run := func(apt ...string) error {
		argv := append(bwrap(buildroot.BindPath("root")), apt...)
		return buildroot.Exec(ctx, log, o, argv...)
	}
	if len(extra) > 0 {
		// Only the project repositories' indexes: the base layer has the
		// others' (and they are in the base layer's key).
		if err := run("apt-get", "update", "-o", "Dir::Etc::SourceList=/"+layerSources, "-o", "Dir::Etc::SourceParts=-",
			"-o", "APT::Get::List-Cleanup=0", "-o", "Acquire::Languages=none"); err != nil {
			return fmt.Errorf("create buildroot layer: %w", err)
		}
		// A new overlay below takes a new, empty workdir.
		if err := resetWork(r.Work); err != nil {
			return fmt.Errorf("create buildroot layer: %w", err)
		}
	}
	install := []string{"apt-get", "install", "--yes", "--no-install-recommends",
		"-o", "Dpkg::Use-Pty=0",
		// The package caches would only be copied up into the layer.
		"-o", "Dir::Cache::pkgcache=", "-o", "Dir::Cache::srcpkgcache="}
	if err := run(append(install, r.Deps...)...); err != nil {
		return fmt.Errorf("create buildroot layer: %w", err)
	}
	if r.Downloads == "" {
		return emptyArchive(upper)
	}
	n, err := keepDebs(upper, archives, r.Downloads, r.IDs)
	if err != nil {
		return fmt.Errorf("keep downloaded packages: %w", err)
	}
	fmt.Fprintf(log, "kept %d newly downloaded packages in %s\n", n, r.Downloads)
	return nil
}

// bwrap is the bubblewrap command that runs a command in root with /proc
// and /dev of its own. It runs as root of the tool's user namespace, which
// owns the mount and PID namespaces, so it needs no privilege and creates
// no namespace of its own but the mount namespace.
//
// Not --die-with-parent: its parent-death signal follows the *thread*
// that started bwrap, and Exec starts it from a thread that ends right
// after (the thread that entered the tool's namespaces), so bwrap would
// be killed at a random early moment. bwrap is PID 1 of the tool's PID
// namespace in a cgroup that Exec kills when the tool ends or its context
// does; nothing of it outlives the tool.
func bwrap(root string) []string {
	return []string{"bwrap", "--bind", root, "/", "--dev", "/dev", "--proc", "/proc", "--chdir", "/", "--"}
}

// likeBase creates rel (and its parents) in the layer dir that are not
// there yet with the owner and mode of the same directories in the base
// layer, so the overlay shows them unchanged. Directories the base lacks
// become the range root's, mode 0755.
func likeBase(base, layer, rel string, ids sandbox.IDMap) error {
	br, err := os.OpenRoot(base)
	if err != nil {
		return err
	}
	defer br.Close()
	lr, err := os.OpenRoot(layer)
	if err != nil {
		return err
	}
	defer lr.Close()
	p := "."
	for _, el := range append([]string{"."}, strings.Split(filepath.Clean(rel), "/")...) {
		if el != "." {
			p = filepath.Join(p, el)
			if err := lr.Mkdir(p, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
				return err
			}
		}
		uid, gid, mode := int(ids.UID), int(ids.GID), fs.FileMode(0o755)
		if fi, err := br.Lstat(p); err == nil && fi.IsDir() {
			st := fi.Sys().(*syscall.Stat_t)
			uid, gid, mode = int(st.Uid), int(st.Gid), fi.Mode()&(fs.ModePerm|fs.ModeSticky|fs.ModeSetgid)
		}
		if err := lr.Lchown(p, uid, gid); err != nil {
			return err
		}
		if err := lr.Chmod(p, mode); err != nil {
			return err
		}
	}
	return nil
}

// writeLayerSources writes the apt sources of the project repositories
// and copies their keys into the layer, owned by the range's root.
func writeLayerSources(base, layer string, repos []buildroot.Repository, ids sandbox.IDMap) error {
	if err := likeBase(base, layer, filepath.Dir(layerSources), ids); err != nil {
		return err
	}
	if err := likeBase(base, layer, layerKeys, ids); err != nil {
		return err
	}
	var lines []string
	for i, r := range repos {
		if r.Type != buildroot.RepoAptDeb {
			return fmt.Errorf("repository %s has type %s, not apt-deb", r.Path, r.Type)
		}
		dist := r.Distribution
		if dist == "" {
			dist = "./"
		}
		line := []string{"deb", r.Path, dist}
		if r.SignedBy != "" {
			key := fmt.Sprintf("/%s/cloud-builder-project-%d.gpg", layerKeys, i)
			if err := copyOwned(r.SignedBy, filepath.Join(layer, key), ids); err != nil {
				return err
			}
			line = []string{"deb", "[signed-by=" + key + "]", r.Path, dist}
		}
		// Every value was validated by the description parser or chosen
		// by the runner: no white space in any of them.
		lines = append(lines, strings.Join(append(line, r.Components...), " "))
	}
	dst := filepath.Join(layer, layerSources)
	if err := os.WriteFile(dst, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		return err
	}
	return os.Lchown(dst, int(ids.UID), int(ids.GID))
}

// copyOwned copies the host file src to dst (a new file) for the range's
// root.
func copyOwned(src, dst string, ids sandbox.IDMap) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	if err = errors.Join(err, out.Chown(int(ids.UID), int(ids.GID)), out.Close()); err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	return nil
}

// resetWork empties an overlay workdir (it holds a directory only the
// host's root may enter after a mount).
func resetWork(work string) error {
	ents, err := os.ReadDir(work)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if err := os.RemoveAll(filepath.Join(work, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

// emptyArchive removes the packages apt downloaded into the layer.
func emptyArchive(layer string) error {
	root, err := os.OpenRoot(layer)
	if err != nil {
		return err
	}
	defer root.Close()
	d, err := root.Open(archives)
	if err != nil {
		return err
	}
	ents, err := d.ReadDir(-1)
	d.Close()
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".deb") {
			errs = append(errs, root.Remove(filepath.Join(archives, e.Name())))
		}
	}
	return errors.Join(errs...)
}
