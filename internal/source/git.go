package source

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"

	"github.com/cloud-builder/cb/internal/proc"
)

// allowedProtocols is GIT_ALLOW_PROTOCOL: the transports a repository URL
// may use. Anything else (ext::, fd::, custom remote helpers) is refused by
// git itself, including in redirects and submodule URLs.
const allowedProtocols = "file:git:http:https:ssh"

// maxStderr bounds how much of git's error output is kept for messages.
const maxStderr = 16 << 10

// gitCmd is one git invocation.
type gitCmd struct {
	dir    string    // working directory; "" = inherit
	args   []string  // after "git"
	stdin  io.Reader // optional
	stdout io.Writer // optional; default: collected and returned
	creds  *Credentials
	// scrub are strings (a password written into the URL) that must not
	// appear in an error message.
	scrub []string
}

// run executes git and returns its standard output (when c.stdout is nil).
// The error carries the last lines of git's stderr, which never contains
// credentials: they travel in the environment, not in the URL or argv.
func (c gitCmd) run(ctx context.Context) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "git", c.args...)
	cmd.Dir = c.dir
	cmd.Env = c.env()
	cmd.Stdin = c.stdin
	var out bytes.Buffer
	if c.stdout != nil {
		cmd.Stdout = c.stdout
	} else {
		cmd.Stdout = &out
	}
	stderr := &tailBuffer{max: maxStderr}
	cmd.Stderr = stderr
	proc.Group(cmd, 0)
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("git %s: %w", c.args[0], context.Cause(ctx))
		}
		msg := strings.TrimSpace(stderr.String())
		if i := strings.LastIndexByte(msg, '\n'); i >= 0 && len(msg)-i < 400 {
			// git prints hints first and the fatal line last.
			msg = strings.TrimSpace(msg[i+1:])
		}
		for _, s := range c.scrub {
			if s != "" {
				msg = strings.ReplaceAll(msg, s, "xxxxx")
			}
		}
		if msg == "" {
			return nil, fmt.Errorf("git %s: %w", c.args[0], err)
		}
		return nil, fmt.Errorf("git %s: %s: %w", c.args[0], msg, err)
	}
	return out.Bytes(), nil
}

// env is the child environment: the caller's, minus variables that would
// let the environment redirect git to another repository or run commands,
// plus the safety settings and credentials.
func (c gitCmd) env() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY",
			"GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_COMMON_DIR", "GIT_NAMESPACE",
			"GIT_ALLOW_PROTOCOL", "GIT_TERMINAL_PROMPT", "GIT_ASKPASS", "SSH_ASKPASS",
			"GIT_CONFIG_COUNT", "GIT_CONFIG_PARAMETERS", "GIT_EXTERNAL_DIFF", "LC_ALL":
			continue
		}
		if strings.HasPrefix(k, "GIT_CONFIG_KEY_") || strings.HasPrefix(k, "GIT_CONFIG_VALUE_") {
			continue
		}
		env = append(env, kv)
	}
	env = append(env,
		"GIT_ALLOW_PROTOCOL="+allowedProtocols,
		"GIT_TERMINAL_PROMPT=0",
		// Messages are parsed nowhere, but stable English text makes the
		// logs searchable.
		"LC_ALL=C",
	)
	// Configuration is passed as GIT_CONFIG_* variables rather than -c on
	// the command line: a process's environment is readable only by its
	// owner, its argv by everybody on the machine.
	cfg := [][2]string{
		{"advice.detachedHead", "false"},
		{"core.quotePath", "false"},
		// The checkout is a mirror that is reset, never worked in; a gc
		// running in the background while the next fetch starts would only
		// cost time.
		{"gc.autoDetach", "false"},
	}
	cfg = append(cfg, c.creds.config()...)
	env = append(env, "GIT_CONFIG_COUNT="+strconv.Itoa(len(cfg)))
	for i, kv := range cfg {
		env = append(env, "GIT_CONFIG_KEY_"+strconv.Itoa(i)+"="+kv[0], "GIT_CONFIG_VALUE_"+strconv.Itoa(i)+"="+kv[1])
	}
	return env
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	max int
	buf []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string { return string(t.buf) }
