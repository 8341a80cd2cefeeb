package image

import (
	"errors"
	"strings"
	"testing"
)

func TestValidateBuildArgs(t *testing.T) {
	tests := []struct {
		name string
		args []string
		bad  string // the argument the error must name; empty: allowed
		why  string // part of the reason
	}{
		{name: "none", args: nil},
		{name: "clear cache", args: []string{"--clear-cache"}},
		{name: "flags", args: []string{"--ignore-repos", "--ignore-repos-used-for-build"}},
		{name: "packages", args: []string{"--add-package=vim", "--add-package=libstdc++6", "--delete-package=man-db", "--add-bootstrap-package=usrmerge"}},
		{name: "rpm package with epoch-like name", args: []string{"--add-package=python3.11-pip"}},
		{name: "container tag and label", args: []string{"--set-container-tag=v1.2_rc", "--add-container-label=org.opencontainers.image.title=A title, with spaces"}},
		{name: "add repo", args: []string{"--add-repo=https://example.org/repo/,rpm-md,extra,90,false,true"}},
		{name: "add apt repo all fields", args: []string{"--add-repo=http://example.org/debian,apt-deb,bookworm,1,false,false,{},main contrib,bookworm,true"}},
		{name: "mirror placeholder", args: []string{"--set-repo=@DEBIAN_MIRROR@,apt-deb,debian,,,,,main,bookworm"}},
		{name: "mirror placeholder with path", args: []string{"--add-repo=@DEBIAN_MIRROR@-security/,apt-deb"}, bad: "--add-repo=@DEBIAN_MIRROR@-security/,apt-deb", why: "invalid path"},
		{name: "mirror placeholder subdir", args: []string{"--add-repo=@DEBIAN_MIRROR@/extra,apt-deb"}},

		{name: "target dir", args: []string{"--clear-cache", "--target-dir=/etc"}, bad: "--target-dir=/etc", why: "allow-list"},
		{name: "description", args: []string{"--description=/"}, bad: "--description=/", why: "allow-list"},
		{name: "root", args: []string{"--root=/"}, bad: "--root=/", why: "allow-list"},
		{name: "existing root", args: []string{"--allow-existing-root"}, bad: "--allow-existing-root", why: "allow-list"},
		{name: "signing key", args: []string{"--signing-key=/root/key.asc"}, bad: "--signing-key=/root/key.asc", why: "allow-list"},
		{name: "credentials", args: []string{"--add-repo-credentials=/etc/shadow"}, bad: "--add-repo-credentials=/etc/shadow", why: "allow-list"},
		{name: "derived from", args: []string{"--set-container-derived-from=file:///etc"}, bad: "--set-container-derived-from=file:///etc", why: "allow-list"},
		{name: "global option", args: []string{"--type=oem"}, bad: "--type=oem", why: "allow-list"},
		{name: "shared cache", args: []string{"--shared-cache-dir=/"}, bad: "--shared-cache-dir=/", why: "allow-list"},
		{name: "positional", args: []string{"vim"}, bad: "vim", why: "not an option"},
		{name: "short option", args: []string{"-h"}, bad: "-h", why: "not an option"},
		{name: "empty", args: []string{""}, bad: "", why: "not an option"},
		{name: "separate value", args: []string{"--add-package", "vim"}, bad: "--add-package", why: "needs a value"},
		{name: "empty value", args: []string{"--add-package="}, bad: "--add-package=", why: "needs a value"},
		{name: "flag with value", args: []string{"--clear-cache=yes"}, bad: "--clear-cache=yes", why: "takes no value"},
		{name: "package as option", args: []string{"--add-package=-o=Dpkg::Options"}, bad: "--add-package=-o=Dpkg::Options", why: "invalid package name"},
		{name: "package with space", args: []string{"--add-package=vim nano"}, bad: "--add-package=vim nano", why: "invalid package name"},
		{name: "newline", args: []string{"--add-package=vim\n--target-dir=/"}, bad: "--add-package=vim\n--target-dir=/", why: "control character"},
		{name: "twice set-repo", args: []string{"--set-repo=http://a.example/x,rpm-md", "--set-repo=http://b.example/x,rpm-md"}, bad: "--set-repo=http://b.example/x,rpm-md", why: "only once"},
		{name: "dir repo", args: []string{"--add-repo=dir:///etc,rpm-md"}, bad: "--add-repo=dir:///etc,rpm-md", why: "http or https"},
		{name: "file repo", args: []string{"--add-repo=file:///root,apt-deb"}, bad: "--add-repo=file:///root,apt-deb", why: "http or https"},
		{name: "path repo", args: []string{"--add-repo=/srv/repo,rpm-md"}, bad: "--add-repo=/srv/repo,rpm-md", why: "http or https"},
		{name: "repo credentials in url", args: []string{"--add-repo=https://u:p@example.org/r,rpm-md"}, bad: "--add-repo=https://u:p@example.org/r,rpm-md", why: "credentials"},
		{name: "repo type dir", args: []string{"--add-repo=http://example.org/r,rpm-dir"}, bad: "--add-repo=http://example.org/r,rpm-dir", why: "repository type"},
		{name: "repo without type", args: []string{"--add-repo=http://example.org/r"}, bad: "--add-repo=http://example.org/r", why: "type missing"},
		{name: "repo signing keys", args: []string{"--add-repo=http://example.org/r,rpm-md,a,1,false,true,{/root/k.asc}"}, bad: "--add-repo=http://example.org/r,rpm-md,a,1,false,true,{/root/k.asc}", why: "signing keys"},
		{name: "repo priority", args: []string{"--add-repo=http://example.org/r,rpm-md,a,high"}, bad: "--add-repo=http://example.org/r,rpm-md,a,high", why: "priority"},
		{name: "repo bool", args: []string{"--add-repo=http://example.org/r,rpm-md,a,1,yes"}, bad: "--add-repo=http://example.org/r,rpm-md,a,1,yes", why: "imageinclude"},
		{name: "repo distribution", args: []string{"--add-repo=http://example.org/r,apt-deb,a,1,,,,main,../../x"}, bad: "--add-repo=http://example.org/r,apt-deb,a,1,,,,main,../../x", why: "distribution"},
		{name: "repo last field with commas", args: []string{"--add-repo=http://example.org/r,apt-deb,a,1,,,,main,bookworm,true,extra"}, bad: "--add-repo=http://example.org/r,apt-deb,a,1,,,,main,bookworm,true,extra", why: "repo_gpgcheck"},
		{name: "container tag", args: []string{"--set-container-tag=-x"}, bad: "--set-container-tag=-x", why: "container tag"},
		{name: "label without value", args: []string{"--add-container-label=novalue"}, bad: "--add-container-label=novalue", why: "NAME=VALUE"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateBuildArgs(tt.args)
			if tt.bad == "" && tt.why == "" {
				if err != nil {
					t.Fatalf("ValidateBuildArgs(%q) = %v, want nil", tt.args, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("ValidateBuildArgs(%q) = nil, want an error naming %q", tt.args, tt.bad)
			}
			var ae *ArgError
			if !errors.As(err, &ae) {
				t.Fatalf("error %v is not an *ArgError", err)
			}
			if ae.Arg != tt.bad {
				t.Errorf("error names %q, want %q", ae.Arg, tt.bad)
			}
			if !strings.Contains(err.Error(), tt.why) {
				t.Errorf("error %q does not say %q", err, tt.why)
			}
			if tt.bad != "" && !strings.Contains(err.Error(), strings.Split(tt.bad, "\n")[0]) {
				t.Errorf("error %q does not quote the argument", err)
			}
		})
	}
}

func TestExpandBuildArgs(t *testing.T) {
	t.Setenv("CB_DEBIAN_MIRROR", "http://mirror.example/debian")
	got, err := expandBuildArgs([]string{"--clear-cache", "--add-repo=@DEBIAN_MIRROR@/extra,apt-deb"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"--clear-cache", "--add-repo=http://mirror.example/debian/extra,apt-deb"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("expandBuildArgs = %q, want %q", got, want)
	}
}
