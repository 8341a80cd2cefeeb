package depsolver

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

// pkg makes a deb target of projects/T/<name> for bookworm.x86_64 that
// declares the binaries bins and needs the names in needs.
func pkg(name string, bins []string, needs ...string) *Target {
	t := &Target{ID: "projects/T/" + name + "@bookworm.x86_64", Project: "projects/T/" + name, Dist: "bookworm",
		Arch: "x86_64", RunnerGroup: "debian", Format: FormatDeb, Repo: "projects/T/bookworm",
		Scope: []string{"projects/T/bookworm"}, Mode: ModeTransitive, Base: "base"}
	for _, b := range bins {
		t.Declared = append(t.Declared, Binary{Name: b})
	}
	for _, n := range needs {
		var alts []Alternative
		for _, a := range strings.Split(n, "|") {
			f := strings.Fields(strings.NewReplacer("(", "", ")", "").Replace(a))
			alt := Alternative{Name: f[0]}
			if len(f) == 3 {
				alt.Op, alt.Version = f[1], f[2]
			}
			alts = append(alts, alt)
		}
		t.Needs = append(t.Needs, Need{Alternatives: alts, From: "debian/control"})
	}
	return t
}

func id(name string) string { return "projects/T/" + name + "@bookworm.x86_64" }

func newTestEngine(ts ...*Target) *Engine {
	e := NewEngine()
	n := 0
	e.NewID = func() string { n++; return fmt.Sprintf("req-%d", n) }
	e.SetTargets(nil, ts)
	e.SetBase("base", Names{"gcc": {"12.2.0-14"}, "debhelper-compat": {"13"}, "make": {""}})
	return e
}

func requested(out Output) []string {
	var r []string
	for _, q := range out.Requests {
		r = append(r, strings.TrimSuffix(strings.TrimPrefix(q.Target.ID, "projects/T/"), "@bookworm.x86_64"))
	}
	return r
}

// chain is library <- tool <- plugin, plus an unrelated package.
func chain() []*Target {
	return []*Target{
		pkg("plugin", []string{"cbgreet-plugin"}, "cbgreet-tool", "gcc"),
		pkg("libcbgreet", []string{"libcbgreet1", "libcbgreet-dev"}, "gcc", "debhelper-compat (= 13)"),
		pkg("tool", []string{"cbgreet-tool"}, "libcbgreet-dev (>= 1.0) | libfallback-dev", "make"),
		pkg("other", []string{"other"}, "gcc"),
	}
}

// build plays one build of name to the end: accepted, published, finished.
func build(e *Engine, name string, bins ...Binary) string {
	e.Accepted(id(name), "")
	change := e.Published(id(name), bins)
	e.Finished(id(name), true, nil)
	return change
}

func TestGraphOrderAndCycles(t *testing.T) {
	g := Solve(chain(), nil, map[string]Names{"base": {"gcc": nil, "make": nil, "debhelper-compat": {"13"}}})
	var order []string
	for _, i := range g.Order {
		order = append(order, g.Targets[i].ID)
	}
	want := []string{id("libcbgreet"), id("other"), id("tool"), id("plugin")}
	if !slices.Equal(order, want) {
		t.Fatalf("order = %v, want %v", order, want)
	}
	tool := g.Index(id("tool"))
	if deps := g.Deps[tool]; len(deps) != 1 || g.Targets[deps[0]].ID != id("libcbgreet") {
		t.Fatalf("tool deps = %v", deps)
	}
	if g.InCycle(tool) {
		t.Fatal("tool is not in a cycle")
	}
	cyc := Solve([]*Target{pkg("a", []string{"a"}, "b"), pkg("b", []string{"b"}, "a"), pkg("c", []string{"c"}, "a")}, nil, nil)
	if !cyc.InCycle(cyc.Index(id("a"))) || !cyc.InCycle(cyc.Index(id("b"))) || cyc.InCycle(cyc.Index(id("c"))) {
		t.Fatalf("components = %v", cyc.Comps)
	}
	var corder []string
	for _, i := range cyc.Order {
		corder = append(corder, cyc.Targets[i].ID)
	}
	if !slices.Equal(corder, []string{id("a"), id("b"), id("c")}) {
		t.Fatalf("cycle order = %v", corder)
	}
}

func TestVersionRelations(t *testing.T) {
	ts := chain()
	pub := map[string][]Binary{id("libcbgreet"): {{Name: "libcbgreet-dev", Version: "0.9-1", Arch: "amd64"}}}
	bases := map[string]Names{"base": {"gcc": nil, "make": nil, "debhelper-compat": {"13"}}}
	g := Solve(ts, pub, bases)
	if m := g.Missing(g.Index(id("tool"))); !slices.Equal(m, []string{"libcbgreet-dev (>= 1.0) | libfallback-dev"}) {
		t.Fatalf("missing = %v", m)
	}
	pub[id("libcbgreet")][0].Version = "1.0-1"
	g = Solve(ts, pub, bases)
	if m := g.Missing(g.Index(id("tool"))); len(m) != 0 {
		t.Fatalf("missing = %v", m)
	}
	// The alternative from the base serves when the project's is too old.
	pub[id("libcbgreet")][0].Version = "0.9-1"
	bases["base"]["libfallback-dev"] = []string{"2.0-1"}
	g = Solve(ts, pub, bases)
	r := g.Resolved[g.Index(id("tool"))][0]
	if !r.Base || len(r.Providers) != 0 {
		t.Fatalf("resolution = %+v", r)
	}
	if CompareVersions(FormatDeb, "1.0~rc1-1", "1.0-1") >= 0 || CompareVersions(FormatRPM, "1.10-1", "1.9-1") <= 0 {
		t.Fatal("version order")
	}
}

func TestChainFirstBuildAndDependencyChange(t *testing.T) {
	e := newTestEngine(chain()...)
	for _, n := range []string{"plugin", "tool", "libcbgreet", "other"} {
		e.Want(id(n), "", "source change", true)
	}
	out := e.Dispatch()
	if got := requested(out); !slices.Equal(got, []string{"libcbgreet", "other"}) {
		t.Fatalf("first dispatch requested %v", got)
	}
	if s := e.Status(id("tool")); s.State != StateBlocked || !slices.Equal(s.Blockers, []string{id("libcbgreet")}) {
		t.Fatalf("tool status %+v", s)
	}
	if s := e.Status(id("plugin")); s.State != StateBlocked || !slices.Contains(s.Blockers, id("libcbgreet")) {
		t.Fatalf("plugin status %+v", s)
	}
	lib := []Binary{{Name: "libcbgreet1", Version: "1.0-1", Arch: "amd64", SHA256: "a"}, {Name: "libcbgreet-dev", Version: "1.0-1", Arch: "amd64", SHA256: "b"}}
	build(e, "libcbgreet", lib...)
	build(e, "other", Binary{Name: "other", Version: "1", Arch: "amd64"})
	if got := requested(e.Dispatch()); !slices.Equal(got, []string{"tool"}) {
		t.Fatalf("then requested %v", got)
	}
	build(e, "tool", Binary{Name: "cbgreet-tool", Version: "1.0-1", Arch: "amd64", SHA256: "t"})
	if got := requested(e.Dispatch()); !slices.Equal(got, []string{"plugin"}) {
		t.Fatalf("then requested %v", got)
	}
	build(e, "plugin", Binary{Name: "cbgreet-plugin", Version: "1.0-1", Arch: "amd64", SHA256: "p"})
	if out := e.Dispatch(); len(out.Requests) != 0 {
		t.Fatalf("nothing left to build, got %v", requested(out))
	}

	// A source change of the library rebuilds library, tool, plugin, in
	// that order, each once.
	e.Want(id("libcbgreet"), "", "source change", false)
	if got := requested(e.Dispatch()); !slices.Equal(got, []string{"libcbgreet"}) {
		t.Fatalf("requested %v", got)
	}
	lib2 := []Binary{{Name: "libcbgreet1", Version: "1.1-1", Arch: "amd64", SHA256: "c"}, {Name: "libcbgreet-dev", Version: "1.1-1", Arch: "amd64", SHA256: "d"}}
	e.Accepted(id("libcbgreet"), "")
	change := e.Published(id("libcbgreet"), lib2)
	if change != "libcbgreet-dev 1.0-1 -> 1.1-1, libcbgreet1 1.0-1 -> 1.1-1" {
		t.Fatalf("change = %q", change)
	}
	if got := requested(e.Dispatch()); len(got) != 0 {
		t.Fatalf("tool must wait for the library's final response, requested %v", got)
	}
	e.Finished(id("libcbgreet"), true, nil)
	out = e.Dispatch()
	if got := requested(out); !slices.Equal(got, []string{"tool"}) {
		t.Fatalf("requested %v", got)
	}
	if r := out.Requests[0]; !r.DependencyChange || r.Reason != "rebuild due to dependency change: "+change {
		t.Fatalf("request %+v", r)
	}
	if build(e, "tool", Binary{Name: "cbgreet-tool", Version: "1.0-1", Arch: "amd64", SHA256: "t2"}) == "" {
		t.Fatal("tool's content changed")
	}
	if got := requested(e.Dispatch()); !slices.Equal(got, []string{"plugin"}) {
		t.Fatalf("requested %v", got)
	}
	build(e, "plugin", Binary{Name: "cbgreet-plugin", Version: "1.0-1", Arch: "amd64", SHA256: "p"})
	if out := e.Dispatch(); len(out.Requests) != 0 {
		t.Fatalf("requested %v", requested(out))
	}
}

func TestUnchangedOutputStopsCascade(t *testing.T) {
	e := newTestEngine(chain()...)
	lib := []Binary{{Name: "libcbgreet-dev", Version: "1.0-1", Arch: "amd64", SHA256: "a", Content: "x"}}
	e.Published(id("libcbgreet"), lib) // baseline
	e.Want(id("libcbgreet"), "", "rebuild requested", false)
	requested(e.Dispatch())
	// Same version, new file (timestamps) but the same normalised content.
	same := []Binary{{Name: "libcbgreet-dev", Version: "1.0-1", Arch: "amd64", SHA256: "b", Content: "x"}}
	if c := build(e, "libcbgreet", same...); c != "" {
		t.Fatalf("change = %q", c)
	}
	if out := e.Dispatch(); len(out.Requests) != 0 {
		t.Fatalf("requested %v", requested(out))
	}
	// Different content, same version: a change.
	e.Want(id("libcbgreet"), "", "rebuild requested", false)
	e.Dispatch()
	if c := build(e, "libcbgreet", Binary{Name: "libcbgreet-dev", Version: "1.0-1", Arch: "amd64", SHA256: "c", Content: "y"}); c != "libcbgreet-dev 1.0-1 (content changed)" {
		t.Fatalf("change = %q", c)
	}
	if got := requested(e.Dispatch()); !slices.Equal(got, []string{"tool"}) {
		t.Fatalf("requested %v", got)
	}
}

func TestUnresolvableAndFailedDependency(t *testing.T) {
	ts := append(chain(), pkg("needy", []string{"needy"}, "no-such-package", "gcc"))
	e := newTestEngine(ts...)
	e.Want(id("needy"), "fetch-1", "source change", false)
	out := e.Dispatch()
	if len(out.Requests) != 0 || len(out.Notices) != 1 {
		t.Fatalf("out = %+v", out)
	}
	n := out.Notices[0]
	if n.State != StateUnresolvable || n.RequestID != "fetch-1" || !strings.Contains(n.Message, "no-such-package") {
		t.Fatalf("notice = %+v", n)
	}
	if s := e.Status(id("needy")); s.State != StateUnresolvable || !slices.Equal(s.Missing, []string{"no-such-package"}) {
		t.Fatalf("status %+v", s)
	}
	// Nothing new: no repeated notice.
	if out := e.Dispatch(); len(out.Notices) != 0 {
		t.Fatalf("repeated notice %+v", out.Notices)
	}
	// Once the base has it, the wanted build is requested with a new id.
	e.SetBase("base", Names{"gcc": nil, "no-such-package": nil})
	out = e.Dispatch()
	if got := requested(out); !slices.Equal(got, []string{"needy"}) || out.Requests[0].RequestID == "fetch-1" {
		t.Fatalf("requested %+v", out.Requests)
	}

	// A failed library blocks nothing.
	e = newTestEngine(chain()...)
	e.Published(id("libcbgreet"), []Binary{{Name: "libcbgreet-dev", Version: "1.0-1", Arch: "amd64", SHA256: "a"}})
	e.Want(id("libcbgreet"), "", "source change", false)
	e.Want(id("tool"), "", "source change", false)
	if got := requested(e.Dispatch()); !slices.Equal(got, []string{"libcbgreet"}) {
		t.Fatalf("requested %v", got)
	}
	e.Accepted(id("libcbgreet"), "")
	e.Finished(id("libcbgreet"), false, nil)
	out = e.Dispatch()
	if got := requested(out); !slices.Equal(got, []string{"tool"}) {
		t.Fatalf("requested %v", got)
	}
	if s := e.Status(id("tool")); !strings.Contains(s.Note, "last good binaries: "+id("libcbgreet")) {
		t.Fatalf("note %q", s.Note)
	}
}

func TestCycleAtMostTwoPasses(t *testing.T) {
	e := newTestEngine(pkg("a", []string{"a"}, "b"), pkg("b", []string{"b"}, "a"))
	e.Want(id("a"), "", "source change", false)
	e.Want(id("b"), "", "source change", false)
	var builds []string
	v := 0
	for round := 0; round < 10; round++ {
		got := requested(e.Dispatch())
		if len(got) == 0 {
			break
		}
		if len(got) != 1 {
			t.Fatalf("cycle members must build one at a time, got %v", got)
		}
		builds = append(builds, got[0])
		v++
		// Every build changes its output: the worst case.
		build(e, got[0], Binary{Name: got[0], Version: fmt.Sprint(v), Arch: "amd64"})
	}
	if !slices.Equal(builds, []string{"a", "b", "a", "b"}) {
		t.Fatalf("builds = %v, want two passes of each member in id order", builds)
	}
	// A later change starts a new wave with two passes again.
	e.Want(id("b"), "", "source change", false)
	builds = nil
	for round := 0; round < 10; round++ {
		got := requested(e.Dispatch())
		if len(got) == 0 {
			break
		}
		builds = append(builds, got...)
		v++
		build(e, got[0], Binary{Name: got[0], Version: fmt.Sprint(v), Arch: "amd64"})
	}
	if len(builds) > 4 || len(builds) < 2 {
		t.Fatalf("second wave builds = %v", builds)
	}
}

func TestCascadeModes(t *testing.T) {
	for _, tc := range []struct {
		mode       Mode
		wantTool   bool
		wantPlugin bool
	}{
		{ModeTransitive, true, true},
		{ModeDirect, true, false},
		{ModeLocal, false, false},
	} {
		t.Run(string(tc.mode), func(t *testing.T) {
			ts := chain()
			for _, x := range ts {
				x.Mode = tc.mode
			}
			e := newTestEngine(ts...)
			e.Published(id("libcbgreet"), []Binary{{Name: "libcbgreet-dev", Version: "1.0-1", Arch: "amd64"}})
			e.Published(id("tool"), []Binary{{Name: "cbgreet-tool", Version: "1.0-1", Arch: "amd64"}})
			e.Want(id("libcbgreet"), "", "source change", false)
			var all []string
			v := 1
			for round := 0; round < 10; round++ {
				got := requested(e.Dispatch())
				if len(got) == 0 {
					break
				}
				for _, g := range got {
					all = append(all, g)
					v++
					name := map[string]string{"libcbgreet": "libcbgreet-dev", "tool": "cbgreet-tool", "plugin": "cbgreet-plugin"}[g]
					build(e, g, Binary{Name: name, Version: fmt.Sprintf("1.%d-1", v), Arch: "amd64"})
				}
			}
			if slices.Contains(all, "tool") != tc.wantTool || slices.Contains(all, "plugin") != tc.wantPlugin {
				t.Fatalf("builds = %v", all)
			}
		})
	}
}

func TestChangeDuringBuildQueuesAgain(t *testing.T) {
	e := newTestEngine(chain()...)
	e.Published(id("libcbgreet"), []Binary{{Name: "libcbgreet-dev", Version: "1.0-1", Arch: "amd64"}})
	// The tool was requested by someone else and is building.
	e.Accepted(id("tool"), "foreign")
	e.Want(id("libcbgreet"), "", "source change", false)
	if got := requested(e.Dispatch()); !slices.Equal(got, []string{"libcbgreet"}) {
		t.Fatalf("requested %v", got)
	}
	build(e, "libcbgreet", Binary{Name: "libcbgreet-dev", Version: "1.1-1", Arch: "amd64"})
	if got := requested(e.Dispatch()); len(got) != 0 {
		t.Fatalf("tool is building, requested %v", got)
	}
	e.Finished(id("tool"), true, nil)
	if got := requested(e.Dispatch()); !slices.Equal(got, []string{"tool"}) {
		t.Fatalf("requested %v", got)
	}
}
