package image

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cloud-builder/cb/internal/target"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

func TestParseSolverOutput(t *testing.T) {
	in, err := os.ReadFile("testdata/kiwi-image-info.out")
	if err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	got, err := parseSolverOutput(in, &log)
	if err != nil {
		t.Fatal(err)
	}
	golden := "testdata/solver.json.golden"
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("solver file differs from %s (run with -update after checking):\n%s", golden, got)
	}
	if !strings.Contains(log.String(), "Selected build type: tbz") || strings.Contains(log.String(), "resolved-packages") {
		t.Errorf("log lines and document not split at the document:\n%s", log.String())
	}
	// Deterministic: the same list in another key order gives the same file.
	var v any
	if err := json.Unmarshal(got, &v); err != nil {
		t.Fatal(err)
	}
	again, _ := json.MarshalIndent(v, "", "  ")
	got2, err := parseSolverOutput(again, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, got2) {
		t.Error("re-encoding the solver file changes it")
	}
}

func TestParseSolverOutputErrors(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want error
	}{
		{"no document", "[ ERROR   ]: 14:02:25 | KiwiProfileNotFound: profile nosuch not found\n", errNoSolverData},
		{"broken document", "[ INFO ]: x\n{\n  \"image\": \n", nil},
		{"empty", "", errNoSolverData},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var log bytes.Buffer
			_, err := parseSolverOutput([]byte(tt.in), &log)
			if err == nil {
				t.Fatal("no error")
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("err = %v, want %v", err, tt.want)
			}
			if tt.name == "no document" && !strings.Contains(log.String(), "KiwiProfileNotFound") {
				t.Errorf("kiwi's error did not reach the log: %q", log.String())
			}
		})
	}
}

func TestCopyDescription(t *testing.T) {
	t.Setenv("CB_DEBIAN_MIRROR", "http://mirror.example/debian")
	src := t.TempDir()
	write := func(rel, data string, mode os.FileMode) {
		t.Helper()
		p := filepath.Join(src, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
	}
	write("appliance.kiwi", `<source path="@DEBIAN_MIRROR@"/>`, 0o644)
	write("config.sh", "#!/bin/sh\necho @DEBIAN_MIRROR@\n", 0o755)
	write("root/etc/motd", "hello\n", 0o644)
	write(".cb/cloud_builder.yml", "name: x\n", 0o644)
	write("x@standard.x86_64.build.log", "old output\n", 0o644)
	if err := os.Symlink("/usr/share/zoneinfo/UTC", filepath.Join(src, "root/etc/localtime")); err != nil {
		t.Fatal(err)
	}

	// Links of the overlay are image paths: copied as links, never
	// followed, however they resolve on the host.
	if err := os.Symlink(".", filepath.Join(src, "root/s")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("s/s/../../../../../../../../etc/hostname", filepath.Join(src, "root/esc")); err != nil {
		t.Fatal(err)
	}

	dst := filepath.Join(t.TempDir(), "copy")
	if err := copyDescription(src, dst, func(n string) bool { return strings.HasPrefix(n, "x@") }); err != nil {
		t.Fatal(err)
	}
	for rel, want := range map[string]string{
		"appliance.kiwi": `<source path="http://mirror.example/debian"/>`,
		"config.sh":      "#!/bin/sh\necho http://mirror.example/debian\n",
		"root/etc/motd":  "hello\n",
	} {
		got, err := os.ReadFile(filepath.Join(dst, rel))
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != want {
			t.Errorf("%s = %q, want %q", rel, got, want)
		}
	}
	if st, err := os.Stat(filepath.Join(dst, "config.sh")); err != nil || st.Mode().Perm() != 0o755 {
		t.Errorf("config.sh lost its mode: %v %v", st.Mode(), err)
	}
	if l, err := os.Readlink(filepath.Join(dst, "root/etc/localtime")); err != nil || l != "/usr/share/zoneinfo/UTC" {
		t.Errorf("overlay symlink not copied as link: %q %v", l, err)
	}
	if fi, err := os.Lstat(filepath.Join(dst, "root/esc")); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Errorf("overlay link root/esc not copied as link: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dst, "x@standard.x86_64.build.log")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("skipped entry was copied: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(src, "appliance.kiwi")); !bytes.Contains(b, []byte("@DEBIAN_MIRROR@")) {
		t.Error("the source description was modified")
	}

	// A top-level symlink would make kiwi read a runner file.
	if err := os.Symlink("/etc/shadow", filepath.Join(src, "config.xml")); err != nil {
		t.Fatal(err)
	}
	err := copyDescription(src, filepath.Join(t.TempDir(), "copy"), nil)
	if err == nil || !strings.Contains(err.Error(), "config.xml is a symbolic link") {
		t.Errorf("top-level symlink: err = %v", err)
	}
}

func TestRPMArch(t *testing.T) {
	for name, want := range map[string]string{
		"cb-image-tbz-1.0.0-0.noarch.rpm":          "noarch",
		"kiwi-test-image-disk-1.15.3-0.x86_64.rpm": "x86_64",
		"norelease.rpm":                            "",
		"a-1-0.x86 64.rpm":                         "",
	} {
		got, err := rpmArch(name)
		if (err != nil) != (want == "") || got != want {
			t.Errorf("rpmArch(%q) = %q, %v; want %q", name, got, err, want)
		}
	}
}

func TestOptionsValidate(t *testing.T) {
	dir := t.TempDir()
	tgt, err := target.Local(dir, "img", "standard", "x86_64")
	if err != nil {
		t.Fatal(err)
	}
	base := func() Options {
		return Options{Description: dir, Target: tgt, BundleID: "7f1c0d2e"}
	}
	tests := []struct {
		name   string
		change func(*Options)
		want   string
	}{
		{"valid", func(*Options) {}, ""},
		{"bundle id with dash", func(o *Options) { o.BundleID = "7f1c-0d2e" }, "invalid bundle id"},
		{"empty bundle id", func(o *Options) { o.BundleID = "" }, "invalid bundle id"},
		{"bundle id path", func(o *Options) { o.BundleID = "../x" }, "invalid bundle id"},
		{"profile option", func(o *Options) { o.Profiles = []string{"--debug"} }, "profile"},
		{"build arg", func(o *Options) { o.BuildArgs = []string{"--target-dir=/"} }, `"--target-dir=/"`},
		{"no description", func(o *Options) { o.Description = filepath.Join(dir, "missing") }, "image description"},
		{"no target", func(o *Options) { o.Target.Root = "" }, "image target not set"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := base()
			tt.change(&o)
			err := o.validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("validate = %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("validate = %v, want an error with %q", err, tt.want)
			}
		})
	}
}
