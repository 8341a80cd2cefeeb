package native

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cloud-builder/cb/internal/buildroot"
	"github.com/cloud-builder/cb/internal/sandbox"
)

// The directories a layer needs before apt runs show the base layer's
// attributes through the overlay, not the host's defaults.
func TestLikeBase(t *testing.T) {
	base, layer := t.TempDir(), t.TempDir()
	ids := sandbox.IDMap{UID: uint32(os.Getuid()), GID: uint32(os.Getgid()), Count: 1}
	for dir, mode := range map[string]fs.FileMode{"var": 0o750, "var/cache": 0o711, "var/cache/apt": 0o755} {
		if err := os.MkdirAll(filepath.Join(base, dir), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(filepath.Join(base, dir), mode); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(base, 0o751); err != nil {
		t.Fatal(err)
	}
	if err := likeBase(base, layer, "var/cache/apt/archives/partial", ids); err != nil {
		t.Fatal(err)
	}
	for dir, want := range map[string]fs.FileMode{".": 0o751, "var": 0o750, "var/cache": 0o711, "var/cache/apt": 0o755,
		"var/cache/apt/archives": 0o755, "var/cache/apt/archives/partial": 0o755} {
		fi, err := os.Stat(filepath.Join(layer, dir))
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("%s: mode %o, want %o", dir, got, want)
		}
	}
	// A second call keeps what is there.
	if err := likeBase(base, layer, "var/cache/apt/archives", ids); err != nil {
		t.Fatal(err)
	}
}

func TestWriteLayerSources(t *testing.T) {
	base, layer := t.TempDir(), t.TempDir()
	ids := sandbox.IDMap{UID: uint32(os.Getuid()), GID: uint32(os.Getgid()), Count: 1}
	key := filepath.Join(t.TempDir(), "collector.gpg")
	if err := os.WriteFile(key, []byte("key"), 0o600); err != nil {
		t.Fatal(err)
	}
	repos := []buildroot.Repository{
		{Type: buildroot.RepoAptDeb, Path: "http://collector.example.org/projects/Debian/bookworm", SignedBy: key},
		{Type: buildroot.RepoAptDeb, Path: "http://collector.example.org/other", Distribution: "bookworm", Components: []string{"main"}},
	}
	if err := writeLayerSources(base, layer, repos, ids); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(layer, layerSources))
	if err != nil {
		t.Fatal(err)
	}
	want := "deb [signed-by=/etc/apt/keyrings/cloud-builder-project-0.gpg] http://collector.example.org/projects/Debian/bookworm ./\n" +
		"deb http://collector.example.org/other bookworm main\n"
	if string(data) != want {
		t.Errorf("sources:\n%s\nwant:\n%s", data, want)
	}
	if k, err := os.ReadFile(filepath.Join(layer, layerKeys, "cloud-builder-project-0.gpg")); err != nil || string(k) != "key" {
		t.Errorf("key not copied into the layer: %q %v", k, err)
	}
	repos[1].Type = buildroot.RepoRpmMd
	if err := writeLayerSources(base, t.TempDir(), repos[1:], ids); err == nil || !strings.Contains(err.Error(), "not apt-deb") {
		t.Errorf("an rpm-md repository in an apt layer: %v", err)
	}
}
