package mirror

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestDebianFrom(t *testing.T) {
	tests := []struct {
		name  string
		files []string
		want  string
		err   error
	}{
		{"one-line", []string{"testdata/sources.list"}, "http://archive.example.org/debian", nil},
		{"deb822 continuation", []string{"testdata/debian.sources"}, "http://mirror.example.org/debian", nil},
		{"apt order, first file wins", []string{"testdata/debian.sources", "testdata/sources.list"}, "http://mirror.example.org/debian", nil},
		{"missing files skipped", []string{"testdata/nope.list", "testdata/sources.list"}, "http://archive.example.org/debian", nil},
		{"only updates suites", []string{"testdata/updates-only.list"}, "", ErrNotFound},
		{"nothing", nil, "", ErrNotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DebianFrom(tc.files...)
			if !errors.Is(err, tc.err) {
				t.Fatalf("err = %v, want %v", err, tc.err)
			}
			if got != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestDebianEnvOverride(t *testing.T) {
	t.Setenv(EnvOverride, "http://override.example.org/debian/")
	got, err := Debian()
	if err != nil || got != "http://override.example.org/debian" {
		t.Fatalf("got %q, %v", got, err)
	}
	t.Setenv(EnvOverride, "ftp://x.example.org/debian")
	if _, err := Debian(); err == nil {
		t.Fatal("unsupported scheme accepted")
	}
}

func TestSubstitute(t *testing.T) {
	t.Setenv(EnvOverride, "http://archive.example.org/debian?a=1&b=2")
	got, err := Substitute([]byte(`<source path="@DEBIAN_MIRROR@"/>`))
	if err != nil {
		t.Fatal(err)
	}
	if want := `<source path="http://archive.example.org/debian?a=1&amp;b=2"/>`; string(got) != want {
		t.Fatalf("got %s, want %s", got, want)
	}
	// No placeholder: apt is not consulted, so a broken override does not matter.
	t.Setenv(EnvOverride, "not a url")
	in := []byte(`<source path="http://x.example.org/"/>`)
	got, err = Substitute(in)
	if err != nil || string(got) != string(in) {
		t.Fatalf("got %s, %v", got, err)
	}
}

func TestDefaultFilesOrder(t *testing.T) {
	// DefaultFiles reads the real /etc/apt; only its shape is checked here.
	files := DefaultFiles()
	if len(files) == 0 || files[0] != "/etc/apt/sources.list" {
		t.Fatalf("files = %v", files)
	}
	for i := 2; i < len(files); i++ {
		if filepath.Base(files[i-1]) > filepath.Base(files[i]) {
			t.Fatalf("not in lexical order: %v", files)
		}
	}
	if _, err := os.Stat("/etc/apt"); err == nil {
		if _, err := Debian(); err != nil && !errors.Is(err, ErrNotFound) {
			t.Fatalf("Debian() on this machine: %v", err)
		}
	}
}
