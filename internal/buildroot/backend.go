package buildroot

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/cloud-builder/cb/internal/cgroup"
	"github.com/cloud-builder/cb/internal/proc"
	"github.com/cloud-builder/cb/internal/sandbox"
)

// Backend creates a buildroot for a profile. Implementations live in the
// sub-packages kiwi and native and register themselves with Register from
// init, so a program selects the backends it supports by importing them.
type Backend interface {
	// Name is the backend's name in Options.Backend and in the cache key.
	Name() string
	// Create installs the request's profile packages plus its deps into
	// its Dir, streaming tool output to its Log.
	Create(ctx context.Context, r CreateRequest) error
}

// CreateRequest is what a backend gets to create one root.
type CreateRequest struct {
	Profile *Profile
	Deps    []string
	// Dir is an existing empty directory, owned by the host's root.
	Dir string
	// Downloads, when set, is a directory that outlives the root where a
	// backend may keep downloaded packages, so a cold root does not
	// download again what an earlier one fetched
	// (<CacheDir>/downloads/<name>).
	Downloads string
	// IDs, when its Count is not 0, is the id range builds in this root
	// run as. A backend that can install as root of a user namespace
	// mapped to it does so (and reports it with InRange); any other root
	// is shifted into the range afterwards.
	IDs sandbox.IDMap
	// KeepIndexes keeps the repositories' package indexes in the root (a
	// base layer, on which layers install more packages without
	// downloading the indexes again).
	KeepIndexes bool
	Log         io.Writer
}

// InRange is implemented by backends that create roots owned by
// CreateRequest.IDs themselves.
type InRange interface {
	CreatesInRange() bool
}

// Keyed is implemented by backends whose roots depend on settings of
// their own, such as the options they pass their tool: KeyOptions names
// them, and the cache key covers it, so a root made under other settings
// is not reused.
type Keyed interface {
	KeyOptions() string
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
	// Stdout, when set, receives the command's standard output instead of
	// the log (standard error still goes to the log).
	Stdout io.Writer
	// Limits are the cgroup limits of an Isolate'd command; zero fields
	// set no limit.
	Limits cgroup.Limits
	// Isolate runs the command as PID 1 of a new PID namespace (so every
	// process it starts, daemons included, dies with it) and in a cgroup of
	// its own that is killed when it ends. Needs root.
	Isolate bool
	// Repositories, when not nil, gives the command a network namespace
	// of its own whose only way out is an HTTP proxy (http_proxy) that
	// forwards requests below these URLs and nothing else. Needs Isolate.
	Repositories []string
	// UserNS, when its Count is not 0, runs the command as root of a new
	// user namespace whose ids 0..Count-1 are the host's ids of this
	// range: everything it creates belongs to the range, and it has no
	// privilege over anything else on the host. Needs root, and Linux.
	UserNS sandbox.IDMap
	// Binds show files and directories to the command below BindBase, on
	// a tmpfs in a mount namespace of its own that the host never sees.
	// A command running as an id range cannot reach a path whose parents
	// only the host's root may search (a cache below /root); it gets the
	// path's bind instead. Needs PrivateMounts.
	Binds []Bind
}

// Bind shows Source to a command at BindPath(Name).
type Bind struct {
	Source string
	Name   string // one path element
	// Lower, when set, makes the bind an overlay instead: the read-only
	// layers Lower (colon-separated, topmost first) under Source as the
	// upper dir, with Work (empty, on Source's file system) as its
	// workdir. The host's root mounts it, as the build's sandbox mounts
	// its root, so whiteouts and opaque directories are recorded the way
	// that mount reads them.
	Lower string
	Work  string
}

// BindBase is where Binds appear. Only the empty directory exists on the
// host.
const BindBase = "/run/cloud-builder/prepare"

// BindPath is where a bind named name appears to the command.
func BindPath(name string) string { return BindBase + "/" + name }

// Exec runs argv in its own process group with stdout and stderr streamed
// to log; when ctx ends the whole group is killed. The command line is
// logged first so the prepare log shows what ran.
func Exec(ctx context.Context, log io.Writer, o ExecOptions, argv ...string) error {
	if len(argv) == 0 {
		return fmt.Errorf("exec: empty command")
	}
	fmt.Fprintf(log, "$ %s\n", proc.Quote(argv))
	if o.Repositories != nil {
		// the proxy reports refusals into the same log as the tool
		log = &syncWriter{w: log}
	}
	stdout := log
	if o.Stdout != nil {
		stdout = o.Stdout
	}
	cmd := command(ctx, o, stdout, log, argv)
	start := cmd.Start
	var ns threadNS
	if o.Repositories != nil {
		if !o.Isolate {
			return fmt.Errorf("%s: a private network needs Isolate", argv[0])
		}
		proxy := newRepoProxy(o.Repositories, log)
		defer proxy.close()
		ns.net = func() error {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				return fmt.Errorf("repository proxy: %w", err)
			}
			proxy.serve(ln)
			u := "http://" + ln.Addr().String()
			cmd.Env = append(cmd.Env, "http_proxy="+u, "https_proxy="+u, "HTTP_PROXY="+u, "HTTPS_PROXY="+u, "no_proxy=", "NO_PROXY=")
			return nil
		}
	}
	if len(o.Binds) > 0 {
		if !o.PrivateMounts {
			return fmt.Errorf("%s: binds need PrivateMounts", argv[0])
		}
		ns.binds = o.Binds
	}
	if ns.net != nil || ns.binds != nil {
		start = func() error { return ns.start(cmd.Start) }
	}
	if !o.Isolate || cgroup.Version() == 0 {
		if err := start(); err != nil {
			return fmt.Errorf("%s: %w", argv[0], err)
		}
		return wait(ctx, cmd, argv[0])
	}
	return runInGroup(ctx, cmd, start, argv[0], o.Limits)
}

var toolSeq atomic.Int64

// runInGroup runs cmd in a cgroup of its own and kills the whole group
// when cmd ends, however it ends: tools such as mmdebstrap and kiwi-ng
// start processes in their own process groups, which a kill of the job's
// group misses.
func runInGroup(ctx context.Context, cmd *exec.Cmd, start func() error, name string, limits cgroup.Limits) error {
	g, err := cgroup.New(fmt.Sprintf("prepare-%d-%d", os.Getpid(), toolSeq.Add(1)), limits)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if err := start(); err != nil {
		return errors.Join(fmt.Errorf("%s: %w", name, err), g.Close())
	}
	// The tool is added right after it started; it is a new PID namespace's
	// PID 1, so whatever it forks before that is killed with it anyway.
	addErr := g.Add(cmd.Process.Pid)
	if addErr != nil {
		_ = cmd.Process.Kill()
	}
	err = cmd.Wait()
	closeErr := g.Close()
	switch {
	case addErr != nil:
		return errors.Join(fmt.Errorf("%s: %w", name, addErr), closeErr)
	case err != nil && ctx.Err() != nil:
		return errors.Join(fmt.Errorf("%s: %w", name, context.Cause(ctx)), closeErr)
	case err != nil:
		return errors.Join(fmt.Errorf("%s: %w", name, err), closeErr)
	}
	return closeErr
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
	if o.Isolate {
		isolate(cmd.SysProcAttr)
	}
	if o.UserNS.Count != 0 {
		userNS(cmd.SysProcAttr, o.UserNS)
	}
	return cmd
}

func run(ctx context.Context, cmd *exec.Cmd, name string) error {
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return wait(ctx, cmd, name)
}

func wait(ctx context.Context, cmd *exec.Cmd, name string) error {
	err := cmd.Wait()
	if err != nil && ctx.Err() != nil {
		return fmt.Errorf("%s: %w", name, context.Cause(ctx))
	}
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}
