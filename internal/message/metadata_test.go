package message

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"
)

const packageMetadata = `schema_version: 0.1
name: xclock
distributions:
  - dist: TW
    arch: x86_64
    runner_group: suse
  - dist: TW
    arch: aarch64
    runner_group: suse
`

const imageMetadata = `schema_version: 0.1
name: test-image-disk
images:
  - arch: x86_64
    runner_group: suse
    selection:
      name: standard
      profiles: [A, B]
      build_arguments: ["--clear-cache"]
  - arch: aarch64
    runner_group: arm
    selection:
      name: minimal
`

func TestDecodeMetadataPackage(t *testing.T) {
	m, err := DecodeMetadata([]byte(packageMetadata), "xclock")
	if err != nil {
		t.Fatal(err)
	}
	want := &Metadata{
		SchemaVersion: 0.1,
		Name:          "xclock",
		Distributions: []Distribution{
			{Arch: "x86_64", Dist: "TW", RunnerGroup: "suse"},
			{Arch: "aarch64", Dist: "TW", RunnerGroup: "suse"},
		},
	}
	if !reflect.DeepEqual(m, want) {
		t.Fatalf("got %+v\nwant %+v", m, want)
	}
	if m.IsImage() {
		t.Error("package metadata reports IsImage")
	}
	if d, ok := m.FindDistribution("TW", "aarch64"); !ok || d.RunnerGroup != "suse" {
		t.Errorf("FindDistribution(TW, aarch64) = %+v, %v", d, ok)
	}
	if _, ok := m.FindDistribution("TW", "s390x"); ok {
		t.Error("FindDistribution found an unconfigured arch")
	}
	if _, ok := m.FindImage("TW", "x86_64"); ok {
		t.Error("FindImage found a target in package metadata")
	}
}

func TestDecodeMetadataImage(t *testing.T) {
	m, err := DecodeMetadata([]byte(imageMetadata), "test-image-disk")
	if err != nil {
		t.Fatal(err)
	}
	want := &Metadata{
		SchemaVersion: 0.1,
		Name:          "test-image-disk",
		Images: []ImageSpec{
			{Arch: "x86_64", RunnerGroup: "suse", Selection: Selection{
				Name: "standard", Profiles: []string{"A", "B"}, BuildArguments: []string{"--clear-cache"},
			}},
			{Arch: "aarch64", RunnerGroup: "arm", Selection: Selection{
				Name: "minimal", Profiles: []string{}, BuildArguments: []string{},
			}},
		},
	}
	if !reflect.DeepEqual(m, want) {
		t.Fatalf("got %+v\nwant %+v", m, want)
	}
	if !m.IsImage() {
		t.Error("image metadata does not report IsImage")
	}
	if i, ok := m.FindImage("minimal", "aarch64"); !ok || i.RunnerGroup != "arm" {
		t.Errorf("FindImage(minimal, aarch64) = %+v, %v", i, ok)
	}
	if _, ok := m.FindImage("standard", "aarch64"); ok {
		t.Error("FindImage matched selection and arch of different entries")
	}
}

func TestDecodeMetadataRejects(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		dir  string
		want string
	}{
		{"missing schema_version", replaceLine(packageMetadata, "schema_version:", ""), "xclock", "schema_version: required"},
		{"schema_version string", replaceLine(packageMetadata, "schema_version:", "schema_version: one"), "xclock", "schema_version: must be a number, got string"},
		{"missing name", replaceLine(packageMetadata, "name:", ""), "", "name: required"},
		{"name number", replaceLine(packageMetadata, "name:", "name: 42"), "", "name: must be a string, got number"},
		{"name path", replaceLine(packageMetadata, "name:", "name: ../xclock"), "", "name: invalid name"},
		{"name differs from dir", packageMetadata, "xterm", `name: "xclock" does not match the directory name "xterm"`},
		{"distributions mapping", "schema_version: 0.1\nname: xclock\ndistributions: {dist: TW}\n", "xclock", "distributions: must be a list, got mapping"},
		{"distribution string", "schema_version: 0.1\nname: xclock\ndistributions: [TW.x86_64]\n", "xclock", "distributions[0]: must be a mapping, got string"},
		{"missing dist", strings.Replace(packageMetadata, "  - dist: TW\n    arch: aarch64", "  - arch: aarch64", 1), "xclock", "distributions[1].dist: required"},
		{"missing arch", strings.Replace(packageMetadata, "    arch: x86_64\n", "", 1), "xclock", "distributions[0].arch: required"},
		{"missing runner_group", strings.Replace(packageMetadata, "    runner_group: suse\n", "", 1), "xclock", "distributions[0].runner_group: required"},
		{"arch number", strings.Replace(packageMetadata, "arch: x86_64", "arch: 64", 1), "xclock", "distributions[0].arch: must be a string, got number"},
		{"dist injection", strings.Replace(packageMetadata, "dist: TW", `dist: "TW;reboot"`, 1), "xclock", "distributions[0].dist: invalid name"},
		{"runner_group traversal", strings.Replace(packageMetadata, "runner_group: suse", "runner_group: ../suse", 1), "xclock", "distributions[0].runner_group: invalid name"},
		{"images string", "schema_version: 0.1\nname: img\nimages: x86_64\n", "img", "images: must be a list, got string"},
		{"image entry list", "schema_version: 0.1\nname: img\nimages: [[x86_64]]\n", "img", "images[0]: must be a mapping, got list"},
		{"image missing arch", strings.Replace(imageMetadata, "  - arch: aarch64\n    runner_group: arm", "  - runner_group: arm", 1), "test-image-disk", "images[1].arch: required"},
		{"image missing runner_group", strings.Replace(imageMetadata, "    runner_group: arm\n", "", 1), "test-image-disk", "images[1].runner_group: required"},
		{"image missing selection", strings.Replace(imageMetadata, "    selection:\n      name: minimal\n", "", 1), "test-image-disk", "images[1].selection: required"},
		{"selection string", strings.Replace(imageMetadata, "    selection:\n      name: minimal\n", "    selection: minimal\n", 1), "test-image-disk", "images[1].selection: must be a mapping, got string"},
		{"selection missing name", strings.Replace(imageMetadata, "      name: minimal\n", "      profiles: [A]\n", 1), "test-image-disk", "images[1].selection.name: required"},
		{"selection name path", strings.Replace(imageMetadata, "name: minimal", "name: a/b", 1), "test-image-disk", "images[1].selection.name: invalid name"},
		{"profiles string", strings.Replace(imageMetadata, "profiles: [A, B]", "profiles: A", 1), "test-image-disk", "images[0].selection.profiles: must be a list, got string"},
		{"profile number", strings.Replace(imageMetadata, "profiles: [A, B]", "profiles: [A, 2]", 1), "test-image-disk", "images[0].selection.profiles[1]: must be a string, got number"},
		{"profile injection", strings.Replace(imageMetadata, "profiles: [A, B]", `profiles: [A, "--root=/"]`, 1), "test-image-disk", "images[0].selection.profiles[1]: invalid name"},
		{"build_arguments string", strings.Replace(imageMetadata, `build_arguments: ["--clear-cache"]`, "build_arguments: --clear-cache", 1), "test-image-disk", "images[0].selection.build_arguments: must be a list, got string"},
		{"build_argument newline", strings.Replace(imageMetadata, `"--clear-cache"`, `"--a\nb"`, 1), "test-image-disk", "images[0].selection.build_arguments[0]: contains a control character"},
		{"build_argument NUL", strings.Replace(imageMetadata, `"--clear-cache"`, `"--a\0b"`, 1), "test-image-disk", "images[0].selection.build_arguments[0]: contains"},
		{"not a mapping", "- xclock\n", "xclock", "not a mapping"},
		{"not YAML", "name: [xclock\n", "xclock", "not YAML"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := DecodeMetadata([]byte(tt.doc), tt.dir)
			if err == nil {
				t.Fatalf("decoded %+v, want an error containing %q\n%s", m, tt.want, tt.doc)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
		})
	}
}

func TestDecodeMetadataUnknownFieldsIgnored(t *testing.T) {
	doc := packageMetadata + "maintainer: someone\n"
	doc = strings.Replace(doc, "    runner_group: suse\n", "    runner_group: suse\n    comment: fast\n", 1)
	m, err := DecodeMetadata([]byte(doc), "xclock")
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Distributions) != 2 {
		t.Errorf("distributions %+v", m.Distributions)
	}
}

func TestLoadMetadata(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "projects", "MS", "xclock")
	if err := os.MkdirAll(filepath.Join(dir, ".cb"), 0o755); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, MetadataFile)

	if _, err := LoadMetadata(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: got %v, want fs.ErrNotExist", err)
	}

	if err := os.WriteFile(file, []byte(packageMetadata), 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := LoadMetadata(dir)
	if err != nil {
		t.Fatal(err)
	}
	if m.Name != "xclock" || len(m.Distributions) != 2 {
		t.Errorf("loaded %+v", m)
	}

	// The file's name and the field are both in the error, so the
	// "invalid package metadata" response can point at the mistake.
	if err := os.WriteFile(file, []byte(strings.Replace(packageMetadata, "    arch: aarch64\n", "", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = LoadMetadata(dir)
	if err == nil || !strings.Contains(err.Error(), file) || !strings.Contains(err.Error(), "distributions[1].arch: required") {
		t.Errorf("got %v, want an error naming %s and distributions[1].arch", err, file)
	}

	// The package directory's name is checked against name.
	other := filepath.Join(filepath.Dir(dir), "xterm")
	if err := os.Rename(dir, other); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(other, MetadataFile), []byte(packageMetadata), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadMetadata(other); err == nil || !strings.Contains(err.Error(), `"xterm"`) {
		t.Errorf("name/dir mismatch: got %v", err)
	}

	// Oversized files are refused before parsing.
	big := append([]byte(packageMetadata+"# "), []byte(strings.Repeat("x", 2<<20))...)
	if err := os.WriteFile(filepath.Join(other, MetadataFile), big, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadMetadata(other); !errors.Is(err, ErrTooLarge) {
		t.Errorf("2 MiB metadata: got %v, want ErrTooLarge", err)
	}
}

func TestMetadataRoundTrip(t *testing.T) {
	for name, doc := range map[string]string{"package": packageMetadata, "image": imageMetadata} {
		t.Run(name, func(t *testing.T) {
			m, err := DecodeMetadata([]byte(doc), "")
			if err != nil {
				t.Fatal(err)
			}
			enc, err := Encode(m)
			if err != nil {
				t.Fatal(err)
			}
			again, err := DecodeMetadata(enc, "")
			if err != nil {
				t.Fatalf("%v\n%s", err, enc)
			}
			if !reflect.DeepEqual(m, again) {
				t.Errorf("round trip: %+v != %+v", again, m)
			}
		})
	}
}

// The metadata file comes from an untrusted repository: a FIFO, a device or a
// symbolic link in its place must give an error at once, not block or read
// a file from elsewhere on the machine.
func TestLoadMetadataRefusesSpecialFiles(t *testing.T) {
	outside := filepath.Join(t.TempDir(), "elsewhere.yml")
	if err := os.WriteFile(outside, []byte(packageMetadata), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		setup func(t *testing.T, file string)
		want  string
	}{
		{"fifo", func(t *testing.T, file string) {
			if err := syscall.Mkfifo(file, 0o644); err != nil {
				t.Fatal(err)
			}
		}, "named pipe"},
		{"symlink to a FIFO", func(t *testing.T, file string) {
			fifo := filepath.Join(t.TempDir(), "fifo")
			if err := syscall.Mkfifo(fifo, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(fifo, file); err != nil {
				t.Fatal(err)
			}
		}, "symbolic link"},
		{"symlink to a device", func(t *testing.T, file string) {
			if err := os.Symlink("/dev/zero", file); err != nil {
				t.Fatal(err)
			}
		}, "symbolic link"},
		{"symlink to a file outside", func(t *testing.T, file string) {
			if err := os.Symlink(outside, file); err != nil {
				t.Fatal(err)
			}
		}, "symbolic link"},
		{"dangling symlink", func(t *testing.T, file string) {
			if err := os.Symlink(filepath.Join(t.TempDir(), "nothing"), file); err != nil {
				t.Fatal(err)
			}
		}, "symbolic link"},
		{".cb linking out of the package", func(t *testing.T, file string) {
			if err := os.Remove(filepath.Dir(file)); err != nil {
				t.Fatal(err)
			}
			other := filepath.Join(t.TempDir(), ".cb")
			if err := os.MkdirAll(other, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(other, "cloud_builder.yml"), []byte(packageMetadata), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(other, filepath.Dir(file)); err != nil {
				t.Fatal(err)
			}
		}, "escapes"},
		{"directory", func(t *testing.T, file string) {
			if err := os.Mkdir(file, 0o755); err != nil {
				t.Fatal(err)
			}
		}, "directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "xclock")
			if err := os.MkdirAll(filepath.Join(dir, ".cb"), 0o755); err != nil {
				t.Fatal(err)
			}
			file := filepath.Join(dir, MetadataFile)
			tt.setup(t, file)
			done := make(chan error, 1)
			go func() {
				_, err := LoadMetadata(dir)
				done <- err
			}()
			select {
			case err := <-done:
				if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), file) {
					t.Errorf("got %v, want an error naming %s and %q", err, file, tt.want)
				}
				if errors.Is(err, fs.ErrNotExist) {
					t.Errorf("%v reads as a missing file, but the file is there", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("LoadMetadata blocked")
			}
		})
	}
}
