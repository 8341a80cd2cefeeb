package buildroot

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// ErrUnsafeTree means a tree from the (untrusted) source repository holds
// something that must not be copied: a symlink leaving the tree, a device
// node, a fifo or a socket.
var ErrUnsafeTree = errors.New("unsafe file in source tree")

// CopyTree copies the tree at src into dst (created if missing). Every
// path is resolved beneath its root (os.Root, openat2 RESOLVE_BENEATH on
// Linux): reads beneath src, writes beneath dst, so neither a link in the
// source nor one already in dst makes the copy read or write elsewhere.
// Every symlink must resolve inside src, following the whole chain of
// links as the kernel does (a link to "." and a link through it with
// enough ".." are refused, not just links whose text leaves the tree);
// absolute links are refused, since in the buildroot they would point
// elsewhere than in the repository and any host process following them
// would leave the tree. A link that resolves to nothing yet is copied
// when its text stays inside src. Only regular files, directories and
// such symlinks are copied; setuid/setgid bits are dropped. Names in skip
// (relative to src, slash separated) are left out.
func CopyTree(src, dst string, skip ...string) error {
	src = filepath.Clean(src)
	if fi, err := os.Lstat(src); err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	} else if !fi.IsDir() {
		return fmt.Errorf("copy %s: %w: not a directory", src, ErrUnsafeTree)
	}
	sr, err := os.OpenRoot(src)
	if err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	defer sr.Close()
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	dr, err := os.OpenRoot(dst)
	if err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	defer dr.Close()
	return fs.WalkDir(sr.FS(), ".", func(rel string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("copy %s: %w", filepath.Join(src, rel), err)
		}
		if slices.Contains(skip, rel) {
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return fmt.Errorf("copy %s: %w", rel, err)
		}
		mode := info.Mode()
		switch {
		case mode.IsDir():
			if err := dr.Mkdir(rel, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
				return fmt.Errorf("copy %s: %w", rel, err)
			}
			if err := dr.Chmod(rel, mode.Perm()|0o700); err != nil {
				return fmt.Errorf("copy %s: %w", rel, err)
			}
			return nil
		case mode&fs.ModeSymlink != 0:
			link, err := sr.Readlink(rel)
			if err != nil {
				return fmt.Errorf("copy %s: %w", rel, err)
			}
			if err := linkBeneath(sr, rel, link); err != nil {
				return fmt.Errorf("copy %s: %w", rel, err)
			}
			if err := dr.Remove(rel); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("copy %s: %w", rel, err)
			}
			if err := dr.Symlink(link, rel); err != nil {
				return fmt.Errorf("copy %s: %w", rel, err)
			}
			return nil
		case mode.IsRegular():
			return copyFileBeneath(sr, dr, rel, mode.Perm())
		default:
			return fmt.Errorf("copy %s: %w: %s is a %s", rel, ErrUnsafeTree, rel, fileType(mode))
		}
	})
}

// linkBeneath checks the symlink rel of root with text link: absolute
// links are refused; a relative one must resolve beneath root through
// every link on its way, or, when it resolves to nothing (yet), stay
// inside root by its text.
func linkBeneath(root *os.Root, rel, link string) error {
	if filepath.IsAbs(link) {
		return fmt.Errorf("%w: symlink to %q is absolute", ErrUnsafeTree, link)
	}
	_, err := root.Stat(rel)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, fs.ErrNotExist):
		if linkInside(".", rel, link) {
			return nil
		}
		return fmt.Errorf("%w: symlink to %q leaves the tree", ErrUnsafeTree, link)
	}
	return fmt.Errorf("%w: symlink to %q does not resolve inside the tree: %w", ErrUnsafeTree, link, err)
}

// copyFileBeneath copies the regular file rel of sr to rel of dr with
// exactly perm, replacing what is there through a rename; no fsync, as
// for atomicfile.CopyScratch (a crash discards the staged tree anyway).
func copyFileBeneath(sr, dr *os.Root, rel string, perm fs.FileMode) error {
	in, err := sr.Open(rel)
	if err != nil {
		return fmt.Errorf("copy %s: %w", rel, err)
	}
	defer in.Close()
	if fi, err := in.Stat(); err != nil {
		return fmt.Errorf("copy %s: %w", rel, err)
	} else if !fi.Mode().IsRegular() {
		return fmt.Errorf("copy %s: %w: not a regular file", rel, ErrUnsafeTree)
	}
	dir, base := path.Split(rel)
	tmp := dir + "." + base + ".tmp" + strconv.FormatUint(rand.Uint64(), 36)
	out, err := dr.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("copy %s: %w", rel, err)
	}
	defer dr.Remove(tmp) // after a successful rename: ENOENT, ignored
	_, err = io.Copy(out, in)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = dr.Chmod(tmp, perm)
	}
	if err == nil {
		err = dr.Rename(tmp, rel)
	}
	if err != nil {
		return fmt.Errorf("copy %s: %w", rel, err)
	}
	return nil
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
	// Checked above, and opened beneath root: a link swapped in after the
	// check cannot lead out of it either.
	r, err := os.OpenRoot(root)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", rel, err)
	}
	defer r.Close()
	f, err := r.Open(filepath.Clean(rel))
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
