package buildroot

import (
	"context"
	"fmt"
	"io"
	"os/exec"
	"sort"
	"strings"
	"sync"

	"github.com/cloud-builder/cb/internal/proc"
)

// Backend creates a buildroot for a profile. Implementations live in the
// sub-packages kiwi and native and register themselves with Register from
// init, so a program selects the backends it supports by importing them.
type Backend interface {
	// Name is the backend's name in Options.Backend and in the cache key.
	Name() string
	// Create installs the profile's bootstrap and image packages plus deps
	// into dir, an existing empty directory, streaming tool output to log.
	Create(ctx context.Context, p *Profile, deps []string, dir string, log io.Writer) error
}

// DownloadCacher is a Backend that can keep downloaded packages in a
// directory that outlives a root, so a cold root does not download again
// what an earlier one fetched. Prepare passes <CacheDir>/downloads/<name>.
type DownloadCacher interface {
	Backend
	CreateCached(ctx context.Context, p *Profile, deps []string, dir, downloads string, log io.Writer) error
}

// Backend names.
const (
	BackendAuto   = "auto"
	BackendKiwi   = "kiwi"
	BackendNative = "native"
)

var (
	backendsMu sync.RWMutex
	backends   = map[string]Backend{}
)

// Register makes a backend available under its name; it panics on a
// duplicate name because that is a programming error.
func Register(b Backend) {
	backendsMu.Lock()
	defer backendsMu.Unlock()
	if _, dup := backends[b.Name()]; dup {
		panic("buildroot: backend registered twice: " + b.Name())
	}
	backends[b.Name()] = b
}

// Backends lists the registered backend names.
func Backends() []string {
	backendsMu.RLock()
	defer backendsMu.RUnlock()
	var names []string
	for n := range backends {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// SelectBackend resolves name for a profile: "auto" (or empty) picks native
// for an apt profile whose repositories are all apt-deb, kiwi otherwise.
func SelectBackend(name string, p *Profile) (Backend, error) {
	if name == "" || name == BackendAuto {
		name = BackendKiwi
		if p.PackageManager == "apt" && allApt(p.Repositories) {
			name = BackendNative
		}
	}
	backendsMu.RLock()
	b, ok := backends[name]
	backendsMu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("buildroot backend %q is not available (have %s)", name, strings.Join(Backends(), ", "))
	}
	return b, nil
}

func allApt(repos []Repository) bool {
	for _, r := range repos {
		if r.Type != RepoAptDeb {
			return false
		}
	}
	return len(repos) > 0
}

// ExecOptions tune Exec.
type ExecOptions struct {
	Env []string // extra environment, appended to a minimal base
	// PrivateMounts runs the command in a private mount namespace so no
	// mount it makes (proc, dev, binds of the root tools) can outlive it,
	// even when it is killed. Needs root.
	PrivateMounts bool
	Dir           string
}

// Exec runs argv in its own process group with stdout and stderr streamed
// to log; when ctx ends the whole group is killed. The command line is
// logged first so the prepare log shows what ran.
func Exec(ctx context.Context, log io.Writer, o ExecOptions, argv ...string) error {
	if len(argv) == 0 {
		return fmt.Errorf("exec: empty command")
	}
	fmt.Fprintf(log, "$ %s\n", proc.Quote(argv))
	return run(ctx, command(ctx, o, log, log, argv), argv[0])
}

func runCapture(ctx context.Context, stdout, stderr io.Writer, argv []string) error {
	return run(ctx, command(ctx, ExecOptions{}, stdout, stderr, argv), argv[0])
}

func command(ctx context.Context, o ExecOptions, stdout, stderr io.Writer, argv []string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = o.Dir
	// A fixed environment: tools that chroot (kiwi, mmdebstrap hooks)
	// pass it on into the buildroot, where host paths like $TMPDIR do
	// not exist.
	cmd.Env = append([]string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"LC_ALL=C.UTF-8",
		"DEBIAN_FRONTEND=noninteractive",
		"HOME=/root",
	}, o.Env...)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	if o.PrivateMounts {
		cmd.SysProcAttr = privateMounts()
	}
	proc.Group(cmd, 0)
	return cmd
}

func run(ctx context.Context, cmd *exec.Cmd, name string) error {
	err := cmd.Run()
	if err != nil && ctx.Err() != nil {
		return fmt.Errorf("%s: %w", name, context.Cause(ctx))
	}
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}
