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
