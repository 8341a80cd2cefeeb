package image

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/cloud-builder/cb/internal/atomicfile"
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
// The description comes from a git repository and is untrusted: kiwi reads
// the top-level files (the .kiwi/config.xml, config.sh, images.sh, root
// tarballs) on the host, so they must be regular files, not symlinks that
// could point at the runner's files. Symlinks below sub-directories (the
// root/ overlay) are copied as links; kiwi copies them into the image
// root, where they resolve inside the image.
func copyDescription(src, dst string, skip func(name string) bool) error {
	src = filepath.Clean(src)
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("copy description: %w", err)
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return fmt.Errorf("copy description: %w", err)
		}
		if rel != "." && !strings.Contains(rel, string(filepath.Separator)) && skip != nil && skip(rel) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.Name() == ".git" && d.IsDir() {
			return filepath.SkipDir
		}
		out := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return fmt.Errorf("copy description: %w", err)
		}
		mode := info.Mode()
		switch {
		case mode.IsDir():
			return os.MkdirAll(out, 0o755)
		case mode&fs.ModeSymlink != 0:
			if !strings.Contains(rel, string(filepath.Separator)) {
				return fmt.Errorf("copy description: %s is a symbolic link; top-level description files must be regular files", rel)
			}
			target, err := os.Readlink(p)
			if err != nil {
				return fmt.Errorf("copy description: %w", err)
			}
			return os.Symlink(target, out)
		case mode.IsRegular():
			return copySubstituted(p, out, mode.Perm(), info.Size())
		}
		return fmt.Errorf("copy description: %s is not a regular file, directory or symbolic link", rel)
	})
}

// copySubstituted copies one description file, with the mirror of this
// machine substituted for the placeholder; files too large to be a
// description are copied as they are.
func copySubstituted(src, dst string, perm fs.FileMode, size int64) error {
	perm &= 0o777 // no set-id bits from a git checkout
	if size > maxSubstituteSize {
		if err := atomicfile.Copy(src, dst, perm); err != nil {
			return fmt.Errorf("copy description: %w", err)
		}
		return nil
	}
	data, err := os.ReadFile(src)
	if err != nil {
		return fmt.Errorf("copy description: %w", err)
	}
	if data, err = mirror.Substitute(data); err != nil {
		return fmt.Errorf("copy description %s: %w", filepath.Base(src), err)
	}
	// Exactly perm, not cut by the umask: config.sh must stay executable
	// exactly as committed.
	if err := atomicfile.WriteFile(dst, data, perm); err != nil {
		return fmt.Errorf("copy description: %w", err)
	}
	return nil
}
