package depsolver

import (
	"container/heap"
	"slices"
	"sort"
	"strings"

	rpmversion "github.com/knqyf263/go-rpm-version"
	debversion "pault.ag/go/debian/version"
)

// Mode is how a project's targets react to changes of their dependencies
// (.cb/depsolver.yml, cascade:).
type Mode string

// Cascade modes.
const (
	// ModeTransitive rebuilds on every change of a dependency's published
	// binaries, also when that change was itself caused by a dependency.
	ModeTransitive Mode = "transitive"
	// ModeDirect rebuilds only when a direct dependency changed because of
	// its own sources.
	ModeDirect Mode = "direct"
	// ModeLocal rebuilds only on changes of the target's own sources.
	ModeLocal Mode = "local"
)

// Formats of binaries.
const (
	FormatDeb = "deb"
	FormatRPM = "rpm"
)

// Alternative is one possibility of a need: a name with an optional
// version relation (Op is one of << <= = >= >> or rpm's < <= = >= >).
type Alternative struct {
	Name    string `json:"name"`
	Op      string `json:"op,omitempty"`
	Version string `json:"version,omitempty"`
}

func (a Alternative) String() string {
	if a.Op == "" {
		return a.Name
	}
	return a.Name + " (" + a.Op + " " + a.Version + ")"
}

// Need is one clause a target's build needs: any alternative satisfies it.
type Need struct {
	Alternatives []Alternative `json:"alternatives"`
	// From names the file the need was read from.
	From string `json:"from"`
	// ProjectOnly needs are resolved against the project's targets only: a
	// spec's BuildRequires in a buildroot whose package manager cannot
	// install rpm packages names nothing the base repositories could hold.
	ProjectOnly bool `json:"project_only,omitempty"`
}

func (n Need) String() string {
	s := make([]string, len(n.Alternatives))
	for i, a := range n.Alternatives {
		s[i] = a.String()
	}
	return strings.Join(s, " | ")
}

// Binary is one binary package a target provides.
type Binary struct {
	Name     string   `json:"name"`
	Version  string   `json:"version,omitempty"` // empty while only declared by the sources
	Arch     string   `json:"arch,omitempty"`    // uname -m, or all/noarch
	Provides []string `json:"provides,omitempty"`
	File     string   `json:"file,omitempty"`   // repository-relative file name
	SHA256   string   `json:"sha256,omitempty"` // of the file
	// Content is the digest of the normalised content (file list, modes,
	// file digests, relations; no timestamps).
	Content string `json:"content,omitempty"`
}

// Target is one build target with what its sources say.
type Target struct {
	ID          string `json:"id"` // <project>@<profile>
	Project     string `json:"project"`
	Image       bool   `json:"image,omitempty"`
	Dist        string `json:"dist,omitempty"`      // packages
	Selection   string `json:"selection,omitempty"` // images
	Arch        string `json:"arch"`
	RunnerGroup string `json:"runner_group"`
	Format      string `json:"format,omitempty"` // deb or rpm
	// Repo is the repository path the target publishes into:
	// <project parent>/<dist or selection>.
	Repo string `json:"repo"`
	// Scope are the repository paths whose targets may serve the needs:
	// Repo (unless the project opted out) and the project's extra ones.
	Scope    []string `json:"scope"`
	Needs    []Need   `json:"needs"`
	Declared []Binary `json:"declared,omitempty"`
	Mode     Mode     `json:"mode"`
	// Base identifies the base repositories of the buildroot (see
	// BaseRepo); "" when unknown.
	Base      string     `json:"base,omitempty"`
	BaseRepos []BaseRepo `json:"base_repos,omitempty"`
	// Err is why the target's sources could not be read; such a target
	// has no needs and is not requested.
	Err string `json:"error,omitempty"`
}

// Profile is DIST.ARCH or SELECTION.ARCH.
func (t *Target) Profile() string {
	if t.Image {
		return t.Selection + "." + t.Arch
	}
	return t.Dist + "." + t.Arch
}

// Names is a set of package names and provides.
type Names map[string][]string // name -> versions ("" when unversioned)

// Add records that name is provided, at version v ("" for unversioned).
func (n Names) Add(name, v string) {
	if !slices.Contains(n[name], v) {
		n[name] = append(n[name], v)
	}
}

// Resolution says who serves one need.
type Resolution struct {
	Need      Need     `json:"need"`
	Providers []string `json:"providers,omitempty"` // target ids
	Base      bool     `json:"base,omitempty"`      // a base repository has it
	Unchecked bool     `json:"unchecked,omitempty"` // nothing to check against
	Missing   string   `json:"missing,omitempty"`   // the need text when nobody serves it
}

// Graph is the solved dependency graph of a set of targets.
type Graph struct {
	Targets  []*Target // sorted by id
	index    map[string]int
	Deps     [][]int // direct dependencies, sorted
	Rdeps    [][]int // direct dependents, sorted
	Resolved [][]Resolution
	Comp     []int   // strongly connected component of each target
	Comps    [][]int // members of each component, sorted
	Order    []int   // targets, dependencies first, stable
	rank     []int   // position of each target in Order
}

// Index returns the position of the target with id, or -1.
func (g *Graph) Index(id string) int {
	if i, ok := g.index[id]; ok {
		return i
	}
	return -1
}

// Target returns the target with id, or nil.
func (g *Graph) Target(id string) *Target {
	if i := g.Index(id); i >= 0 {
		return g.Targets[i]
	}
	return nil
}

// InCycle reports whether target i is part of a dependency cycle.
func (g *Graph) InCycle(i int) bool {
	if len(g.Comps[g.Comp[i]]) > 1 {
		return true
	}
	return slices.Contains(g.Deps[i], i)
}

// Missing returns the unresolved need texts of target i.
func (g *Graph) Missing(i int) []string {
	var out []string
	for _, r := range g.Resolved[i] {
		if r.Missing != "" {
			out = append(out, r.Missing)
		}
	}
	return out
}

// Solve builds the graph. published holds the binaries each target has
// published (by target id); bases the names of each base key (see
// Target.Base); a target whose base key is missing from bases has unknown
// base repositories, and its needs that no target serves are not reported
// missing.
func Solve(targets []*Target, published map[string][]Binary, bases map[string]Names) *Graph {
	ts := slices.Clone(targets)
	sort.Slice(ts, func(i, j int) bool { return ts[i].ID < ts[j].ID })
	g := &Graph{Targets: ts, index: make(map[string]int, len(ts))}
	for i, t := range ts {
		g.index[t.ID] = i
	}
	// Who provides what, per repository path.
	type offer struct {
		target  int
		arch    string
		version string
	}
	provides := map[string]map[string][]offer{} // repo -> name -> offers
	add := func(repo, name string, o offer) {
		m := provides[repo]
		if m == nil {
			m = map[string][]offer{}
			provides[repo] = m
		}
		m[name] = append(m[name], o)
	}
	for i, t := range ts {
		if t.Err != "" {
			continue
		}
		bins := published[t.ID]
		seen := map[string]bool{}
		for _, b := range bins {
			seen[b.Name] = true
			add(t.Repo, b.Name, offer{i, b.Arch, b.Version})
			for _, p := range b.Provides {
				name, ver := splitProvide(p)
				add(t.Repo, name, offer{i, b.Arch, ver})
			}
		}
		// Declared binaries not yet published still count: the first build
		// of a project must know its order before anything is published.
		for _, b := range t.Declared {
			if seen[b.Name] {
				continue
			}
			add(t.Repo, b.Name, offer{i, b.Arch, ""})
			for _, p := range b.Provides {
				name, _ := splitProvide(p)
				add(t.Repo, name, offer{i, b.Arch, ""})
			}
		}
	}
	g.Deps = make([][]int, len(ts))
	g.Rdeps = make([][]int, len(ts))
	g.Resolved = make([][]Resolution, len(ts))
	for i, t := range ts {
		base, baseKnown := bases[t.Base]
		for _, n := range t.Needs {
			r := Resolution{Need: n}
			for _, a := range n.Alternatives {
				for _, repo := range t.Scope {
					for _, o := range provides[repo][a.Name] {
						if o.target == i || !archServes(o.arch, ts[o.target].Arch, t.Arch) {
							continue
						}
						if o.version != "" && !satisfies(t.Format, o.version, a) {
							continue
						}
						if id := ts[o.target].ID; !slices.Contains(r.Providers, id) {
							r.Providers = append(r.Providers, id)
						}
					}
				}
				if len(r.Providers) > 0 {
					break
				}
				if !n.ProjectOnly && baseKnown && baseServes(base, t.Format, a) {
					r.Base = true
					break
				}
			}
			switch {
			case len(r.Providers) > 0 || r.Base:
			case n.ProjectOnly || !baseKnown:
				r.Unchecked = true
			default:
				r.Missing = n.String()
			}
			for _, p := range r.Providers {
				j := g.index[p]
				if !slices.Contains(g.Deps[i], j) {
					g.Deps[i] = append(g.Deps[i], j)
				}
			}
			g.Resolved[i] = append(g.Resolved[i], r)
		}
		slices.Sort(g.Deps[i])
	}
	for i, ds := range g.Deps {
		for _, d := range ds {
			g.Rdeps[d] = append(g.Rdeps[d], i)
		}
	}
	for i := range g.Rdeps {
		slices.Sort(g.Rdeps[i])
	}
	g.components()
	g.order()
	return g
}

// archServes reports whether a binary of arch, built by a target for
// providerArch, can be installed for a target of arch want.
func archServes(binArch, providerArch, want string) bool {
	switch binArch {
	case "all", "noarch":
		return true
	case "":
		return providerArch == want
	}
	return binArch == want || binArch == debArch(want) || providerArch == want
}

func debArch(machine string) string {
	switch machine {
	case "x86_64":
		return "amd64"
	case "aarch64":
		return "arm64"
	case "ppc64le":
		return "ppc64el"
	}
	return machine
}

// splitProvide splits "name (= 1.0)" or "name = 1.0" into name and version.
func splitProvide(p string) (string, string) {
	p = strings.TrimSpace(p)
	name, rest, ok := strings.Cut(p, " ")
	if !ok {
		return p, ""
	}
	rest = strings.Trim(strings.TrimSpace(rest), "()")
	f := strings.Fields(rest)
	if len(f) == 2 && f[0] == "=" {
		return name, f[1]
	}
	return name, ""
}

func baseServes(base Names, format string, a Alternative) bool {
	vs, ok := base[a.Name]
	if !ok {
		return false
	}
	if a.Op == "" {
		return true
	}
	for _, v := range vs {
		if v == "" || satisfies(format, v, a) {
			return true
		}
	}
	return false
}

// CompareVersions orders two versions of format (dpkg or rpm order).
func CompareVersions(format, a, b string) int {
	if format == FormatRPM {
		return rpmversion.NewVersion(a).Compare(rpmversion.NewVersion(b))
	}
	va, errA := debversion.Parse(a)
	vb, errB := debversion.Parse(b)
	if errA != nil || errB != nil {
		return strings.Compare(a, b)
	}
	return debversion.Compare(va, vb)
}

// satisfies reports whether version v meets the relation of a.
func satisfies(format, v string, a Alternative) bool {
	if a.Op == "" {
		return true
	}
	c := CompareVersions(format, v, a.Version)
	switch a.Op {
	case "<<", "<":
		return c < 0
	case "<=":
		return c <= 0
	case "=", "==":
		return c == 0
	case ">=":
		return c >= 0
	case ">>", ">":
		return c > 0
	}
	return false
}

// components finds the strongly connected components (Tarjan, iterative
// so deep chains do not grow the stack).
func (g *Graph) components() {
	n := len(g.Targets)
	index := make([]int, n)
	low := make([]int, n)
	onStack := make([]bool, n)
	for i := range index {
		index[i] = -1
	}
	g.Comp = make([]int, n)
	var stack []int
	next := 0
	type frame struct{ v, edge int }
	for root := 0; root < n; root++ {
		if index[root] >= 0 {
			continue
		}
		call := []frame{{root, 0}}
		index[root], low[root] = next, next
		next++
		stack = append(stack, root)
		onStack[root] = true
		for len(call) > 0 {
			f := &call[len(call)-1]
			v := f.v
			if f.edge < len(g.Deps[v]) {
				w := g.Deps[v][f.edge]
				f.edge++
				switch {
				case index[w] < 0:
					index[w], low[w] = next, next
					next++
					stack = append(stack, w)
					onStack[w] = true
					call = append(call, frame{w, 0})
				case onStack[w]:
					low[v] = min(low[v], index[w])
				}
				continue
			}
			if low[v] == index[v] {
				var members []int
				for {
					w := stack[len(stack)-1]
					stack = stack[:len(stack)-1]
					onStack[w] = false
					g.Comp[w] = len(g.Comps)
					members = append(members, w)
					if w == v {
						break
					}
				}
				slices.Sort(members)
				g.Comps = append(g.Comps, members)
			}
			call = call[:len(call)-1]
			if len(call) > 0 {
				u := call[len(call)-1].v
				low[u] = min(low[u], low[v])
			}
		}
	}
}

// order sorts the components topologically, dependencies first; among
// components that are ready at the same time the one whose smallest
// member id sorts first goes first, and members of one component follow
// in id order.
func (g *Graph) order() {
	nc := len(g.Comps)
	pending := make([]int, nc) // dependencies not yet ordered
	dependents := make([][]int, nc)
	for i, ds := range g.Deps {
		ci := g.Comp[i]
		for _, d := range ds {
			cd := g.Comp[d]
			if cd == ci {
				continue
			}
			pending[ci]++
			dependents[cd] = append(dependents[cd], ci)
		}
	}
	h := &compHeap{first: func(c int) int { return g.Comps[c][0] }}
	for c := 0; c < nc; c++ {
		if pending[c] == 0 {
			h.items = append(h.items, c)
		}
	}
	heap.Init(h)
	g.Order = make([]int, 0, len(g.Targets))
	for h.Len() > 0 {
		c := heap.Pop(h).(int)
		g.Order = append(g.Order, g.Comps[c]...)
		for _, d := range dependents[c] {
			pending[d]--
			if pending[d] == 0 {
				heap.Push(h, d)
			}
		}
	}
	g.rank = make([]int, len(g.Targets))
	for pos, i := range g.Order {
		g.rank[i] = pos
	}
}

// compHeap orders ready components by their smallest member (targets are
// sorted by id, so the smallest index is the smallest id).
type compHeap struct {
	items []int
	first func(int) int
}

func (h *compHeap) Len() int           { return len(h.items) }
func (h *compHeap) Less(i, j int) bool { return h.first(h.items[i]) < h.first(h.items[j]) }
func (h *compHeap) Swap(i, j int)      { h.items[i], h.items[j] = h.items[j], h.items[i] }
func (h *compHeap) Push(x any)         { h.items = append(h.items, x.(int)) }
func (h *compHeap) Pop() any {
	x := h.items[len(h.items)-1]
	h.items = h.items[:len(h.items)-1]
	return x
}
