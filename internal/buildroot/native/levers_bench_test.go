package native

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloud-builder/cb/internal/buildroot"
	"github.com/cloud-builder/cb/internal/mirror"
)

// BenchmarkColdLevers times a cold mmdebstrap run of the Debian example's
// buildroot (examples/projects/Debian/cb-hello) with the backend's own
// argument vector, and with one of its speed levers taken out at a time,
// so each lever's share shows. Every iteration is one root; run it with
// -benchtime=1x -count=N (see bench/coldpath.sh). Besides the total, each
// run reports where the time went, from mmdebstrap's and apt's progress
// lines (the span from one line to the next counts for the phase of the
// first):
//
//	update-s     apt-get update (repository indexes)
//	download-s   fetching .debs (essential set and the rest)
//	extract-s    unpacking the essential set with dpkg-deb
//	unpack-s     dpkg unpacking (essential set and the rest)
//	configure-s  dpkg configuring, maintainer scripts included
//	triggers-s   dpkg triggers (man-db, libc-bin, ...)
//	other-s      setup, hooks and cleanup
//
// The runs use mmdebstrap's root mode in a fresh directory (no id range),
// in the environment, private mount and network namespaces (the
// repository proxy the only way out) buildroot.Exec gives the backend,
// with an empty download cache unless the variant says otherwise; they need root and the Debian archive named
// in this machine's apt sources. With COLD_LEVERS_LOG set to a directory,
// every run's output is written there with a time stamp per line.
func BenchmarkColdLevers(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	if _, err := exec.LookPath("mmdebstrap"); err != nil {
		b.Skip("mmdebstrap not installed")
	}
	data, err := os.ReadFile("../../../examples/projects/Debian/cb-hello/.cb/build_root.kiwi")
	if err != nil {
		b.Fatal(err)
	}
	if data, err = mirror.Substitute(data); err != nil {
		b.Fatal(err)
	}
	desc, err := buildroot.ParseDescription(data)
	if err != nil {
		b.Fatal(err)
	}
	prof, err := desc.Profile("bookworm.x86_64")
	if err != nil {
		b.Fatal(err)
	}
	deps := []string{"debhelper"}
	repos := buildroot.RepositoryURLs(prof)
	const dirArg = "@DIR@"
	argv, err := Command(prof, deps, dirArg, false)
	if err != nil {
		b.Fatal(err)
	}
	drop := func(prefixes ...string) func([]string) []string {
		return func(a []string) []string {
			return slices.DeleteFunc(slices.Clone(a), func(s string) bool {
				for _, p := range prefixes {
					if strings.HasPrefix(s, p) {
						return true
					}
				}
				return false
			})
		}
	}
	for _, v := range []struct {
		name string
		edit func([]string) []string
		// warm links the packages of an earlier run into the root's apt
		// archive first, as Create does with its download cache.
		warm bool
		// direct: apt reaches the archive itself, not through the
		// repository proxy of the tool's network namespace.
		direct bool
	}{
		{name: "default"},
		{name: "direct-network", direct: true},
		{name: "default+cached-debs", warm: true},
		{name: "without-unsafe-io", edit: drop("--dpkgopt=force-unsafe-io")},
		{name: "without-eatmydata", edit: drop("--hook-dir=")},
		{name: "without-path-excludes", edit: drop(slimHook())},
		// the excludes as mmdebstrap options, which filter the essential
		// set's extraction through mmdebstrap's tar filter
		{name: "excludes-by-tar-filter", edit: func(a []string) []string {
			a = drop(slimHook())(a)
			o := []string{}
			for _, s := range slimOptions() {
				o = append(o, "--dpkgopt="+s)
			}
			return append(a[:1], append(o, a[1:]...)...)
		}},
		{name: "without-man-db-off", edit: drop(manDBHook)},
		{name: "none", edit: drop("--dpkgopt=", "--hook-dir=", slimHook(), manDBHook, aptNoLanguages)},
	} {
		b.Run(v.name, func(b *testing.B) {
			a := argv
			if v.edit != nil {
				a = v.edit(a)
			}
			downloads := ""
			if v.warm {
				downloads = b.TempDir()
				b.StopTimer()
				fillDownloads(b, a, dirArg, downloads, repos)
				b.StartTimer()
			}
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				dir := filepath.Join(b.TempDir(), "root")
				if err := os.Mkdir(dir, 0o755); err != nil {
					b.Fatal(err)
				}
				run := withDir(a, dirArg, dir)
				if downloads != "" {
					if _, err := linkDebs(downloads, filepath.Join(dir, archives)); err != nil {
						b.Fatal(err)
					}
					run = append(run[:1], append([]string{"--skip=check/empty", "--skip=essential/unlink"}, run[1:]...)...)
				}
				b.StartTimer()
				r := repos
				if v.direct {
					r = nil
				}
				phases := runTimed(b, run, r)
				b.StopTimer()
				for name, d := range phases {
					b.ReportMetric(d.Seconds(), name+"-s")
				}
				if err := os.RemoveAll(dir); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
		})
	}
}

// fillDownloads runs mmdebstrap once, keeping its apt archive, and moves
// the downloaded packages into downloads.
func fillDownloads(b *testing.B, argv []string, dirArg, downloads string, repos []string) {
	b.Helper()
	dir := filepath.Join(b.TempDir(), "root")
	run := withDir(argv, dirArg, dir)
	run = append(run[:1], append([]string{"--skip=cleanup/apt/cache", "--skip=essential/unlink"}, run[1:]...)...)
	runTimed(b, run, repos)
	debs, err := filepath.Glob(filepath.Join(dir, archives, "*.deb"))
	if err != nil || len(debs) == 0 {
		b.Fatalf("no packages kept in %s (%v)", filepath.Join(dir, archives), err)
	}
	for _, d := range debs {
		if err := os.Rename(d, filepath.Join(downloads, filepath.Base(d))); err != nil {
			b.Fatal(err)
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		b.Fatal(err)
	}
}

func withDir(argv []string, dirArg, dir string) []string {
	out := slices.Clone(argv)
	for i, a := range out {
		if a == dirArg {
			out[i] = dir
		}
	}
	return append(out[:1], append([]string{"--verbose"}, out[1:]...)...)
}

// runTimed runs argv as Create does (buildroot.Exec: the runner's fixed
// environment, a private mount namespace and, with repos, a network
// namespace whose only way out is the repository proxy for repos) and
// splits its duration into phases by its output.
func runTimed(b *testing.B, argv []string, repos []string) map[string]time.Duration {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	w := &phaseWriter{phase: "other", last: time.Now(), phases: map[string]time.Duration{}}
	if dir := os.Getenv("COLD_LEVERS_LOG"); dir != "" {
		f, err := os.CreateTemp(dir, "mmdebstrap-*.log")
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		w.log = f
	}
	o := buildroot.ExecOptions{PrivateMounts: true}
	if repos != nil {
		o.Isolate, o.Repositories = true, repos
	}
	err := buildroot.Exec(ctx, w, o, argv...)
	w.mu.Lock()
	defer w.mu.Unlock()
	w.phases[w.phase] += time.Since(w.last)
	if err != nil {
		b.Fatalf("%q: %v\n%s", argv, err, strings.Join(w.tail, "\n"))
	}
	return w.phases
}

// phaseWriter times the phases of mmdebstrap's output, line by line.
type phaseWriter struct {
	mu     sync.Mutex
	buf    []byte
	phase  string
	start  time.Time
	last   time.Time
	phases map[string]time.Duration
	tail   []string
	log    io.Writer
}

func (w *phaseWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.start.IsZero() {
		w.start = w.last
	}
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			return len(p), nil
		}
		line := string(w.buf[:i])
		w.buf = w.buf[i+1:]
		now := time.Now()
		if w.log != nil {
			fmt.Fprintf(w.log, "%8.3f %s\n", now.Sub(w.start).Seconds(), line)
		}
		if next, ok := phaseOf(line, w.phase); ok {
			w.phases[w.phase] += now.Sub(w.last)
			w.phase, w.last = next, now
		}
		w.tail = append(w.tail, line)
		if len(w.tail) > 40 {
			w.tail = w.tail[1:]
		}
	}
}

// phaseOf returns the phase a progress line starts, if it starts one.
func phaseOf(line, cur string) (string, bool) {
	l := strings.TrimSpace(line)
	switch {
	case strings.HasPrefix(l, "I: running apt-get update"):
		return "update", true
	case strings.HasPrefix(l, "I: downloading packages"), strings.HasPrefix(l, "Get:"):
		return "download", true
	case strings.HasPrefix(l, "I: extracting archives"):
		return "extract", true
	case strings.HasPrefix(l, "Preparing to unpack"), strings.HasPrefix(l, "Unpacking"),
		strings.HasPrefix(l, "Selecting previously unselected"):
		return "unpack", true
	case strings.HasPrefix(l, "Setting up"):
		return "configure", true
	case strings.HasPrefix(l, "Processing triggers"):
		return "triggers", true
	case strings.HasPrefix(l, "I: "):
		// Any other step of mmdebstrap's: setup, hooks, cleanup.
		return "other", true
	}
	return cur, false
}
