package buildroot

import (
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/cloud-builder/cb/internal/mirror"
)

func loadDescription(t *testing.T, path string) *Description {
	t.Helper()
	t.Setenv(mirror.EnvOverride, "http://archive.example.org/debian")
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	data, err := mirror.Substitute(raw)
	if err != nil {
		t.Fatal(err)
	}
	d, err := ParseDescription(data)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestProfileResolution(t *testing.T) {
	d := loadDescription(t, "testdata/multi.kiwi")
	if want := []string{"TW.x86_64", "TW.aarch64", "bookworm.x86_64", "debian-common"}; !reflect.DeepEqual(d.Profiles, want) {
		t.Fatalf("profiles = %v, want %v", d.Profiles, want)
	}
	tests := []struct {
		profile   string
		pm        string
		repos     []Repository
		bootstrap []string
		packages  []string
	}{
		{
			profile: "TW.x86_64", pm: "zypper",
			repos:     []Repository{{Type: RepoRpmMd, Path: "http://download.example.org/tumbleweed/repo/oss", Alias: "oss"}},
			bootstrap: []string{"filesystem"},
			packages:  []string{"make", "rpm-build"},
		},
		{
			profile: "TW.aarch64", pm: "zypper",
			repos:     []Repository{{Type: RepoRpmMd, Path: "http://download.example.org/tumbleweed/repo/oss", Alias: "oss"}},
			bootstrap: []string{"filesystem"},
			packages:  []string{"make", "only-on-arm", "rpm-build"},
		},
		{
			profile: "bookworm.x86_64", pm: "apt",
			repos: []Repository{{Type: RepoAptDeb, Path: "http://archive.example.org/debian", Distribution: "bookworm",
				Components: []string{"main", "contrib"}, Alias: "debian",
				SigningKeys: []string{"file:///usr/share/keyrings/debian-archive-keyring.gpg"}}},
			bootstrap: []string{"filesystem", "ca-certificates"},
			packages:  []string{"make", "build-essential", "dpkg-dev"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.profile, func(t *testing.T) {
			p, err := d.Profile(tc.profile)
			if err != nil {
				t.Fatal(err)
			}
			if p.PackageManager != tc.pm {
				t.Errorf("packagemanager = %q, want %q", p.PackageManager, tc.pm)
			}
			if !reflect.DeepEqual(p.Repositories, tc.repos) {
				t.Errorf("repositories = %+v, want %+v", p.Repositories, tc.repos)
			}
			if !reflect.DeepEqual(p.Bootstrap, tc.bootstrap) {
				t.Errorf("bootstrap = %v, want %v", p.Bootstrap, tc.bootstrap)
			}
			if !reflect.DeepEqual(p.Packages, tc.packages) {
				t.Errorf("packages = %v, want %v", p.Packages, tc.packages)
			}
			if !strings.Contains(string(p.Source), "http://archive.example.org/debian") {
				t.Error("profile source is not the substituted description")
			}
		})
	}
	if _, err := d.Profile("Leap.x86_64"); !errors.Is(err, ErrUnknownProfile) {
		t.Fatalf("undeclared profile: err = %v", err)
	}
}

func TestExampleDescriptions(t *testing.T) {
	for _, path := range []string{
		"../../examples/projects/Debian/cb-hello/.cb/build_root.kiwi",
		"../../examples/projects/RPM/cb-hello-rpm/.cb/build_root.kiwi",
	} {
		t.Run(path, func(t *testing.T) {
			d := loadDescription(t, path)
			p, err := d.Profile("bookworm.x86_64")
			if err != nil {
				t.Fatal(err)
			}
			if p.PackageManager != "apt" || len(p.Repositories) != 1 || p.Repositories[0].Path != "http://archive.example.org/debian" {
				t.Fatalf("profile = %+v", p)
			}
		})
	}
}

func TestParseDescriptionRejects(t *testing.T) {
	head := `<image schemaversion="7.5" name="x"><profiles><profile name="a.x86_64"/></profiles>` +
		`<preferences><packagemanager>apt</packagemanager></preferences>`
	tests := []struct{ name, doc, want string }{
		{"schema 6", `<image schemaversion="6.2" name="x"/>`, "not 7.x"},
		{"not xml", `hello`, "parse"},
		{"entity", `<!DOCTYPE image [<!ENTITY x SYSTEM "file:///etc/shadow">]><image schemaversion="7.5">&x;</image>`, "parse"},
		{"bad profile", `<image schemaversion="7.5"><profiles><profile name="../x"/></profiles></image>`, "invalid profile"},
		{"repo type", head + `<repository type="yast2"><source path="http://x.example.org/"/></repository></image>`, "unsupported type"},
		{"repo scheme", head + `<repository type="apt-deb" distribution="bookworm"><source path="obs://x"/></repository></image>`, "unsupported scheme"},
		{"repo space", head + `<repository type="apt-deb" distribution="bookworm"><source path="http://x.example.org/ a"/></repository></image>`, "white space"},
		{"bad suite", head + `<repository type="apt-deb" distribution="../x"><source path="http://x.example.org/"/></repository></image>`, "invalid distribution"},
		{"option package", head + `<repository type="apt-deb" distribution="b"><source path="http://x.example.org/"/></repository>` +
			`<packages type="image"><package name="--root=/"/></packages></image>`, "invalid package"},
		{"comma package", head + `<repository type="apt-deb" distribution="b"><source path="http://x.example.org/"/></repository>` +
			`<packages type="image"><package name="a,b"/></packages></image>`, "invalid package"},
		{"no repository", head + `</image>`, "no <repository>"},
		{"include", head + `<include from="other.xml"/></image>`, "not supported"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d, err := ParseDescription([]byte(tc.doc))
			if err == nil {
				_, err = d.Profile("a.x86_64")
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}
