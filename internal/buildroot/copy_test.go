package buildroot

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestCopyTree(t *testing.T) {
	src := t.TempDir()
	mustWrite(t, filepath.Join(src, "a", "file"), "data", 0o4755)
	mustWrite(t, filepath.Join(src, ".git", "config"), "secret", 0o644)
	mustWrite(t, filepath.Join(src, "sub", ".git"), "gitfile in a subdir stays", 0o644)
	must(t, os.Symlink("a/file", filepath.Join(src, "link")))
	must(t, os.Symlink("../file", filepath.Join(src, "a", "up")))
	// Safe chains through a link to the tree itself, and a link that
	// resolves to nothing yet but stays inside by its text.
	must(t, os.Symlink(".", filepath.Join(src, "self")))
	must(t, os.Symlink("self/self/a/file", filepath.Join(src, "chain")))
	must(t, os.Symlink("a/not-built-yet", filepath.Join(src, "dangling")))
	dst := filepath.Join(t.TempDir(), "out")
	if err := CopyTree(src, dst, ".git"); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dst, "a", "file"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode() != 0o755 {
		t.Errorf("mode = %v, want setuid dropped (-rwxr-xr-x)", fi.Mode())
	}
	for link, want := range map[string]string{
		"link": "a/file", "a/up": "../file", "self": ".", "chain": "self/self/a/file", "dangling": "a/not-built-yet",
	} {
		if got, err := os.Readlink(filepath.Join(dst, link)); got != want {
			t.Errorf("%s -> %q (%v), want -> %q", link, got, err, want)
		}
	}
	if data, err := os.ReadFile(filepath.Join(dst, "chain")); err != nil || string(data) != "data" {
		t.Errorf("chain reads %q, %v", data, err)
	}
	if _, err := os.Stat(filepath.Join(dst, ".git")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf(".git copied: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dst, "sub", ".git")); err != nil {
		t.Errorf("sub/.git not copied: %v", err)
	}
}

func TestCopyTreeRefuses(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, src string)
	}{
		{"absolute symlink", func(t *testing.T, src string) { must(t, os.Symlink("/etc/shadow", filepath.Join(src, "x"))) }},
		{"relative symlink out of the tree", func(t *testing.T, src string) {
			must(t, os.MkdirAll(filepath.Join(src, "d"), 0o755))
			must(t, os.Symlink("../../outside", filepath.Join(src, "d", "x")))
		}},
		{"symlink to the parent", func(t *testing.T, src string) { must(t, os.Symlink("..", filepath.Join(src, "x"))) }},
		{"symlink chain through a link to the tree", func(t *testing.T, src string) {
			must(t, os.Symlink(".", filepath.Join(src, "s")))
			must(t, os.Symlink("s/s/../../../etc/hostname", filepath.Join(src, "esc")))
		}},
		// Lexically the link stays inside (40 names down, 40 up, then
		// etc/hostname), but every s is the tree itself, so the kernel
		// resolves it to the host's /etc/hostname.
		{"lexically inside symlink chain", func(t *testing.T, src string) {
			must(t, os.Symlink(".", filepath.Join(src, "s")))
			link := strings.Repeat("s/", 40) + strings.Repeat("../", 40) + "etc/hostname"
			if !linkInside(src, filepath.Join(src, "esc"), link) {
				t.Fatal("the link is not lexically inside; the test tests nothing new")
			}
			must(t, os.Symlink(link, filepath.Join(src, "esc")))
		}},
		{"symlink chain to an absolute link", func(t *testing.T, src string) {
			must(t, os.MkdirAll(filepath.Join(src, "d"), 0o755))
			must(t, os.Symlink("/etc", filepath.Join(src, "d", "abs")))
			must(t, os.Symlink("d/abs/hostname", filepath.Join(src, "x")))
		}},
		{"symlink loop", func(t *testing.T, src string) {
			must(t, os.Symlink("l2", filepath.Join(src, "l1")))
			must(t, os.Symlink("l1", filepath.Join(src, "l2")))
		}},
		{"fifo", func(t *testing.T, src string) { must(t, syscall.Mkfifo(filepath.Join(src, "fifo"), 0o644)) }},
		{"device", func(t *testing.T, src string) {
			if os.Geteuid() != 0 {
				if os.Getenv("CI") == "true" {
					t.Fatal("device test needs root under CI")
				}
				t.Skip("mknod of a device needs root")
			}
			must(t, syscall.Mknod(filepath.Join(src, "null"), syscall.S_IFCHR|0o666, 1<<8|3))
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src := t.TempDir()
			mustWrite(t, filepath.Join(src, "ok"), "fine", 0o644)
			tc.setup(t, src)
			err := CopyTree(src, filepath.Join(t.TempDir(), "out"))
			if !errors.Is(err, ErrUnsafeTree) {
				t.Fatalf("err = %v, want ErrUnsafeTree", err)
			}
			t.Log(err)
		})
	}
}

// TestCopyTreeDestinationBeneath copies into a destination that already
// holds a link out of it (as a buildroot's maintainer scripts can leave):
// the copy must fail rather than write through it.
func TestCopyTreeDestinationBeneath(t *testing.T) {
	src := t.TempDir()
	mustWrite(t, filepath.Join(src, "etc", "passwd"), "owned", 0o644)
	outside := t.TempDir()
	dst := t.TempDir()
	must(t, os.Symlink(outside, filepath.Join(dst, "etc")))
	if err := CopyTree(src, dst); err == nil {
		t.Fatal("copy through a link in the destination succeeded")
	}
	if _, err := os.Stat(filepath.Join(outside, "passwd")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the copy wrote outside its destination: %v", err)
	}
}

func TestReadInsideRefusesSymlinks(t *testing.T) {
	dir := t.TempDir()
	must(t, os.MkdirAll(filepath.Join(dir, "real"), 0o755))
	mustWrite(t, filepath.Join(dir, "real", "build_root.kiwi"), "<image/>", 0o644)
	must(t, os.Symlink("real", filepath.Join(dir, ".cb")))
	if _, err := readInside(dir, ".cb/build_root.kiwi", 1024); !errors.Is(err, ErrUnsafeTree) {
		t.Fatalf("symlinked directory: err = %v", err)
	}
	if got, err := readInside(dir, "real/build_root.kiwi", 1024); err != nil || string(got) != "<image/>" {
		t.Fatalf("got %q, %v", got, err)
	}
	if _, err := readInside(dir, "real/build_root.kiwi", 3); err == nil {
		t.Fatal("size limit not enforced")
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func mustWrite(t *testing.T, path, data string, mode os.FileMode) {
	t.Helper()
	must(t, os.MkdirAll(filepath.Dir(path), 0o755))
	must(t, os.WriteFile(path, []byte(data), 0o644))
	must(t, os.Chmod(path, mode))
}

// BenchmarkCopyTree copies a source tree of 200 small files, as a package
// checkout is copied into its buildroot.
func BenchmarkCopyTree(b *testing.B) {
	src := b.TempDir()
	for i := 0; i < 200; i++ {
		p := filepath.Join(src, fmt.Sprintf("d%d", i%10), fmt.Sprintf("f%d.c", i))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(p, bytes.Repeat([]byte("x"), 4096), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := CopyTree(src, filepath.Join(b.TempDir(), "out")); err != nil {
			b.Fatal(err)
		}
	}
}
