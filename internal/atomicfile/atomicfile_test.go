package atomicfile

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWriteFileReplacesWithExactMode(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "state.yml")
	if err := os.WriteFile(p, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(p, []byte("new"), 0o755); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(p)
	if err != nil || string(got) != "new" {
		t.Fatalf("content %q, %v; want new", got, err)
	}
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o755 {
		t.Errorf("mode %v, want 0755 regardless of the umask", fi.Mode().Perm())
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("temporary files left: %v", entries)
	}
}

func TestWriteFileMissingDir(t *testing.T) {
	if err := WriteFile(filepath.Join(t.TempDir(), "no", "such"), nil, 0o644); err == nil {
		t.Fatal("want an error for a missing directory")
	}
}

func TestCopy(t *testing.T) {
	for name, copyFn := range map[string]func(string, string, os.FileMode) error{"Copy": Copy, "CopyScratch": CopyScratch} {
		t.Run(name, func(t *testing.T) { testCopy(t, copyFn) })
	}
}

func testCopy(t *testing.T, copyFn func(string, string, os.FileMode) error) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	if err := os.WriteFile(src, []byte("payload"), 0o4755); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, "dst")
	if err := os.WriteFile(dst, []byte("older and longer"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := copyFn(src, dst, 0o755); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(dst)
	fi, _ := os.Stat(dst)
	if string(got) != "payload" || fi.Mode() != 0o755 {
		t.Errorf("copy: %q mode %v; want payload, -rwxr-xr-x", got, fi.Mode())
	}
	if err := copyFn(filepath.Join(dir, "missing"), dst, 0o644); err == nil {
		t.Error("copy of a missing file: want an error")
	}
}

func TestCopyScratchLeavesNoTemporary(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	if err := os.WriteFile(src, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := CopyScratch(src, filepath.Join(dir, "dst"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A copy into a missing directory fails and leaves nothing either.
	if err := CopyScratch(src, filepath.Join(dir, "nodir", "dst"), 0o600); err == nil {
		t.Error("copy into a missing directory: want an error")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Errorf("directory holds %d entries, want src and dst only", len(entries))
	}
}
