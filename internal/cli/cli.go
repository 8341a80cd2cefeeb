// Package cli is the command line of Cloud Builder: one multi-call binary.
// `cb <service> [flags]` and a symlink `cb-<service> [flags]` are the same.
// Each service lives in its own file of this package and registers itself in
// init; the file holds only flag parsing and wiring, the work is done by the
// service's own package.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"syscall"

	"github.com/cloud-builder/cb/internal/config"
)

// Env is what a command gets from the outside world; tests substitute it.
type Env struct {
	Stdout  io.Writer
	Stderr  io.Writer
	Stdin   io.Reader
	Getenv  func(string) string
	Version string
	// Exe is the path of the cb binary, for services that start
	// themselves as child processes.
	Exe string
}

// Paths returns the configuration and state paths after env overrides.
func (e *Env) Paths() config.Paths { return config.DefaultPaths(e.Getenv) }

// Command is one service or tool.
type Command struct {
	Name    string // "ctl" for cb ctl / cb-ctl
	Summary string
	Hidden  bool // internal commands not listed in help
	// Client commands run on every system; the others (services, builds)
	// need Linux and refuse to start elsewhere.
	Client bool
	Run    func(ctx context.Context, env *Env, args []string) int
}

// goos is runtime.GOOS; tests pretend to be elsewhere.
var goos = runtime.GOOS

// linuxOnly refuses a server command outside Linux with ExitUsage.
func linuxOnly(env *Env, name string) (int, bool) {
	if goos == "linux" {
		return 0, false
	}
	fmt.Fprintf(env.Stderr, "cb-%s: runs on Linux only (this is %s); cb-ctl's remote commands work here\n", name, goos)
	return ExitUsage, true
}

var commands = map[string]*Command{}

func register(c *Command) {
	if _, dup := commands[c.Name]; dup {
		panic("cli: duplicate command " + c.Name)
	}
	commands[c.Name] = c
}

// services are the programs of the original, each linked as bin/cb-<name>.
// A service without a registered command answers honestly that it is not
// there yet.
var services = []string{"ctl", "fetch", "scheduler", "prepare", "run", "image", "info", "collect", "depsolver"}

// Exit codes.
const (
	ExitOK          = 0
	ExitFailure     = 1
	ExitUsage       = 2
	ExitUnavailable = 2
)

// Main runs the command named by args and returns the exit status.
func Main(args []string, version string) int {
	exe, err := os.Executable()
	if err != nil {
		exe = args[0]
	}
	env := &Env{Stdout: os.Stdout, Stderr: os.Stderr, Stdin: os.Stdin, Getenv: os.Getenv, Version: version, Exe: exe}
	ctx, stop := signalContext()
	defer stop()
	return Run(ctx, env, args)
}

// Run dispatches args (args[0] is the program name) with env.
func Run(ctx context.Context, env *Env, args []string) int {
	prog := filepath.Base(args[0])
	rest := args[1:]
	name := ""
	if s, ok := strings.CutPrefix(prog, "cb-"); ok {
		name = s
	} else {
		if len(rest) == 0 {
			usage(env.Stderr)
			return ExitUsage
		}
		name, rest = rest[0], rest[1:]
	}
	switch name {
	case "-h", "--help", "help":
		usage(env.Stdout)
		return ExitOK
	case "version", "--version":
		fmt.Fprintf(env.Stdout, "cb %s\n", env.Version)
		return ExitOK
	}
	c, ok := commands[name]
	if !ok {
		for _, s := range services {
			if s == name {
				fmt.Fprintf(env.Stderr, "cb-%s: not implemented yet\n", name)
				return ExitUnavailable
			}
		}
		fmt.Fprintf(env.Stderr, "cb: unknown command %q (see cb --help)\n", name)
		return ExitUsage
	}
	if !c.Client {
		if code, refused := linuxOnly(env, name); refused {
			return code
		}
	}
	return c.Run(ctx, env, rest)
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "Cloud Builder: package and image build service.")
	fmt.Fprintln(w, "\nUsage: cb <command> [flags]   (or cb-<command> [flags] through a symlink)")
	fmt.Fprintln(w, "\nCommands:")
	names := make([]string, 0, len(commands))
	for n, c := range commands {
		if !c.Hidden {
			names = append(names, n)
		}
	}
	for _, s := range services {
		if _, ok := commands[s]; !ok {
			names = append(names, s)
		}
	}
	sort.Strings(names)
	for _, n := range names {
		summary := "(not implemented yet)"
		if c, ok := commands[n]; ok {
			summary = c.Summary
		}
		fmt.Fprintf(w, "  %-10s %s\n", n, summary)
	}
	fmt.Fprintln(w, "  version    print the version")
	fmt.Fprintln(w, "\nRun cb <command> --help for the flags of a command.")
}

// signalContext cancels on the first SIGINT/SIGTERM with a cause naming the
// signal; a second signal exits at once.
func signalContext() (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(context.Background())
	ch := make(chan os.Signal, 2)
	signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		s, ok := <-ch
		if !ok {
			return
		}
		cancel(fmt.Errorf("received %s: %w", s, context.Canceled))
		if s, ok := <-ch; ok {
			fmt.Fprintf(os.Stderr, "received second %s, exiting now\n", s)
			os.Exit(130)
		}
	}()
	return ctx, func() { signal.Stop(ch); close(ch); cancel(nil) }
}

// Common are the flags every command has.
type Common struct {
	LogFormat string
	LogLevel  string
}

// newFlagSet returns a flag set for a command with the common flags
// registered. Go's flag package accepts --flag=value and --flag value, so
// the original services' flag spellings work as they are.
func newFlagSet(env *Env, name, synopsis string) (*flag.FlagSet, *Common) {
	fs := flag.NewFlagSet("cb-"+name, flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	c := &Common{}
	fs.StringVar(&c.LogFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&c.LogLevel, "log-level", "info", "log level: debug, info, warn, error")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: cb-%s %s\n\nFlags:\n", name, synopsis)
		fs.PrintDefaults()
	}
	return fs, c
}

// parse parses args; it returns done=true with the exit code when the
// command must stop (help asked for, or bad flags).
func parse(fs *flag.FlagSet, args []string) (code int, done bool) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return ExitOK, true
		}
		return ExitUsage, true
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "%s: unexpected argument %q\n", fs.Name(), fs.Arg(0))
		return ExitUsage, true
	}
	if l, f := fs.Lookup("log-level"), fs.Lookup("log-format"); l != nil && f != nil {
		if err := validLogFlags(l.Value.String(), f.Value.String()); err != nil {
			fmt.Fprintf(fs.Output(), "%s: %v\n", fs.Name(), err)
			return ExitUsage, true
		}
	}
	return 0, false
}

// Logger returns the slog logger the common flags ask for, writing to w.
func (c *Common) Logger(w io.Writer, component string) *slog.Logger {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(c.LogLevel)); err != nil {
		lvl = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: lvl}
	var h slog.Handler
	if c.LogFormat == "json" {
		h = slog.NewJSONHandler(w, opts)
	} else {
		h = slog.NewTextHandler(w, opts)
	}
	return slog.New(h).With("component", component)
}

// fail prints one clear error line and returns ExitFailure.
func fail(env *Env, name string, err error) int {
	fmt.Fprintf(env.Stderr, "cb-%s: %v\n", name, err)
	return ExitFailure
}
