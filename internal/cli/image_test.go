package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cloud-builder/cb/internal/config"
)

func TestImageTarget(t *testing.T) {
	root := t.TempDir()
	tests := []struct {
		name, dir                  string
		wantDir, wantRepo, errPart string
	}{
		{
			name:     "below the runner root",
			dir:      filepath.Join(root, "projects/images/leap/test-image-disk@standard.x86_64"),
			wantDir:  filepath.Join(root, "projects/images/leap/test-image-disk@standard.x86_64"),
			wantRepo: "projects/images/leap/standard",
		},
		{
			name:     "elsewhere",
			dir:      "/srv/img/test-image-disk@standard.x86_64",
			wantDir:  "/srv/img/test-image-disk@standard.x86_64",
			wantRepo: "standard",
		},
		{name: "no profile", dir: "/srv/img/test-image-disk", errPart: "want <dir>/<name>@<SELECTION>.<ARCH>"},
		{name: "no arch", dir: "/srv/img/test-image-disk@standard", errPart: "<SELECTION>.<ARCH>"},
		{name: "bad selection", dir: "/srv/img/x@$(id).x86_64", errPart: "invalid name"},
		{name: "bad project", dir: filepath.Join(root, "projects/a b/x@standard.x86_64"), errPart: "projects/a b"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tg, err := imageTarget(tt.dir, root)
			if tt.errPart != "" {
				if err == nil || !strings.Contains(err.Error(), tt.errPart) {
					t.Fatalf("imageTarget(%q) = %+v, %v; want an error with %q", tt.dir, tg, err, tt.errPart)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tg.Dir() != tt.wantDir || tg.RepoPath() != tt.wantRepo {
				t.Errorf("imageTarget(%q): dir %s repo %s, want %s and %s", tt.dir, tg.Dir(), tg.RepoPath(), tt.wantDir, tt.wantRepo)
			}
		})
	}
}

// TestImageRefusesBuildArgs checks that cb-image refuses kiwi arguments
// outside the allow-list before anything runs, naming the argument.
func TestImageRefusesBuildArgs(t *testing.T) {
	dir := t.TempDir()
	var stdout, stderr bytes.Buffer
	env := &Env{Stdout: &stdout, Stderr: &stderr, Getenv: func(k string) string {
		if k == config.EnvRunnerRoot {
			return filepath.Join(dir, "runner")
		}
		return ""
	}}
	td := filepath.Join(dir, "out", "img@standard.x86_64")
	code := Run(context.Background(), env, []string{"cb-image", "--description=" + dir, "--target-dir=" + td,
		"--", "--clear-cache", "--target-dir=/etc"})
	if code != ExitFailure {
		t.Fatalf("exit %d, want %d; stderr %q", code, ExitFailure, stderr.String())
	}
	if !strings.Contains(stderr.String(), `"--target-dir=/etc"`) {
		t.Errorf("stderr does not name the argument: %q", stderr.String())
	}
	if _, err := os.Stat(filepath.Dir(td)); !os.IsNotExist(err) {
		t.Errorf("cb-image created %s before refusing: %v", filepath.Dir(td), err)
	}
}

func TestImageUsage(t *testing.T) {
	var stdout, stderr bytes.Buffer
	env := &Env{Stdout: &stdout, Stderr: &stderr, Getenv: func(string) string { return "" }}
	if code := Run(context.Background(), env, []string{"cb-image", "--target-dir=/x/y@a.b"}); code != ExitUsage {
		t.Errorf("missing --description: exit %d, want %d", code, ExitUsage)
	}
	if code := Run(context.Background(), env, []string{"cb-image", "--description=/x", "stray"}); code != ExitUsage {
		t.Errorf("stray argument: exit %d, want %d", code, ExitUsage)
	}
}
