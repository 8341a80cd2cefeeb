package e2e

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cloud-builder/cb/internal/buildroot"
	"github.com/cloud-builder/cb/internal/sandbox"
	"github.com/cloud-builder/cb/internal/target"
)

// aptInstall installs pkg with apt from the collector's repository for
// project's dist, with signature checking on, inside a fresh root made
// from the target's cached buildroot, and runs command there.
func (s *system) aptInstall(t *testing.T, project, repoPath, pkg string, command ...string) string {
	t.Helper()
	return aptInstall(t, s.runnerRoot, s.collectorURL, project, repoPath, pkg, command...)
}

func aptInstall(t *testing.T, runnerRoot, collectorURL, project, repoPath, pkg string, command ...string) string {
	t.Helper()
	tg := target.Target{Root: runnerRoot, Project: project, Profile: "bookworm.x86_64"}
	layout, err := buildroot.LoadLayout(tg)
	if err != nil {
		t.Fatalf("no buildroot layout: %v", err)
	}
	dir := t.TempDir()
	upper, work, root := filepath.Join(dir, "upper"), filepath.Join(dir, "work"), filepath.Join(dir, "root")
	for _, d := range []string{upper, work, root, filepath.Join(upper, "etc/apt/keyrings"), filepath.Join(upper, "etc/apt/sources.list.d")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	key := httpGet(t, collectorURL+"/repo.gpg")
	if err := os.WriteFile(filepath.Join(upper, "etc/apt/keyrings/cb.gpg"), key, 0o644); err != nil {
		t.Fatal(err)
	}
	line := "deb [signed-by=/etc/apt/keyrings/cb.gpg] " + collectorURL + "/" + repoPath + " bookworm main\n"
	if err := os.WriteFile(filepath.Join(upper, "etc/apt/sources.list.d/cb.list"), []byte(line), 0o644); err != nil {
		t.Fatal(err)
	}
	// The command runs as root of the sandbox's id range, which must own
	// what it is to change, like the cached root below.
	if err := sandbox.ShiftOwner(upper, sandbox.DefaultIDs); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	runIn := func(argv ...string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		code, err := sandbox.Run(ctx, sandbox.Spec{
			Lower: layout.Lower, Upper: upper, Work: work, Root: root, Dir: "/", Argv: argv,
			Env:    []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "DEBIAN_FRONTEND=noninteractive", "LANG=C.UTF-8"},
			Stdout: &out, Stderr: &out, Network: true,
		})
		if err != nil || code != 0 {
			t.Fatalf("%s: exit %d, %v\n%s", strings.Join(argv, " "), code, err, tail(out.String(), 4000))
		}
	}
	// Only the collector's repository: the test proves it alone suffices
	// and that apt checks its signature (no [trusted=yes] anywhere).
	only := []string{"-o", "Dir::Etc::SourceList=/etc/apt/sources.list.d/cb.list", "-o", "Dir::Etc::SourceParts=/nonexistent"}
	runIn(append([]string{"apt-get", "update", "-o", "APT::Get::AllowUnauthenticated=false"}, only...)...)
	if strings.Contains(out.String(), "NO_PUBKEY") || strings.Contains(out.String(), "not signed") {
		t.Fatalf("apt did not verify the repository:\n%s", out.String())
	}
	runIn(append([]string{"apt-get", "install", "-y", "--no-install-recommends", pkg}, only...)...)
	out.Reset()
	runIn(command...)
	return out.String()
}

func httpGet(t *testing.T, url string) []byte {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %v", url, resp.StatusCode, err)
	}
	return b
}

func httpClient() *http.Client { return &http.Client{Timeout: 10 * time.Second} }
