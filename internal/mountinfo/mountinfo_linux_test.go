package mountinfo

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func TestUnescape(t *testing.T) {
	for in, want := range map[string]string{
		`/plain`:           "/plain",
		`/with\040space`:   "/with space",
		`/tab\011and\134b`: "/tab\tand\\b",
		`/short\04`:        `/short\04`,
	} {
		if got := unescape(in); got != want {
			t.Errorf("unescape(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestBelowAndRemoveAll(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("needs root under CI")
		}
		t.Skip("needs root to mount")
	}
	dir := t.TempDir()
	mp := filepath.Join(dir, "a b", "tmp")
	if err := os.MkdirAll(mp, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", mp, "tmpfs", 0, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(mp, syscall.MNT_DETACH) })
	if err := os.WriteFile(filepath.Join(mp, "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := Below(dir)
	if err != nil || len(got) != 1 || got[0] != mp {
		t.Fatalf("Below = %v, %v; want [%s]", got, err, mp)
	}
	if err := RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if got, _ := Below(dir); len(got) != 0 {
		t.Fatalf("still mounted: %v", got)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("dir still exists: %v", err)
	}
}
