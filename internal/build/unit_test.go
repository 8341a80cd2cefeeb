package build

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/cloud-builder/cb/internal/buildroot"
)

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		name, repo, arch string
		ok               bool
	}{
		{"hello-1.0-1.x86_64.rpm", RepoRPM, "x86_64", true},
		{"hello-doc-1.0-1.noarch.rpm", RepoRPM, "noarch", true},
		{"hello-1.0-1.src.rpm", RepoRPM, "src", true},
		{"hello-1.0-1.nosrc.rpm", RepoRPM, "nosrc", true},
		{"weird.rpm", RepoRPM, "", true},
		{"hello_1.0_amd64.deb", RepoDeb, "amd64", true},
		{"hello-doc_1.0_all.deb", RepoDeb, "all", true},
		{"hello-udeb_1.0_arm64.udeb", RepoDeb, "arm64", true},
		{"hello-dbgsym_1.0_amd64.ddeb", RepoDeb, "amd64", true},
		{"hello_1.0_AMD64.deb", RepoDeb, "", true},
		{"hello_1.0.dsc", "", "", false},
		{"hello_1.0_amd64.changes", "", "", false},
		{"hello-1.0.tar.gz", "", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			repo, arch, ok := classify(tc.name)
			if repo != tc.repo || arch != tc.arch || ok != tc.ok {
				t.Errorf("classify = %q %q %v, want %q %q %v", repo, arch, ok, tc.repo, tc.arch, tc.ok)
			}
		})
	}
}

func TestTreeExists(t *testing.T) {
	upper, lower := t.TempDir(), t.TempDir()
	mk := func(root, rel string) {
		t.Helper()
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	mk(lower, "usr/bin/build")
	mk(lower, "usr/bin/gone")
	mk(upper, "usr/lib/build/configs/default.conf")
	if os.Geteuid() == 0 {
		// overlayfs whiteout: char device 0/0 in the upper layer
		if err := os.MkdirAll(filepath.Join(upper, "usr/bin"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Mknod(filepath.Join(upper, "usr/bin/gone"), syscall.S_IFCHR|0o600, 0); err != nil {
			t.Fatal(err)
		}
	}
	tree := NewTree(&buildroot.Layout{Lower: lower, Upper: upper})
	for rel, want := range map[string]bool{
		"/usr/bin/build":                     true,
		"usr/lib/build/configs/default.conf": true,
		"/usr/bin/missing":                   false,
		"/usr/bin/gone":                      os.Geteuid() != 0,
	} {
		if got := tree.Exists(rel); got != want {
			t.Errorf("Exists(%s) = %v, want %v", rel, got, want)
		}
	}
	if !(obsBuild{}).Detect(&Package{Root: tree}) {
		t.Error("obs-build not detected with tool in lower and config in upper")
	}
}

func TestDetectOrder(t *testing.T) {
	for _, tc := range []struct {
		name  string
		files []string
		obs   bool
		kind  string // the layout's SourceKind
		want  string
	}{
		{"spec", []string{"hello.spec", "hello-1.0.tar.gz"}, false, "", "rpmbuild"},
		{"debian tree", []string{"debian/control", "hello.c"}, false, "", "dpkg-buildpackage"},
		{"dsc", []string{"hello_1.0.dsc", "hello_1.0.tar.xz"}, false, "", "dpkg-source"},
		{"spec wins over debian", []string{"hello.spec", "debian/control"}, false, "", "rpmbuild"},
		{"debian tree wins over dsc", []string{"debian/control", "hello_1.0.dsc"}, false, "", "dpkg-buildpackage"},
		{"obs-build wins", []string{"hello.spec"}, true, "", "obs-build"},
		{"nothing", []string{"README"}, false, "", ""},
		// The buildroot was prepared for one recipe: the build follows it.
		// A Debian source tree with an upstream spec (dtach) builds with
		// dpkg-buildpackage in the root its Build-Depends went into.
		{"prepared as a debian tree, upstream spec beside it", []string{"dtach.spec", "debian/control"}, false, "debian", "dpkg-buildpackage"},
		{"prepared as a spec", []string{"hello.spec", "debian/control"}, false, "spec", "rpmbuild"},
		{"prepared as a dsc", []string{"hello.spec", "hello_1.0.dsc"}, false, "dsc", "dpkg-source"},
		{"prepared for a recipe it lacks", []string{"hello.spec"}, false, "debian", ""},
		{"obs-build builds whatever was prepared", []string{"debian/control", "hello.spec"}, true, "debian", "obs-build"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			src := filepath.Join(root, "hello")
			for _, f := range tc.files {
				p := filepath.Join(src, f)
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, nil, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if tc.obs {
				for _, f := range []string{"usr/bin/build", "usr/lib/build/configs/default.conf"} {
					p := filepath.Join(root, f)
					if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
						t.Fatal(err)
					}
					if err := os.WriteFile(p, nil, 0o755); err != nil {
						t.Fatal(err)
					}
				}
			}
			p := &Package{Name: "hello", Dir: "/hello", HostDir: src, Root: Tree{Layers: []string{root}}}
			got := ""
			if e := chooseEngine(DefaultEngines(), p, tc.kind); e != nil {
				got = e.Name()
			}
			if got != tc.want {
				t.Errorf("engine %q, want %q", got, tc.want)
			}
		})
	}
}

func TestRPMSteps(t *testing.T) {
	src := filepath.Join(t.TempDir(), "hello")
	for _, f := range []string{"hello.spec", "hello-1.0.tar.gz", "fix.patch", ".cb/cloud_builder.yml"} {
		p := filepath.Join(src, f)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	steps, err := rpmBuild{}.Steps(&Package{Name: "hello", Dir: "/hello", HostDir: src})
	if err != nil {
		t.Fatal(err)
	}
	cp := strings.Join(steps[1].Argv, " ")
	if strings.Contains(cp, ".cb") || !strings.Contains(cp, "/hello/fix.patch") {
		t.Errorf("sources copy %q", cp)
	}
	last := steps[len(steps)-1].Argv
	want := []string{"rpmbuild", "-ba", "--nodeps", "--define", "_topdir /usr/src/packages", "/hello/hello.spec"}
	if strings.Join(last, "\x00") != strings.Join(want, "\x00") {
		t.Errorf("rpmbuild argv %q, want %q", last, want)
	}
	// Two specs, none named after the package: refuse to guess.
	if err := os.WriteFile(filepath.Join(src, "other.spec"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(src, "hello.spec"), filepath.Join(src, "third.spec")); err != nil {
		t.Fatal(err)
	}
	if _, err := (rpmBuild{}).Steps(&Package{Name: "hello", Dir: "/hello", HostDir: src}); err == nil {
		t.Error("ambiguous spec accepted")
	}
}

func TestHostDirRefusesSymlinks(t *testing.T) {
	base := t.TempDir()
	if err := os.MkdirAll(filepath.Join(base, "usr/src/packages/RPMS"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/", filepath.Join(base, "home")); err != nil {
		t.Fatal(err)
	}
	if _, ok := hostDir(base, "/usr/src/packages/RPMS"); !ok {
		t.Error("real directory refused")
	}
	if p, ok := hostDir(base, "/home/abuild"); ok {
		t.Errorf("followed a symlink out of the root to %s", p)
	}
	if p, ok := hostDir(base, "/"); !ok || p != base {
		t.Errorf("root = %q %v", p, ok)
	}
}

func TestCappedLog(t *testing.T) {
	for _, tc := range []struct {
		name   string
		max    int64
		writes []string
		want   string
		cut    bool
	}{
		{"no cap", 0, []string{"abc", "def"}, "abcdef", false},
		{"under cap", 10, []string{"abc", "def"}, "abcdef", false},
		{"cut in a write", 4, []string{"abc", "def", "ghi"}, "abcd", true},
		{"exact cap", 6, []string{"abc", "def"}, "abcdef", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			c := &cappedLog{w: &buf, max: tc.max}
			for _, w := range tc.writes {
				if n, err := c.Write([]byte(w)); n != len(w) || err != nil {
					t.Fatalf("write = %d %v; the build must never see a failed write", n, err)
				}
			}
			c.Printf("footer\n")
			got := buf.String()
			if !strings.HasPrefix(got, tc.want) {
				t.Errorf("log %q, want prefix %q", got, tc.want)
			}
			if strings.Contains(got, "truncated") != tc.cut {
				t.Errorf("log %q: truncation marker %v, want %v", got, !tc.cut, tc.cut)
			}
			if strings.Count(got, "truncated") > 1 || !strings.HasSuffix(got, "footer\n") {
				t.Errorf("log %q", got)
			}
		})
	}
}
