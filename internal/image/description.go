package image

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/cloud-builder/cb/internal/mirror"
)

// maxSubstituteSize bounds the files searched for the mirror placeholder;
// larger files (root tarballs, images) are copied as they are.
const maxSubstituteSize = 4 << 20

// copyDescription copies the image description src to dst, replacing the
// mirror placeholder in every file that holds it, so the description in git
// names no mirror host and the runner's own apt sources decide where
// packages come from. skip names top-level entries not to copy (local
// build output living next to the description).
//
// The description comes from a git repository and is untrusted. Every
// path is resolved beneath its root (os.Root): files are read beneath src
// and written beneath dst, so no link in either makes the copy read or
// write a runner file. kiwi reads the top-level files (the
// .kiwi/config.xml, config.sh, images.sh, root tarballs) on the host, so
// they must be regular files, not symlinks. Symlinks below
// sub-directories (the root/ overlay) are copied as links, unresolved:
// kiwi copies them into the image root, where they resolve inside the
// image.
func copyDescription(src, dst string, skip func(name string) bool) error {
	sr, err := os.OpenRoot(filepath.Clean(src))
	if err != nil {
		return fmt.Errorf("copy description: %w", err)
	}
	defer sr.Close()
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return fmt.Errorf("copy description: %w", err)
	}
	dr, err := os.OpenRoot(dst)
	if err != nil {
		return fmt.Errorf("copy description: %w", err)
	}
	defer dr.Close()
	return fs.WalkDir(sr.FS(), ".", func(rel string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("copy description: %w", err)
		}
		top := !strings.Contains(rel, "/")
		if rel != "." && top && skip != nil && skip(rel) {
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if d.Name() == ".git" && d.IsDir() {
			return fs.SkipDir
		}
		info, err := d.Info()
		if err != nil {
			return fmt.Errorf("copy description: %w", err)
		}
		mode := info.Mode()
		switch {
		case mode.IsDir():
			if err := dr.MkdirAll(rel, 0o755); err != nil {
				return fmt.Errorf("copy description: %w", err)
			}
			return nil
		case mode&fs.ModeSymlink != 0:
			if top {
				return fmt.Errorf("copy description: %s is a symbolic link; top-level description files must be regular files", rel)
			}
			target, err := sr.Readlink(rel)
			if err != nil {
				return fmt.Errorf("copy description: %w", err)
			}
			if err := dr.Symlink(target, rel); err != nil {
				return fmt.Errorf("copy description: %w", err)
			}
			return nil
		case mode.IsRegular():
			return copySubstituted(sr, dr, rel, mode.Perm())
		}
		return fmt.Errorf("copy description: %s is not a regular file, directory or symbolic link", rel)
	})
}

// copySubstituted copies one description file, with the mirror of this
// machine substituted for the placeholder; files too large to be a
// description are copied as they are. The file is written with exactly
// perm, not cut by the umask: config.sh must stay executable exactly as
// committed; set-id bits from a git checkout are dropped.
func copySubstituted(sr, dr *os.Root, rel string, perm fs.FileMode) error {
	perm &= 0o777
	in, err := sr.Open(rel)
	if err != nil {
		return fmt.Errorf("copy description: %w", err)
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return fmt.Errorf("copy description: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("copy description: %s is not a regular file", rel)
	}
	out, err := dr.OpenFile(rel, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("copy description: %w", err)
	}
	if fi.Size() > maxSubstituteSize {
		_, err = io.Copy(out, in)
	} else {
		var data []byte
		if data, err = io.ReadAll(io.LimitReader(in, maxSubstituteSize+1)); err == nil {
			if data, err = mirror.Substitute(data); err != nil {
				err = fmt.Errorf("%s: %w", rel, err)
			} else {
				_, err = out.Write(data)
			}
		}
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = dr.Chmod(rel, perm)
	}
	if err != nil {
		return fmt.Errorf("copy description: %w", err)
	}
	return nil
}
