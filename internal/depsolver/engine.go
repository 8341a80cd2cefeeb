package depsolver

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/google/uuid"
)

// State is where a target stands.
type State string

// Target states.
const (
	StateIdle         State = "idle"         // nothing to build
	StateQueued       State = "queued"       // to be requested
	StateBlocked      State = "blocked"      // to be requested once its blockers published
	StateRequested    State = "requested"    // sent to its runner group
	StateBuilding     State = "building"     // a runner accepted it
	StateFailed       State = "failed"       // its last build failed
	StateUnresolvable State = "unresolvable" // a need nobody provides
)

// active states hold up dependents.
func (s State) active() bool {
	return s == StateQueued || s == StateBlocked || s == StateRequested || s == StateBuilding
}

// Status is the build state of one target.
type Status struct {
	State State `json:"state"`
	// Reason is why the target is (or was last) built.
	Reason    string   `json:"reason,omitempty"`
	Blockers  []string `json:"blockers,omitempty"`
	Missing   []string `json:"missing,omitempty"`
	Note      string   `json:"note,omitempty"` // e.g. about failed dependencies
	RequestID string   `json:"request_id,omitempty"`
	// Fresh asks for a fresh buildroot (metadata change).
	Fresh bool `json:"fresh,omitempty"`
	// Depth is 0 when the wanted build follows the target's own change, 1
	// or more when it follows a dependency's change.
	Depth int `json:"depth"`
	// Again means a change arrived while the target was building: it is
	// queued once more when that build ends.
	Again       bool   `json:"again,omitempty"`
	AgainID     string `json:"again_id,omitempty"`
	AgainReason string `json:"again_reason,omitempty"`
	AgainDepth  int    `json:"again_depth,omitempty"`
	// Passes counts the builds of a cycle member in the current wave.
	Passes    int       `json:"passes,omitempty"`
	Published []Binary  `json:"published,omitempty"`
	Changed   time.Time `json:"changed"`
	// Solved are the base buildroot's packages (name -> version) of the
	// last build, from its solver file.
	Solved map[string]string `json:"solved,omitempty"`
}

// Request is a build the engine wants sent.
type Request struct {
	Target    *Target
	RequestID string
	Reason    string
	Fresh     bool
	// DependencyChange marks rebuilds caused by a dependency (the
	// response says so).
	DependencyChange bool
}

// Notice is a state change worth a response: blocked or unresolvable.
type Notice struct {
	Target    *Target
	RequestID string
	State     State
	Message   string
}

// Output is what one dispatch decided.
type Output struct {
	Requests []Request
	Notices  []Notice
}

// Engine holds the targets, their build states and what they published.
// It is not safe for concurrent use.
type Engine struct {
	targets map[string]*Target
	status  map[string]*Status
	bases   map[string]Names
	// baseFailed are base keys whose index could not be read: their
	// targets are built without checking the base (unresolvable needs
	// then fail in the build, as without a depsolver).
	baseFailed map[string]bool
	graph      *Graph
	dirty      bool
	Now        func() time.Time
	NewID      func() string
}

// NewEngine returns an empty engine.
func NewEngine() *Engine {
	return &Engine{targets: map[string]*Target{}, status: map[string]*Status{}, bases: map[string]Names{},
		baseFailed: map[string]bool{}, dirty: true, Now: time.Now, NewID: uuid.NewString}
}

// Graph returns the current graph, solving it again when something changed.
func (e *Engine) Graph() *Graph {
	if e.dirty || e.graph == nil {
		ts := make([]*Target, 0, len(e.targets))
		for _, t := range e.targets {
			ts = append(ts, t)
		}
		pub := make(map[string][]Binary, len(e.status))
		for id, s := range e.status {
			if len(s.Published) > 0 {
				pub[id] = s.Published
			}
		}
		e.graph = Solve(ts, pub, e.bases)
		e.dirty = false
	}
	return e.graph
}

// Status returns the status of target id (a zero idle status when unknown).
func (e *Engine) Status(id string) Status {
	if s, ok := e.status[id]; ok {
		return *s
	}
	return Status{State: StateIdle}
}

// Statuses returns a copy of every status, for saving.
func (e *Engine) Statuses() map[string]Status {
	out := make(map[string]Status, len(e.status))
	for id, s := range e.status {
		out[id] = *s
	}
	return out
}

// Restore loads saved statuses.
func (e *Engine) Restore(m map[string]Status) {
	for id, s := range m {
		s := s
		e.status[id] = &s
	}
	e.dirty = true
}

func (e *Engine) st(id string) *Status {
	s, ok := e.status[id]
	if !ok {
		s = &Status{State: StateIdle}
		e.status[id] = s
	}
	return s
}

// SetTargets replaces the targets of the projects named in projects (all
// projects when projects is nil) with ts.
func (e *Engine) SetTargets(projects []string, ts []*Target) {
	for id, t := range e.targets {
		if projects == nil || slices.Contains(projects, t.Project) {
			delete(e.targets, id)
		}
	}
	for _, t := range ts {
		e.targets[t.ID] = t
	}
	for id := range e.status {
		if _, ok := e.targets[id]; !ok && projects == nil {
			delete(e.status, id)
		}
	}
	e.dirty = true
}

// Target returns the target with id, or nil.
func (e *Engine) Target(id string) *Target { return e.targets[id] }

// Targets returns every target id of project.
func (e *Engine) Targets(project string) []string {
	var out []string
	for id, t := range e.targets {
		if t.Project == project {
			out = append(out, id)
		}
	}
	sort.Strings(out)
	return out
}

// SetBase records the names the base repositories of key provide.
func (e *Engine) SetBase(key string, names Names) {
	e.bases[key] = names
	delete(e.baseFailed, key)
	e.dirty = true
}

// BaseFailed records that the names of base key cannot be read now.
func (e *Engine) BaseFailed(key string) {
	if _, ok := e.bases[key]; !ok {
		e.baseFailed[key] = true
	}
}

// BaseKeys returns every base key a target uses, with one target's
// repositories for each.
func (e *Engine) BaseKeys() map[string][]BaseRepo {
	out := map[string][]BaseRepo{}
	for _, t := range e.targets {
		if t.Base != "" {
			out[t.Base] = t.BaseRepos
		}
	}
	return out
}

// Retry puts a target whose request could not be sent back in the queue.
func (e *Engine) Retry(id string) {
	if s, ok := e.status[id]; ok && s.State == StateRequested {
		s.State = StateQueued
	}
}

// HasBase reports whether the names of base key are known.
func (e *Engine) HasBase(key string) bool { _, ok := e.bases[key]; return ok }

// Want queues a build of target id because of its own change (a source
// change or an explicit request). requestID may be "" for a new one.
func (e *Engine) Want(id, requestID, reason string, fresh bool) {
	s := e.st(id)
	if s.State == StateRequested || s.State == StateBuilding {
		// The running build may predate the change: build once more when
		// it ends, under this request's id.
		s.Again, s.AgainID, s.AgainReason, s.AgainDepth = true, requestID, reason, 0
		s.Fresh = s.Fresh || fresh
		return
	}
	if requestID == "" {
		requestID = e.NewID()
	}
	s.State, s.Reason, s.RequestID, s.Fresh, s.Depth = StateQueued, reason, requestID, s.Fresh || fresh, 0
	s.Blockers, s.Missing, s.Note = nil, nil, ""
	s.Changed = e.Now()
	e.startWave(id)
}

// startWave resets the pass counters of a cycle when a change from
// outside of it arrives and none of its members is busy.
func (e *Engine) startWave(id string) {
	g := e.Graph()
	i := g.Index(id)
	if i < 0 || !g.InCycle(i) {
		return
	}
	members := g.Comps[g.Comp[i]]
	for _, m := range members {
		if m != i && e.st(g.Targets[m].ID).State.active() {
			return
		}
	}
	for _, m := range members {
		e.st(g.Targets[m].ID).Passes = 0
	}
}

// Accepted records that a runner accepted the build of id.
func (e *Engine) Accepted(id, requestID string) {
	s := e.st(id)
	s.State = StateBuilding
	if requestID != "" {
		s.RequestID = requestID
	}
	s.Changed = e.Now()
}

// Finished records the final response of a build of id. A failure keeps
// the published binaries (the last good ones).
func (e *Engine) Finished(id string, ok bool, solved map[string]string) {
	s := e.st(id)
	if ok {
		s.State = StateIdle
		if solved != nil {
			s.Solved = solved
		}
	} else {
		s.State = StateFailed
	}
	s.Changed = e.Now()
	s.Blockers = nil
	if s.Again {
		s.State, s.RequestID = StateQueued, s.AgainID
		if s.RequestID == "" {
			s.RequestID = e.NewID()
		}
		if s.AgainReason != "" {
			s.Reason, s.Depth = s.AgainReason, s.AgainDepth
		}
		s.Again, s.AgainID, s.AgainReason, s.AgainDepth = false, "", "", 0
	}
}

// Published records the binaries target id has now published and, when
// they differ from the ones known before, queues its dependents. It
// returns the description of the change ("" when unchanged).
func (e *Engine) Published(id string, bins []Binary) string {
	s := e.st(id)
	prev := s.Published
	// A first publication counts as a change when it follows a build this
	// engine saw; otherwise (a restart without state) it is the baseline.
	known := prev != nil || s.State == StateRequested || s.State == StateBuilding
	s.Published = bins
	e.dirty = true
	change := describeChange(e.targetFormat(id), prev, bins)
	if change == "" || !known {
		// Unchanged output stops the cascade. A first sight (no earlier
		// record, e.g. after a restart without state) is the baseline.
		return change
	}
	g := e.Graph()
	i := g.Index(id)
	if i < 0 {
		return change
	}
	reason := "rebuild due to dependency change: " + change
	for _, d := range g.Rdeps[i] {
		dt := g.Targets[d]
		ds := e.st(dt.ID)
		switch dt.Mode {
		case ModeLocal:
			continue
		case ModeDirect:
			if s.Depth > 0 {
				continue
			}
		}
		if g.Comp[d] == g.Comp[i] {
			// A cycle: at most two passes of each member per wave.
			if ds.Passes >= 2 {
				continue
			}
		}
		switch ds.State {
		case StateRequested, StateBuilding:
			if !ds.Again {
				ds.Again, ds.AgainReason, ds.AgainDepth = true, reason, s.Depth+1
			}
			continue
		case StateQueued, StateBlocked:
			if !strings.Contains(ds.Reason, change) {
				ds.Reason += "; " + change
			}
			continue
		}
		ds.State, ds.Reason, ds.RequestID, ds.Depth = StateQueued, reason, e.NewID(), s.Depth+1
		ds.Blockers, ds.Missing, ds.Note = nil, nil, ""
		ds.Changed = e.Now()
	}
	return change
}

func (e *Engine) targetFormat(id string) string {
	if t := e.targets[id]; t != nil {
		return t.Format
	}
	return FormatDeb
}

// describeChange compares two sets of binaries: "libfoo 1.0-1 -> 1.1-1,
// libfoo-dev 1.0-1 -> 1.1-1", or "" when the versions and normalised
// contents are the same.
func describeChange(format string, prev, cur []Binary) string {
	key := func(b Binary) string { return b.Name + "/" + b.Arch }
	old := map[string]Binary{}
	for _, b := range prev {
		old[key(b)] = b
	}
	var parts []string
	seen := map[string]bool{}
	for _, b := range cur {
		k := key(b)
		seen[k] = true
		o, ok := old[k]
		switch {
		case !ok:
			parts = append(parts, fmt.Sprintf("%s (new) -> %s", b.Name, b.Version))
		case o.Version != b.Version:
			parts = append(parts, fmt.Sprintf("%s %s -> %s", b.Name, o.Version, b.Version))
		case sameContent(o, b):
		default:
			parts = append(parts, fmt.Sprintf("%s %s (content changed)", b.Name, b.Version))
		}
	}
	for _, b := range prev {
		if !seen[key(b)] {
			parts = append(parts, fmt.Sprintf("%s %s -> (removed)", b.Name, b.Version))
		}
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}

// sameContent compares normalised contents when both sides have them,
// else the files' digests.
func sameContent(a, b Binary) bool {
	if a.Content != "" && b.Content != "" {
		return a.Content == b.Content
	}
	return a.SHA256 == b.SHA256
}

// Dispatch decides, in dependency order, which queued targets can be
// requested now, and which are blocked or unresolvable.
func (e *Engine) Dispatch() Output {
	g := e.Graph()
	var out Output
	// blockers[i]: active targets target i waits for (direct or through
	// its dependencies), computed in order so dependencies come first.
	blockers := make([][]int, len(g.Targets))
	for _, i := range g.Order {
		t := g.Targets[i]
		s := e.st(t.ID)
		var bl []int
		var failed []string
		for _, d := range g.Deps[i] {
			if g.Comp[d] == g.Comp[i] && g.Targets[d].ID >= t.ID {
				// Cycle members build in id order.
				continue
			}
			ds := e.st(g.Targets[d].ID)
			if ds.State.active() {
				bl = mergeSorted(bl, []int{d})
			}
			if ds.State == StateFailed {
				failed = append(failed, g.Targets[d].ID)
			}
			bl = mergeSorted(bl, blockers[d])
		}
		blockers[i] = bl
		if s.State != StateQueued && s.State != StateBlocked && s.State != StateUnresolvable {
			continue
		}
		if t.Err != "" {
			continue
		}
		if t.Base != "" && !e.HasBase(t.Base) && !e.baseFailed[t.Base] {
			// Whether it is resolvable is not known before the base
			// repositories' index is read.
			s.Note = "waiting for the base repositories' index"
			continue
		}
		if missing := g.Missing(i); len(missing) > 0 {
			if s.State != StateUnresolvable || !slices.Equal(s.Missing, missing) {
				s.State, s.Missing, s.Blockers = StateUnresolvable, missing, nil
				s.Changed = e.Now()
				out.Notices = append(out.Notices, Notice{Target: t, RequestID: s.RequestID, State: StateUnresolvable,
					Message: "unresolvable: nothing provides " + strings.Join(missing, ", ")})
			}
			continue
		}
		s.Missing = nil
		if s.State == StateUnresolvable {
			// Resolvable now; the request that found it unresolvable was
			// answered, so this build gets its own id.
			s.State, s.RequestID = StateQueued, e.NewID()
		}
		if len(failed) > 0 {
			s.Note = "dependency failed, building against its last good binaries: " + strings.Join(failed, ", ")
		} else {
			s.Note = ""
		}
		if len(bl) > 0 {
			names := make([]string, len(bl))
			for k, b := range bl {
				names[k] = g.Targets[b].ID
			}
			if s.State != StateBlocked || !slices.Equal(s.Blockers, names) {
				s.State, s.Blockers = StateBlocked, names
				s.Changed = e.Now()
				out.Notices = append(out.Notices, Notice{Target: t, RequestID: s.RequestID, State: StateBlocked,
					Message: "blocked by " + summarize(names, 10)})
			}
			continue
		}
		if s.RequestID == "" {
			s.RequestID = e.NewID()
		}
		s.State, s.Blockers = StateRequested, nil
		s.Changed = e.Now()
		if g.InCycle(i) {
			s.Passes++
		}
		out.Requests = append(out.Requests, Request{Target: t, RequestID: s.RequestID, Reason: s.Reason,
			Fresh: s.Fresh, DependencyChange: s.Depth > 0})
		s.Fresh = false
	}
	return out
}

func summarize(names []string, n int) string {
	if len(names) <= n {
		return strings.Join(names, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(names[:n], ", "), len(names)-n)
}

// mergeSorted returns the sorted union of two sorted slices. a may be
// reused; b is never modified.
func mergeSorted(a, b []int) []int {
	if len(b) == 0 {
		return a
	}
	if len(a) == 0 {
		return b
	}
	out := make([]int, 0, len(a)+len(b))
	i, j := 0, 0
	for i < len(a) && j < len(b) {
		switch {
		case a[i] < b[j]:
			out = append(out, a[i])
			i++
		case a[i] > b[j]:
			out = append(out, b[j])
			j++
		default:
			out = append(out, a[i])
			i++
			j++
		}
	}
	out = append(out, a[i:]...)
	return append(out, b[j:]...)
}
