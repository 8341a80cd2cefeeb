// Package kiwi creates buildroots exactly as the original cloud-builder
// did: kiwi-ng --profile P system prepare --description <.cb copy>
// --allow-existing-root --root <dir>. It handles every package manager
// kiwi supports; for apt, kiwi 9 bootstraps with debootstrap and then
// installs the image packages with apt in a chroot.
//
// Importing the package registers the backend as "kiwi" with
// buildroot.Register.
package kiwi

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/cloud-builder/cb/internal/buildroot"
	"github.com/cloud-builder/cb/internal/proc"
)

func init() { buildroot.Register(Backend{}) }

// Backend runs kiwi-ng.
type Backend struct{}

// Name implements buildroot.Backend.
func (Backend) Name() string { return buildroot.BackendKiwi }

// Create implements buildroot.Backend. The description directory handed to
// kiwi holds only the substituted build_root.kiwi: the .cb/root overlay is
// applied per target by buildroot.Prepare, so a cached root stays shared
// between packages with the same description. The collector's project
// repositories that buildroot.Prepare added to the profile are written
// into that copy (WithProjectRepos).
//
// kiwi runs as the host's root (in namespaces and a cgroup of its own):
// it creates device nodes and mounts filesystems, which a user namespace
// does not allow. The root is shifted into the build's id range
// afterwards.
//
// kiwi bind-mounts its --shared-cache-dir into the root at the same path,
// creating the missing parents there; a directory below /tmp would turn
// the root's /tmp into a 0755 directory where apt's sandbox user cannot
// write. So the shared cache always lives below /var/cache/kiwi (kiwi's
// own default place), and r.Downloads only selects whether it persists:
// when set, one persistent directory is used and runs are serialized on it
// (kiwi keeps its apt keyring there); when empty, each run gets a private
// one.
func (Backend) Create(ctx context.Context, r buildroot.CreateRequest) error {
	p, deps, dir, downloads, log := r.Profile, r.Deps, r.Dir, r.Downloads, r.Log
	work, err := os.MkdirTemp("", "cb-kiwi-")
	if err != nil {
		return fmt.Errorf("kiwi backend: %w", err)
	}
	defer os.RemoveAll(work)
	desc := filepath.Join(work, "description")
	gnupg := filepath.Join(work, "gnupg")
	for _, d := range []string{desc, gnupg, SharedCacheBase} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("kiwi backend: %w", err)
		}
	}
	var shared string
	if downloads != "" {
		shared = filepath.Join(SharedCacheBase, "shared")
		if err := os.MkdirAll(shared, 0o755); err != nil {
			return fmt.Errorf("kiwi backend: %w", err)
		}
		unlock, err := lock(ctx, filepath.Join(SharedCacheBase, "shared.lock"))
		if err != nil {
			return fmt.Errorf("kiwi backend: %w", err)
		}
		defer unlock()
	} else {
		if shared, err = os.MkdirTemp(SharedCacheBase, "run-"); err != nil {
			return fmt.Errorf("kiwi backend: %w", err)
		}
		defer os.RemoveAll(shared)
	}
	source, err := WithProjectRepos(p.Source, p.Repositories)
	if err != nil {
		return fmt.Errorf("kiwi backend: %w", err)
	}
	if err := os.WriteFile(filepath.Join(desc, "build_root.kiwi"), source, 0o644); err != nil {
		return fmt.Errorf("kiwi backend: %w", err)
	}
	argv := Command(p.Name, desc, dir, shared, deps)
	// kiwi imports repository signing keys with gpg, which needs a
	// writable home.
	env := []string{"GNUPGHOME=" + gnupg}
	if err := buildroot.Exec(ctx, log, buildroot.ExecOptions{Env: env, PrivateMounts: true, Isolate: true, Repositories: buildroot.RepositoryURLs(p), Dir: work}, argv...); err != nil {
		return fmt.Errorf("create buildroot with kiwi-ng: %w", err)
	}
	// kiwi leaves its description copy below /image; it is not part of a
	// buildroot.
	if err := os.RemoveAll(filepath.Join(dir, "image")); err != nil {
		return fmt.Errorf("kiwi backend: %w", err)
	}
	return nil
}

// lock takes an exclusive flock on path, polling so ctx can cancel the wait.
func lock(ctx context.Context, path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	for {
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err == nil {
			return func() { f.Close() }, nil
		}
		if !proc.Sleep(ctx, 500*time.Millisecond) {
			f.Close()
			return nil, fmt.Errorf("wait for %s: %w", path, context.Cause(ctx))
		}
	}
}

// SharedCacheBase holds kiwi's shared cache directories.
const SharedCacheBase = "/var/cache/kiwi/cloud-builder-buildroot"

// Command is the kiwi-ng argument vector; every build dependency becomes
// an --add-package.
func Command(profile, description, root, sharedCache string, deps []string) []string {
	argv := []string{"kiwi-ng", "--profile", profile, "--shared-cache-dir", sharedCache,
		"system", "prepare", "--description", description, "--allow-existing-root", "--root", root}
	for _, d := range deps {
		argv = append(argv, "--add-package="+d)
	}
	return argv
}
