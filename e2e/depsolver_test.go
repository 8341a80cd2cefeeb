package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloud-builder/cb/internal/broker"
	"github.com/cloud-builder/cb/internal/message"
)

// responseLog keeps every response on cb-response in the order they were
// produced (record timestamps: the topic has several partitions).
type responseLog struct {
	mu  sync.Mutex
	all []*message.Response
	ts  []time.Time
}

func watchInOrder(t *testing.T, brokerAddr string) *responseLog {
	t.Helper()
	c, err := broker.NewConsumer(broker.Options{Brokers: []string{brokerAddr}}, broker.ConsumerConfig{
		Topics: []string{message.TopicResponse}, Start: broker.Earliest,
	})
	if err != nil {
		t.Fatal(err)
	}
	l := &responseLog{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			recs, err := c.Poll(ctx)
			if err != nil {
				continue
			}
			for _, rec := range recs {
				if r, err := message.DecodeResponse(rec.Value); err == nil {
					l.mu.Lock()
					// Insert in timestamp order.
					i := len(l.ts)
					for i > 0 && l.ts[i-1].After(rec.Timestamp) {
						i--
					}
					l.all = append(l.all[:i], append([]*message.Response{r}, l.all[i:]...)...)
					l.ts = append(l.ts[:i], append([]time.Time{rec.Timestamp}, l.ts[i:]...)...)
					l.mu.Unlock()
				}
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done; c.Close() })
	return l
}

// find returns the positions of the responses of project with code.
func (l *responseLog) find(project, code string) []int {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []int
	for i, r := range l.all {
		if r.Project == project && r.ResponseCode == code {
			out = append(out, i)
		}
	}
	return out
}

func (l *responseLog) at(i int) *message.Response {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.all[i]
}

// publishedFor is the position of the collector's publish event of
// request id.
func (l *responseLog) publishedFor(id string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, r := range l.all {
		if r.RequestID == id && r.ResponseCode == message.BinariesPublished {
			return i
		}
	}
	return -1
}

type graphView struct {
	Targets []struct {
		ID           string   `json:"id"`
		State        string   `json:"state"`
		Missing      []string `json:"missing"`
		Dependencies []string `json:"dependencies"`
	} `json:"targets"`
}

func getGraph(t *testing.T, url string) graphView {
	t.Helper()
	var g graphView
	resp, err := http.Get(url + "/api/v1/graph")
	if err != nil {
		return g
	}
	defer resp.Body.Close()
	json.NewDecoder(resp.Body).Decode(&g)
	return g
}

// settled reports whether no target of the graph is queued, blocked or
// building.
func settled(g graphView) bool {
	if len(g.Targets) == 0 {
		return false
	}
	for _, t := range g.Targets {
		switch t.State {
		case "idle", "unresolvable", "failed":
		default:
			return false
		}
	}
	return true
}

const (
	lib    = "projects/Deps/libcbgreet"
	tool   = "projects/Deps/cbgreet-tool"
	plugin = "projects/Deps/cbgreet-plugin"
	needy  = "projects/Deps/cb-needy"
	rlib   = "projects/DepsRPM/greet-rpm"
	rtool  = "projects/DepsRPM/greet-rpm-tool"
	cycA   = "projects/Cycle/cyc-a"
	cycB   = "projects/Cycle/cyc-b"
)

// TestDepsolver runs cb-fetch (through the depsolver), cb-depsolver, the
// collector with publish events and a scheduler on a repository with a
// deb chain (library, tool linking it, plugin of the tool), an rpm chain
// of two, a cycle of two rpm packages and a package needing what nobody
// provides.
func TestDepsolver(t *testing.T) {
	needRoot(t, "mmdebstrap", "dpkg-buildpackage", "rpmbuild", "createrepo_c", "gpg")
	s := newSystemFrom(t, []string{filepath.Join(repoRoot, "e2e", "testdata", "depsolver", "projects")}, []string{"--publish-events"})
	log := watchInOrder(t, s.brokerAddr)
	depsAddr := freePort(t)
	depsURL := "http://" + depsAddr
	start(t, s.env, "cb-depsolver", "--project", "file://"+s.origin, "--branch", "main", "--state-dir", filepath.Join(s.dir, "depsolver"),
		"--listen", depsAddr, "--base-interval", "0", "--runner-root", s.runnerRoot)
	s.startScheduler("--build-limit", "2", "--collector-key-file", filepath.Join(s.repoRoot, "repo.gpg"))
	start(t, s.env, "cb-fetch", "--project", "file://"+s.origin, "--branch", "main", "--update-interval", "2",
		"--via-depsolver")
	// The first poll records the head. Then one commit changes every
	// package's sources (not their .cb/ metadata, which would ask for
	// fresh buildroots): the first build of everything, through the
	// depsolver.
	waitFor(t, time.Minute, "cb-fetch's first poll", func() bool {
		_, err := os.Stat(s.sources + ".fetch-state")
		return err == nil
	})
	for _, p := range []string{lib, tool, plugin, needy, rlib, rtool, cycA, cycB} {
		if err := os.WriteFile(filepath.Join(s.work, p, "NEWS"), []byte("First release.\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	git(t, s.work, "add", "-A")
	git(t, s.work, "commit", "-q", "-m", "first release")
	git(t, s.work, "push", "-q", "origin", "HEAD:main")

	waitSettled := func(what string, timeout time.Duration, cond func() bool) {
		t.Helper()
		waitFor(t, timeout, what, func() bool { return cond() && settled(getGraph(t, depsURL)) })
		// Nothing more follows.
		time.Sleep(8 * time.Second)
		if g := getGraph(t, depsURL); !settled(g) {
			t.Fatalf("%s: not settled: %+v", what, g)
		}
	}
	succeeded := func(p string) int { return len(log.find(p, message.PackageBuildSucceeded)) }
	accepted := func(p string) []int { return log.find(p, message.PackageRequestAccepted) }
	waitSettled("first builds", 20*time.Minute, func() bool {
		return succeeded(plugin) >= 1 && succeeded(rtool) >= 1 && succeeded(cycA) >= 1 && succeeded(cycB) >= 1
	})

	// First build in dependency order, each once.
	for _, p := range []string{lib, tool, plugin, rlib, rtool} {
		if n := len(accepted(p)); n != 1 {
			t.Fatalf("%s accepted %d times in the first build, want 1", p, n)
		}
	}
	for _, pair := range [][2]string{{lib, tool}, {tool, plugin}, {rlib, rtool}} {
		if dep, user := log.find(pair[0], message.PackageBuildSucceeded)[0], accepted(pair[1])[0]; user < dep {
			t.Fatalf("%s was accepted (#%d) before %s succeeded (#%d)", pair[1], user, pair[0], dep)
		}
	}
	if len(log.find(tool, message.PackageBuildBlocked)) == 0 {
		t.Errorf("no blocked response for %s", tool)
	}
	// The unresolvable package never started.
	un := log.find(needy, message.PackageBuildUnresolvable)
	if len(un) != 1 || !strings.Contains(log.at(un[0]).Message, "cb-no-such-package-anywhere") || len(accepted(needy)) != 0 {
		t.Fatalf("unresolvable: responses %v, accepted %v", un, accepted(needy))
	}
	// The cycle: at most two passes of each member.
	for _, p := range []string{cycA, cycB} {
		if n := len(accepted(p)); n < 1 || n > 2 {
			t.Fatalf("cycle member %s built %d times", p, n)
		}
	}

	// The rpm tool built against the rpm library from the project's
	// rpm-md repository (its build copies a file of the library).
	checkRPMSolver(t, s, "1.0-1")

	// A source change of the library (and of the rpm library) rebuilds
	// library, tool and plugin, each once, each after its dependency
	// published.
	before := map[string]int{}
	for _, p := range []string{lib, tool, plugin, rlib, rtool, cycA, cycB} {
		before[p] = len(accepted(p))
	}
	os.WriteFile(filepath.Join(s.work, lib, "cbgreet.h"), []byte("#define CBGREET_VERSION \"1.1\"\n"), 0o644)
	cl, _ := os.ReadFile(filepath.Join(s.work, lib, "debian", "changelog"))
	os.WriteFile(filepath.Join(s.work, lib, "debian", "changelog"), append([]byte("libcbgreet (1.1-1) unstable; urgency=medium\n\n  * New greeting.\n\n -- Cloud Builder <cloud-builder@example.org>  Fri, 27 Nov 2026 12:00:00 +0000\n\n"), cl...), 0o644)
	spec, _ := os.ReadFile(filepath.Join(s.work, rlib, "greet-rpm.spec"))
	os.WriteFile(filepath.Join(s.work, rlib, "greet-rpm.spec"), []byte(strings.Replace(string(spec), "Version:        1.0", "Version:        1.1", 1)), 0o644)
	git(t, s.work, "commit", "-q", "-am", "new library versions")
	git(t, s.work, "push", "-q", "origin", "HEAD:main")
	waitSettled("rebuilds", 15*time.Minute, func() bool {
		return succeeded(plugin) >= 2 && succeeded(rtool) >= 2
	})
	for p, n := range before {
		want := n + 1
		if p == cycA || p == cycB {
			want = n
		}
		if got := len(accepted(p)); got != want {
			t.Fatalf("%s accepted %d times, want %d", p, got, want)
		}
	}
	for _, pair := range [][2]string{{lib, tool}, {tool, plugin}, {rlib, rtool}} {
		depOK := log.find(pair[0], message.PackageBuildSucceeded)[1]
		pub := log.publishedFor(log.at(depOK).RequestID)
		user := accepted(pair[1])[1]
		if pub < 0 || user < pub || user < depOK {
			t.Fatalf("%s rebuilt (#%d) before %s published (#%d) and succeeded (#%d)", pair[1], user, pair[0], pub, depOK)
		}
	}
	dc := log.find(tool, message.PackageRebuildDependencyChange)
	if len(dc) != 1 || log.at(dc[0]).Message != "rebuild due to dependency change: libcbgreet-dev 1.0-1 -> 1.1-1" {
		t.Fatalf("dependency change responses of the tool: %v", dc)
	}
	solver, err := os.ReadFile(s.target(tool) + ".solver.json")
	if err != nil {
		t.Fatal(err)
	}
	var solved struct {
		Packages map[string]struct{ Version string } `json:"packages"`
	}
	if err := json.Unmarshal(solver, &solved); err != nil || solved.Packages["libcbgreet-dev"].Version != "1.1-1" {
		t.Fatalf("tool's solver.json: libcbgreet-dev %+v (%v)", solved.Packages["libcbgreet-dev"], err)
	}

	checkRPMSolver(t, s, "1.1-1")

	// A rebuild of the library with identical output triggers nothing.
	if _, code, progress := s.buildAndWait("Deps", "libcbgreet"); code != 0 {
		t.Fatalf("library rebuild: exit %d\n%s", code, progress)
	}
	time.Sleep(10 * time.Second)
	for _, p := range []string{tool, plugin} {
		if got := len(accepted(p)); got != before[p]+1 {
			t.Fatalf("unchanged library rebuilt %s (%d builds)", p, got)
		}
	}

	// The client shows the graph and why a target does not build.
	env := append(s.env, "CB_DEPSOLVER_URL="+depsURL)
	out, errOut, err := run(t, env, "cb-ctl", "--dependency-graph", "--project-path", "Deps", "--format", "dot")
	if err != nil || !strings.Contains(out, `"projects/Deps/cbgreet-tool@bookworm.x86_64" -> "projects/Deps/libcbgreet@bookworm.x86_64";`) {
		t.Fatalf("dependency graph: %v\n%s%s", err, out, errOut)
	}
	out, errOut, err = run(t, env, "cb-ctl", "--build-dependencies", "cb-needy", "--project-path", "Deps", "--arch", "x86_64", "--dist", "bookworm")
	if err != nil || !strings.Contains(out, `"state": "unresolvable"`) || !strings.Contains(out, "cb-no-such-package-anywhere") {
		t.Fatalf("build dependencies: %v\n%s%s", err, out, errOut)
	}
}

// checkRPMSolver checks that the rpm tool's last buildroot took
// greet-rpm-devel in version from the project's rpm-md repository.
func checkRPMSolver(t *testing.T, s *system, version string) {
	t.Helper()
	data, err := os.ReadFile(s.target(rtool) + ".solver.json")
	if err != nil {
		t.Fatal(err)
	}
	var solved struct {
		Packages map[string]struct{ Version, Arch string } `json:"packages"`
	}
	if err := json.Unmarshal(data, &solved); err != nil {
		t.Fatal(err)
	}
	if got := solved.Packages["greet-rpm-devel"]; got.Version != version || got.Arch != "noarch" {
		t.Fatalf("rpm tool's solver.json: greet-rpm-devel %+v, want %s", got, version)
	}
	prep, _ := os.ReadFile(s.target(rtool) + ".prepare.log")
	if !strings.Contains(string(prep), "project packages for the BuildRequires: greet-rpm-devel="+version) {
		t.Fatalf("rpm tool's prepare log does not show the project package:\n%s", prep)
	}
}
