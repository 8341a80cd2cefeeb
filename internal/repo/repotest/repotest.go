// Package repotest builds tiny real rpm and deb packages for tests of the
// repository code, with the same tools a distribution uses.
package repotest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// RequireTools skips the test when a tool is missing on a developer box,
// and fails it under CI, where every tool must be installed.
func RequireTools(t testing.TB, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s is required in CI: %v", tool, err)
			}
			t.Skipf("%s not installed: %v", tool, err)
		}
	}
}

func runTool(t testing.TB, dir, name string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "SOURCE_DATE_EPOCH=1700000000", "LC_ALL=C")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// Deb builds <name>_<version>_<arch>.deb in dir with dpkg-deb and returns
// its path. The package ships one file, /usr/share/<name>/VERSION.
func Deb(t testing.TB, dir, name, version, arch string) string {
	t.Helper()
	tree := t.TempDir()
	if err := os.MkdirAll(filepath.Join(tree, "DEBIAN"), 0o755); err != nil {
		t.Fatal(err)
	}
	control := fmt.Sprintf("Package: %s\nVersion: %s\nArchitecture: %s\nMaintainer: Test <test@example.org>\n"+
		"Section: misc\nPriority: optional\nDescription: test package %s\n A package built by a test.\n", name, version, arch, name)
	if err := os.WriteFile(filepath.Join(tree, "DEBIAN", "control"), []byte(control), 0o644); err != nil {
		t.Fatal(err)
	}
	share := filepath.Join(tree, "usr", "share", name)
	if err := os.MkdirAll(share, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(share, "VERSION"), []byte(version+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, fmt.Sprintf("%s_%s_%s.deb", name, version, arch))
	runTool(t, dir, "dpkg-deb", "--root-owner-group", "-Zgzip", "--build", tree, out)
	return out
}

// RPM builds <name>-<version>-1.noarch.rpm in dir with rpmbuild and returns
// its path.
func RPM(t testing.TB, dir, name, version string) string {
	t.Helper()
	top := t.TempDir()
	spec := fmt.Sprintf(`Name: %[1]s
Version: %[2]s
Release: 1
Summary: test package %[1]s
License: MIT
BuildArch: noarch

%%description
A package built by a test.

%%install
mkdir -p %%{buildroot}/usr/share/%[1]s
echo %[2]s > %%{buildroot}/usr/share/%[1]s/VERSION

%%files
/usr/share/%[1]s/VERSION
`, name, version)
	specFile := filepath.Join(top, name+".spec")
	if err := os.WriteFile(specFile, []byte(spec), 0o644); err != nil {
		t.Fatal(err)
	}
	runTool(t, top, "rpmbuild", "-bb", "--nodeps", "--quiet",
		"--define", "_topdir "+top, "--define", "_rpmdir "+filepath.Join(top, "RPMS"),
		"--define", "__os_install_post %{nil}", "--define", "debug_package %{nil}", specFile)
	built := filepath.Join(top, "RPMS", "noarch", fmt.Sprintf("%s-%s-1.noarch.rpm", name, version))
	out := filepath.Join(dir, filepath.Base(built))
	if err := os.Rename(built, out); err != nil {
		t.Fatal(err)
	}
	return out
}
