package repo

import (
	"bytes"
	"context"
	"fmt"
	"strings"

	"github.com/cloud-builder/cb/internal/proc"
)

// run executes an external tool from an argument vector in its own process
// group, so that cancelling ctx takes down everything the tool started
// (createrepo_c workers, gpg-agent launches). The error carries the tail of the
// tool's stderr because that is what names the real problem.
func run(ctx context.Context, env []string, name string, args ...string) ([]byte, error) {
	cmd := proc.Command(ctx, 0, append([]string{name}, args...)...)
	if env != nil {
		cmd.Env = env
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("%s: %w: %s", name, err, tail(stderr.String()))
	}
	return stdout.Bytes(), nil
}

// tail keeps the last few lines of tool output for an error message.
func tail(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > 5 {
		lines = lines[len(lines)-5:]
	}
	return strings.Join(lines, "; ")
}
