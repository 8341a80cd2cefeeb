package buildroot

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/cloud-builder/cb/internal/atomicfile"
)

// ErrUnsafeTree means a tree from the (untrusted) source repository holds
// something that must not be copied: a symlink leaving the tree, a device
// node, a fifo or a socket.
var ErrUnsafeTree = errors.New("unsafe file in source tree")

// CopyTree copies the tree at src into dst (created if missing). Every
// symlink must resolve inside src (absolute links are refused: in the
// buildroot they would point elsewhere than in the repository, and any
// host process following them would leave the tree); only regular files,
// directories and such symlinks are copied; setuid/setgid bits are dropped.
// Names in skip (relative to src, slash separated) are left out.
func CopyTree(src, dst string, skip ...string) error {
	src = filepath.Clean(src)
	if fi, err := os.Lstat(src); err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	} else if !fi.IsDir() {
		return fmt.Errorf("copy %s: %w: not a directory", src, ErrUnsafeTree)
	}
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("copy %s: %w", p, err)
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		for _, s := range skip {
			if filepath.ToSlash(rel) == s {
				if d.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
		}
		target := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return fmt.Errorf("copy %s: %w", p, err)
		}
		mode := info.Mode()
		switch {
		case mode.IsDir():
			if err := os.MkdirAll(target, 0o755); err != nil {
				return fmt.Errorf("copy %s: %w", p, err)
			}
			return os.Chmod(target, mode.Perm()|0o700)
		case mode&fs.ModeSymlink != 0:
			link, err := os.Readlink(p)
			if err != nil {
				return fmt.Errorf("copy %s: %w", p, err)
			}
			if !linkInside(src, p, link) {
				return fmt.Errorf("copy %s: %w: symlink to %q leaves the tree", rel, ErrUnsafeTree, link)
			}
			_ = os.Remove(target)
			if err := os.Symlink(link, target); err != nil {
				return fmt.Errorf("copy %s: %w", p, err)
			}
			return nil
		case mode.IsRegular():
			return atomicfile.CopyScratch(p, target, mode.Perm())
		default:
			return fmt.Errorf("copy %s: %w: %s is a %s", rel, ErrUnsafeTree, rel, fileType(mode))
		}
	})
}

func fileType(m fs.FileMode) string {
	switch {
	case m&fs.ModeDevice != 0:
		return "device"
	case m&fs.ModeNamedPipe != 0:
		return "fifo"
	case m&fs.ModeSocket != 0:
		return "socket"
	}
	return "special file"
}

// linkInside reports whether a symlink at p with target link stays in root
// when resolved lexically. Chains of links are safe because every link in
// the tree is checked the same way.
func linkInside(root, p, link string) bool {
	if filepath.IsAbs(link) {
		return false
	}
	resolved := filepath.Join(filepath.Dir(p), link)
	rel, err := filepath.Rel(root, resolved)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
}

// readInside reads root/rel refusing any symlink on the way, so a file
// named in the repository cannot make the runner read a host file.
func readInside(root, rel string, limit int64) ([]byte, error) {
	p := root
	for _, part := range strings.Split(filepath.ToSlash(filepath.Clean(rel)), "/") {
		if part == ".." {
			return nil, fmt.Errorf("read %s: %w: path leaves the package", rel, ErrUnsafeTree)
		}
		p = filepath.Join(p, part)
		fi, err := os.Lstat(p)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", rel, err)
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			return nil, fmt.Errorf("read %s: %w: %s is a symlink", rel, ErrUnsafeTree, part)
		}
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", rel, err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("read %s: %w: not a regular file", rel, ErrUnsafeTree)
	}
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", rel, err)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("read %s: larger than %d bytes", rel, limit)
	}
	return data, nil
}
