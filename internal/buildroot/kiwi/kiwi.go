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
	"io"
	"os"
	"path/filepath"

	"github.com/cloud-builder/cb/internal/buildroot"
)

func init() { buildroot.Register(Backend{}) }

// Backend runs kiwi-ng.
type Backend struct{}

var _ buildroot.Backend = Backend{}

// Name implements buildroot.Backend.
func (Backend) Name() string { return buildroot.BackendKiwi }

// Create implements buildroot.Backend. The description directory handed to
// kiwi holds only the substituted build_root.kiwi: the .cb/root overlay is
// applied per target by buildroot.Prepare, so a cached root stays shared
// between packages with the same description.
func (Backend) Create(ctx context.Context, p *buildroot.Profile, deps []string, dir string, log io.Writer) error {
	work, err := os.MkdirTemp("", "cb-kiwi-")
	if err != nil {
		return fmt.Errorf("kiwi backend: %w", err)
	}
	defer os.RemoveAll(work)
	desc := filepath.Join(work, "description")
	gnupg := filepath.Join(work, "gnupg")
	// A private shared-cache dir per run: kiwi keeps its apt keyring and
	// package cache there, and two runs sharing /var/cache/kiwi would
	// overwrite each other's keyring.
	shared := filepath.Join(work, "cache")
	for _, d := range []string{desc, gnupg, shared} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("kiwi backend: %w", err)
		}
	}
	if err := os.WriteFile(filepath.Join(desc, "build_root.kiwi"), p.Source, 0o644); err != nil {
		return fmt.Errorf("kiwi backend: %w", err)
	}
	argv := Command(p.Name, desc, dir, shared, deps)
	// kiwi imports repository signing keys with gpg, which needs a
	// writable home.
	env := []string{"GNUPGHOME=" + gnupg}
	if err := buildroot.Exec(ctx, log, buildroot.ExecOptions{Env: env, PrivateMounts: true, Dir: work}, argv...); err != nil {
		return fmt.Errorf("create buildroot with kiwi-ng: %w", err)
	}
	// kiwi leaves its description copy below /image; it is not part of a
	// buildroot.
	if err := os.RemoveAll(filepath.Join(dir, "image")); err != nil {
		return fmt.Errorf("kiwi backend: %w", err)
	}
	return nil
}

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
