package buildroot

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestParseBuildDepends(t *testing.T) {
	tests := []struct {
		name, control, arch string
		want                []string
		err                 string
	}{
		{"simple", "Source: x\nBuild-Depends: debhelper-compat (= 13), libfoo-dev\n", "amd64",
			[]string{"debhelper-compat", "libfoo-dev"}, ""},
		{"continuation and all fields", "Source: x\nBuild-Depends: aa,\n bb (>= 1.0~),\n   cc\nBuild-Depends-Indep: dd\nBuild-Depends-Arch: ee\n", "amd64",
			[]string{"aa", "bb", "cc", "dd", "ee"}, ""},
		{"first alternative", "Source: x\nBuild-Depends: gcc-12 | gcc, libx-dev:any, perl:native\n", "amd64",
			[]string{"gcc-12", "libx-dev", "perl"}, ""},
		{"arch restrictions", "Source: x\nBuild-Depends: libnuma-dev [amd64 arm64], libfoo [!amd64], libbar [linux-any], libbaz [any-i386]\n", "amd64",
			[]string{"libbar", "libnuma-dev"}, ""},
		{"arch restrictions on i386", "Source: x\nBuild-Depends: libnuma-dev [amd64 arm64], libfoo [!amd64], libbaz [any-i386]\n", "i386",
			[]string{"libbaz", "libfoo"}, ""},
		{"alternative filtered by arch", "Source: x\nBuild-Depends: libseccomp-dev [amd64] | libfallback\n", "riscv64",
			[]string{"libfallback"}, ""},
		{"profiles", "Source: x\nBuild-Depends: check <!nocheck>, stage1tool <stage1>, doc <!nodoc> <pkg.x.y>, both <!nocheck !nodoc>\n", "amd64",
			[]string{"both", "check", "doc"}, ""},
		{"everything at once", "Source: x\nBuild-Depends: foo:any (>= 2) [amd64] <!nocheck>\n", "amd64",
			[]string{"foo"}, ""},
		{"only first paragraph", "Source: x\nBuild-Depends: aa\n\nPackage: x\nBuild-Depends: nope\n", "amd64",
			[]string{"aa"}, ""},
		{"comments and empty clauses", "# comment\nSource: x\nBuild-Depends: aa,, bb,\n", "amd64",
			[]string{"aa", "bb"}, ""},
		{"signed dsc", "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\nFormat: 3.0 (quilt)\nSource: x\nBuild-Depends: aa, bb\n\n-----BEGIN PGP SIGNATURE-----\nxyz\n-----END PGP SIGNATURE-----\n", "amd64",
			[]string{"aa", "bb"}, ""},
		{"invalid name", "Source: x\nBuild-Depends: Foo_Bar\n", "amd64", nil, "invalid package name"},
		{"option injection", "Source: x\nBuild-Depends: --allow-unauthenticated\n", "amd64", nil, "invalid package name"},
		{"substvar", "Source: x\nBuild-Depends: ${misc:Depends}\n", "amd64", nil, "build dependency"},
		{"unterminated", "Source: x\nBuild-Depends: aa (>= 1\n", "amd64", nil, "missing"},
		{"foreign qualifier", "Source: x\nBuild-Depends: a:armhf\n", "amd64", nil, "qualifier"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseBuildDepends([]byte(tc.control), tc.arch)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestBuildDeps(t *testing.T) {
	deps, err := BuildDeps("../../examples/projects/Debian/cb-hello", "x86_64")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"build-essential", "debhelper-compat"}; !reflect.DeepEqual(deps, want) {
		t.Fatalf("debian tree: %v, want %v", deps, want)
	}
	deps, err = BuildDeps("../../examples/projects/RPM/cb-hello-rpm", "x86_64")
	if err != nil || deps != nil {
		t.Fatalf("spec: %v, %v; want no dependencies", deps, err)
	}

	dsc := t.TempDir()
	if err := os.WriteFile(filepath.Join(dsc, "x_1.0.dsc"), []byte("Format: 1.0\nSource: x\nBuild-Depends: libz-dev [amd64]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	deps, err = BuildDeps(dsc, "x86_64")
	if want := []string{"build-essential", "libz-dev"}; err != nil || !reflect.DeepEqual(deps, want) {
		t.Fatalf("dsc: %v, %v; want %v", deps, err, want)
	}

	// A debian/control that is a symlink to a host file is refused.
	evil := t.TempDir()
	if err := os.Mkdir(filepath.Join(evil, "debian"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc/passwd", filepath.Join(evil, "debian", "control")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(evil, "x.dsc"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if k, _ := SourceKind(evil); k != KindDsc {
		t.Fatalf("kind with symlinked control = %q, want dsc", k)
	}
	if _, err := SourceKind(t.TempDir()); err == nil {
		t.Fatal("empty directory has a source kind")
	}
}

func TestDebianArch(t *testing.T) {
	for in, want := range map[string]string{"x86_64": "amd64", "aarch64": "arm64", "i686": "i386", "ppc64le": "ppc64el", "s390x": "s390x"} {
		if got := DebianArch(in); got != want {
			t.Errorf("DebianArch(%q) = %q, want %q", in, got, want)
		}
	}
}
