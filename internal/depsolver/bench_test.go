package depsolver

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"testing"
)

// syntheticTargets makes n targets in layers, like a distribution: a few
// core libraries many packages need (libc-like hubs), mid-level
// libraries, and leaves. Each target needs 2–10 names of lower layers
// (with some alternatives and version relations) plus base packages, and
// declares one library and one -dev package.
func syntheticTargets(n int) ([]*Target, map[string][]Binary, map[string]Names) {
	r := rand.New(rand.NewPCG(1, 2))
	base := Names{}
	// About the size of Debian bookworm main.
	for i := 0; i < 60000; i++ {
		base.Add(fmt.Sprintf("base%d", i), "1.0-1")
	}
	ts := make([]*Target, n)
	pub := map[string][]Binary{}
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("p%04d", i)
		t := &Target{ID: "projects/S/" + name + "@bookworm.x86_64", Project: "projects/S/" + name, Dist: "bookworm",
			Arch: "x86_64", RunnerGroup: "debian", Format: FormatDeb, Repo: "projects/S/bookworm",
			Scope: []string{"projects/S/bookworm"}, Mode: ModeTransitive, Base: "base",
			Declared: []Binary{{Name: "lib" + name}, {Name: "lib" + name + "-dev", Provides: []string{"virtual-" + name}}}}
		for k := 0; k < 4; k++ {
			t.Needs = append(t.Needs, Need{Alternatives: []Alternative{{Name: fmt.Sprintf("base%d", r.IntN(60000))}}})
		}
		if i > 0 {
			deps := 2 + r.IntN(9)
			for k := 0; k < deps; k++ {
				var j int
				switch {
				case i > 20 && r.IntN(3) == 0:
					j = r.IntN(20) // a hub
				default:
					j = r.IntN(i)
				}
				alt := Alternative{Name: fmt.Sprintf("libp%04d-dev", j)}
				if r.IntN(4) == 0 {
					alt.Op, alt.Version = ">=", "1.0"
				}
				need := Need{Alternatives: []Alternative{alt}}
				if r.IntN(5) == 0 {
					need.Alternatives = append(need.Alternatives, Alternative{Name: fmt.Sprintf("base%d", r.IntN(60000))})
				}
				t.Needs = append(t.Needs, need)
			}
		}
		ts[i] = t
		pub[t.ID] = []Binary{
			{Name: "lib" + name, Version: "1.0-1", Arch: "amd64", SHA256: "a" + name},
			{Name: "lib" + name + "-dev", Version: "1.0-1", Arch: "amd64", SHA256: "b" + name, Provides: []string{"virtual-" + name}},
		}
	}
	return ts, pub, map[string]Names{"base": base}
}

// BenchmarkSolve2000 is a full recompute of a 2,000-target graph:
// resolution of every need, components and order. It reports the heap
// the graph holds.
func BenchmarkSolve2000(b *testing.B) {
	ts, pub, bases := syntheticTargets(2000)
	b.ReportAllocs()
	var g *Graph
	for b.Loop() {
		g = Solve(ts, pub, bases)
	}
	b.StopTimer()
	edges := 0
	for _, d := range g.Deps {
		edges += len(d)
	}
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	runtime.KeepAlive(g)
	runtime.KeepAlive(bases)
	b.ReportMetric(float64(ms.HeapInuse)/(1<<20), "heap-MiB")
	b.ReportMetric(float64(edges), "edges")
}

// BenchmarkPublishToRequests2000 is the time from a hub library's
// publication of a new version to the build requests of its direct
// dependents, in a 2,000-target graph where everything else is idle.
func BenchmarkPublishToRequests2000(b *testing.B) {
	ts, pub, bases := syntheticTargets(2000)
	e := NewEngine()
	e.SetTargets(nil, ts)
	for k, v := range bases {
		e.SetBase(k, v)
	}
	for id, bins := range pub {
		e.Published(id, bins)
	}
	hub := ts[0].ID
	e.Dispatch()
	v := 1
	requests := 0
	for b.Loop() {
		b.StopTimer()
		// Reset: everything idle, the hub building.
		for id := range e.status {
			s := e.status[id]
			s.State, s.Again = StateIdle, false
		}
		e.Accepted(hub, "")
		v++
		bins := []Binary{
			{Name: "libp0000", Version: fmt.Sprintf("1.%d-1", v), Arch: "amd64"},
			{Name: "libp0000-dev", Version: fmt.Sprintf("1.%d-1", v), Arch: "amd64", Provides: []string{"virtual-p0000"}},
		}
		b.StartTimer()
		e.Published(hub, bins)
		e.Finished(hub, true, nil)
		out := e.Dispatch()
		requests = len(out.Requests)
	}
	b.StopTimer()
	waiting := 0
	for _, s := range e.status {
		if s.State == StateQueued || s.State == StateBlocked {
			waiting++
		}
	}
	b.ReportMetric(float64(requests), "requests")
	b.ReportMetric(float64(waiting), "blocked")
}
