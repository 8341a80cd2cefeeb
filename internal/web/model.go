package web

import (
	"cmp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cloud-builder/cb/internal/message"
)

// State is what the overview shows for a target.
type State string

// The states of a target, from its newest request's responses.
const (
	Queued       State = "queued"       // requested, no runner took it yet
	Blocked      State = "blocked"      // the depsolver holds it back for other targets
	Building     State = "building"     // a runner accepted it
	Succeeded    State = "succeeded"    // the last build succeeded
	Failed       State = "failed"       // the last build (or its buildroot) failed
	Unresolvable State = "unresolvable" // a build dependency exists nowhere
	Rejected     State = "rejected"     // the request was refused (unknown project, target, arch…)
)

// States in the order the overview's filter offers them.
var States = []State{Queued, Blocked, Building, Succeeded, Failed, Unresolvable, Rejected}

// Limits that bound the model's memory however long the response topic is.
const (
	maxRequests = 50     // timeline entries kept per target
	maxEvents   = 30     // responses kept per request
	maxPending  = 10000  // responses waiting for their request
	changeLog   = 8192   // cell changes kept for live clients
	maxTargets  = 200000 // targets; new ones beyond are ignored
)

// Event is one response in a request's timeline.
type Event struct {
	Time     time.Time `json:"time"`
	Code     string    `json:"response_code"`
	Message  string    `json:"message"`
	Identity string    `json:"identity"`
}

// Request is one build request of a target with its responses.
type Request struct {
	ID          string    `json:"request_id"`
	Action      string    `json:"action,omitempty"`
	RunnerGroup string    `json:"runner_group,omitempty"`
	Time        time.Time `json:"time"`
	Events      []Event   `json:"responses"`
}

// Target is everything the UI knows about one build target.
type Target struct {
	Key         string    `json:"key"` // <project>@<profile>
	Project     string    `json:"project"`
	Profile     string    `json:"profile"`
	Image       bool      `json:"image"`
	RunnerGroup string    `json:"runner_group,omitempty"`
	State       State     `json:"state"`
	Reason      string    `json:"reason,omitempty"` // the message of the response that set State
	Code        string    `json:"response_code,omitempty"`
	Since       time.Time `json:"since"`             // when State began
	Started     time.Time `json:"started,omitzero"`  // accepted by a runner
	Finished    time.Time `json:"finished,omitzero"` // final response
	Runner      string    `json:"runner,omitempty"`  // host of the runner that took the newest request
	RequestID   string    `json:"request_id"`        // the newest request
	Binaries    []string  `json:"binary_packages,omitempty"`
	Requests    []Request `json:"requests"`              // oldest first
	LastResult  *Result   `json:"last_result,omitempty"` // the last finished build, kept while a new one waits
	ErrorLine   string    `json:"error_line,omitempty"`  // the failing line of a failed build's log
	seq         uint64
}

// Result is a finished build.
type Result struct {
	State     State     `json:"state"`
	Code      string    `json:"response_code"`
	Message   string    `json:"message"`
	Time      time.Time `json:"time"`
	Runner    string    `json:"runner,omitempty"`
	RequestID string    `json:"request_id"`
}

// Duration is the build time: accepted to final response, or to now
// while it runs; 0 when it never started.
func (t *Target) Duration(now time.Time) time.Duration {
	if t.Started.IsZero() {
		return 0
	}
	if t.Finished.IsZero() || t.Finished.Before(t.Started) {
		if t.State == Building {
			return now.Sub(t.Started)
		}
		return 0
	}
	return t.Finished.Sub(t.Started)
}

// Cell is the overview's summary of a target: what live updates carry.
type Cell struct {
	Seq         uint64    `json:"seq"`
	Key         string    `json:"key"`
	Project     string    `json:"project"`
	Profile     string    `json:"profile"`
	RunnerGroup string    `json:"runner_group,omitempty"`
	State       State     `json:"state"`
	Reason      string    `json:"reason,omitempty"`
	Since       time.Time `json:"since"`
	Started     time.Time `json:"started,omitzero"`
	Finished    time.Time `json:"finished,omitzero"`
	RequestID   string    `json:"request_id"`
}

func (t *Target) cell() Cell {
	return Cell{Seq: t.seq, Key: t.Key, Project: t.Project, Profile: t.Profile, RunnerGroup: t.RunnerGroup,
		State: t.State, Reason: t.Reason, Since: t.Since, Started: t.Started, Finished: t.Finished, RequestID: t.RequestID}
}

// Runner is one runner as its heartbeats describe it.
type Runner struct {
	Key         string    `json:"key"` // <group>/<host>
	Host        string    `json:"host"`
	Group       string    `json:"runner_group"`
	Identity    string    `json:"identity"`
	ArtifactURL string    `json:"artifact_url,omitempty"`
	BuildLimit  int       `json:"build_limit"`
	Running     []string  `json:"running"`
	Waiting     int       `json:"waiting"`
	QueueLag    int64     `json:"queue_lag"`
	LastSeen    time.Time `json:"last_heartbeat"`
	Interval    float64   `json:"interval"`
	Stopping    bool      `json:"stopping,omitempty"`
	Alive       bool      `json:"alive"` // a heartbeat within three intervals, and not stopping
}

func (r *Runner) alive(now time.Time) bool {
	return !r.Stopping && now.Sub(r.LastSeen) <= time.Duration(3*r.Interval*float64(time.Second))
}

// Model folds requests, responses and heartbeats into the state of every
// target. It is safe for concurrent use; readers get copies.
type Model struct {
	now func() time.Time

	mu        sync.RWMutex
	targets   map[string]*Target
	byRequest map[string]string              // request id -> target key
	pending   map[string][]*message.Response // responses that came before their request
	pendingN  int
	runners   map[string]*Runner
	seq       uint64
	changes   []Cell // ring of the last changeLog cell changes
	waiters   map[chan struct{}]struct{}
	records   uint64 // messages folded, for the benchmark and /api/v1
}

// NewModel returns an empty model.
func NewModel() *Model {
	return &Model{now: time.Now, targets: map[string]*Target{}, byRequest: map[string]string{},
		pending: map[string][]*message.Response{}, runners: map[string]*Runner{},
		changes: make([]Cell, 0, changeLog), waiters: map[chan struct{}]struct{}{}}
}

// Key is a target's key: <project>@<profile>.
func Key(project, profile string) string { return project + "@" + profile }

// ApplyRequest folds in a build request seen on a runner group topic.
func (m *Model) ApplyRequest(req *message.BuildRequest, at time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.records++
	key := Key(req.Project, req.Profile())
	t := m.target(key, req.Project, req.Profile())
	if t == nil {
		return
	}
	t.Image = req.IsImage()
	t.RunnerGroup = req.RunnerGroup
	if _, known := m.byRequest[req.RequestID]; known {
		// Responses arrived first (they travel on another topic): fill
		// in what only the request says.
		if r := t.request(req.RequestID); r != nil {
			r.Action, r.RunnerGroup = req.Action, req.RunnerGroup
			if at.Before(r.Time) {
				r.Time = at
			}
		}
		m.changed(t)
		return
	}
	m.byRequest[req.RequestID] = key
	t.addRequest(Request{ID: req.RequestID, Action: req.Action, RunnerGroup: req.RunnerGroup, Time: at})
	if !at.Before(t.Since) || t.RequestID == "" {
		t.RequestID = req.RequestID
		t.setState(Queued, "", "", at)
		t.Started, t.Finished, t.ErrorLine = time.Time{}, time.Time{}, ""
	}
	m.changed(t)
	if ps := m.pending[req.RequestID]; ps != nil {
		delete(m.pending, req.RequestID)
		m.pendingN -= len(ps)
		for _, p := range ps {
			m.applyResponse(p, at)
		}
	}
}

// ApplyResponse folds in a response from cb-response.
func (m *Model) ApplyResponse(resp *message.Response, at time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.records++
	m.applyResponse(resp, at)
}

func (m *Model) applyResponse(resp *message.Response, at time.Time) {
	key, ok := m.byRequest[resp.RequestID]
	if !ok {
		if resp.Target == nil || message.ValidateProject(resp.Project) != nil {
			// Prepare and build responses name no target: keep them
			// until their request (or the accepted response) arrives.
			if resp.RequestID != "" && m.pendingN < maxPending {
				m.pending[resp.RequestID] = append(m.pending[resp.RequestID], resp)
				m.pendingN++
			}
			return
		}
		profile := resp.Target.Dist
		if profile == "" {
			profile = resp.Target.Selection
		}
		profile += "." + resp.Target.Arch
		key = Key(resp.Project, profile)
		t := m.target(key, resp.Project, profile)
		if t == nil {
			return
		}
		t.Image = resp.Target.Selection != ""
		m.byRequest[resp.RequestID] = key
		t.addRequest(Request{ID: resp.RequestID, Time: at})
		if !at.Before(t.Since) || t.RequestID == "" {
			t.RequestID = resp.RequestID
			t.setState(Queued, "", "", at)
			t.Started, t.Finished, t.ErrorLine = time.Time{}, time.Time{}, ""
		}
		if ps := m.pending[resp.RequestID]; ps != nil {
			defer func() {
				delete(m.pending, resp.RequestID)
				m.pendingN -= len(ps)
				for _, p := range ps {
					m.applyResponse(p, at)
				}
			}()
		}
	}
	t := m.targets[key]
	if r := t.request(resp.RequestID); r != nil && len(r.Events) < maxEvents {
		r.Events = append(r.Events, Event{Time: at, Code: resp.ResponseCode, Message: resp.Message, Identity: resp.Identity})
	}
	if resp.RequestID != t.RequestID {
		// An older request's late answer (e.g. the failure of a build
		// that was reset): it belongs in the timeline, not the state.
		m.changed(t)
		return
	}
	state, ok := stateOf(resp.ResponseCode)
	if !ok {
		m.changed(t)
		return
	}
	switch state {
	case Building:
		if t.Started.IsZero() {
			t.Started = at
		}
		if host := identityHost(resp.Identity); host != "" && strings.HasPrefix(resp.Identity, message.ServiceScheduler+":") {
			t.Runner = host
		}
		if t.State == Building {
			// A later step (buildroot ready) of the same build: the
			// state and its age stay, the reason is the newest step.
			t.Code, t.Reason = resp.ResponseCode, resp.Message
			m.changed(t)
			return
		}
	case Succeeded, Failed:
		t.Finished = at
		if resp.Package != nil {
			t.Binaries = resp.Package.BinaryPackages
		} else if resp.Image != nil {
			t.Binaries = resp.Image.BinaryPackages
		}
		if t.Runner == "" {
			t.Runner = identityHost(resp.Identity)
		}
		t.LastResult = &Result{State: state, Code: resp.ResponseCode, Message: resp.Message, Time: at, Runner: t.Runner, RequestID: resp.RequestID}
	case Rejected, Unresolvable:
		t.Finished = at
	}
	t.setState(state, resp.ResponseCode, resp.Message, at)
	m.changed(t)
}

// stateOf maps a response code to the state it puts its target in; false
// for codes that do not change the state (request echoes, resets).
func stateOf(code string) (State, bool) {
	switch {
	case strings.Contains(code, "unresolvable"):
		return Unresolvable, true
	case strings.Contains(code, "blocked"):
		return Blocked, true
	}
	switch code {
	case message.PackageRequestAccepted, message.ImageRequestAccepted, message.BuildRootSetupSucceeded:
		return Building, true
	case message.PackageBuildSucceeded, message.ImageBuildSucceeded:
		return Succeeded, true
	case message.PackageBuildFailed, message.PackageBuildFailedNoBinaries, message.PackageBinariesSyncFailed,
		message.ImageBuildFailed, message.ImageBinariesSyncFailed, message.BuildRootSetupFailed:
		return Failed, true
	case message.ProjectDoesNotExist, message.ProjectMetadataDoesNotExist, message.InvalidPackageMetadata,
		message.PackageTargetNotConfigured, message.ImageTargetNotConfigured, message.IncompatibleBuildArch,
		message.InvalidRequest:
		return Rejected, true
	}
	return "", false
}

// identityHost is HOST of SERVICE:HOST:PID:NAME.
func identityHost(id string) string {
	parts := strings.SplitN(id, ":", 4)
	if len(parts) < 3 {
		return ""
	}
	return parts[1]
}

// ApplyHeartbeat folds in a runner heartbeat.
func (m *Model) ApplyHeartbeat(h *message.Heartbeat, at time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.records++
	key := h.RunnerGroup + "/" + h.SourceIP
	r := m.runners[key]
	if r == nil {
		if len(m.runners) >= 10000 {
			return
		}
		r = &Runner{Key: key}
		m.runners[key] = r
	}
	if at.Before(r.LastSeen) {
		return
	}
	*r = Runner{Key: key, Host: h.SourceIP, Group: h.RunnerGroup, Identity: h.Identity, ArtifactURL: h.ArtifactURL,
		BuildLimit: h.BuildLimit, Running: h.Running, Waiting: h.Waiting, QueueLag: h.QueueLag, LastSeen: at,
		Interval: h.Interval, Stopping: h.Stopping}
	m.notify()
}

// SetErrorLine records the failing log line of target key's current
// request, found after the fact in its build log.
func (m *Model) SetErrorLine(key, requestID, line string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if t := m.targets[key]; t != nil && t.RequestID == requestID && t.ErrorLine != line {
		t.ErrorLine = line
		m.changed(t)
	}
}

func (m *Model) target(key, project, profile string) *Target {
	if t := m.targets[key]; t != nil {
		return t
	}
	if len(m.targets) >= maxTargets {
		return nil
	}
	t := &Target{Key: key, Project: project, Profile: profile}
	m.targets[key] = t
	return t
}

func (t *Target) request(id string) *Request {
	for i := len(t.Requests) - 1; i >= 0; i-- {
		if t.Requests[i].ID == id {
			return &t.Requests[i]
		}
	}
	return nil
}

func (t *Target) addRequest(r Request) {
	if len(t.Requests) >= maxRequests {
		t.Requests = slices.Delete(t.Requests, 0, len(t.Requests)-maxRequests+1)
	}
	t.Requests = append(t.Requests, r)
}

func (t *Target) setState(s State, code, reason string, at time.Time) {
	if t.State != s || t.Since.IsZero() {
		t.Since = at
	}
	t.State, t.Code, t.Reason = s, code, reason
}

// changed records a change of t for live clients and wakes them.
func (m *Model) changed(t *Target) {
	m.seq++
	t.seq = m.seq
	if len(m.changes) < changeLog {
		m.changes = append(m.changes, t.cell())
	} else {
		m.changes[int((m.seq-1)%changeLog)] = t.cell()
	}
	m.notify()
}

func (m *Model) notify() {
	for w := range m.waiters {
		select {
		case w <- struct{}{}:
		default:
		}
	}
}

// Subscribe returns a channel that receives a value (coalesced) whenever
// the model changes, and a function that ends the subscription.
func (m *Model) Subscribe() (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	m.mu.Lock()
	m.waiters[ch] = struct{}{}
	m.mu.Unlock()
	return ch, func() {
		m.mu.Lock()
		delete(m.waiters, ch)
		m.mu.Unlock()
	}
}

// Seq is the number of the newest change.
func (m *Model) Seq() uint64 {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.seq
}

// ChangesSince returns every cell change after seq, in order, each
// intermediate state included. When the change log no longer reaches back
// to seq, it returns the current cell of every target changed since
// instead (intermediate states are then lost, the end state is not).
func (m *Model) ChangesSince(seq uint64) []Cell {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if seq >= m.seq {
		return nil
	}
	oldest := uint64(1)
	if m.seq > changeLog {
		oldest = m.seq - changeLog + 1
	}
	if seq+1 >= oldest {
		out := make([]Cell, 0, m.seq-seq)
		for s := seq + 1; s <= m.seq; s++ {
			out = append(out, m.changes[int((s-1)%changeLog)])
		}
		return out
	}
	var out []Cell
	for _, t := range m.targets {
		if t.seq > seq {
			out = append(out, t.cell())
		}
	}
	slices.SortFunc(out, func(a, b Cell) int { return cmp.Compare(a.Seq, b.Seq) })
	return out
}

// Target returns a copy of the target with key.
func (m *Model) Target(key string) (*Target, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	t, ok := m.targets[key]
	if !ok {
		return nil, false
	}
	c := *t
	c.Requests = make([]Request, len(t.Requests))
	for i, r := range t.Requests {
		r.Events = slices.Clone(r.Events)
		c.Requests[i] = r
	}
	c.Binaries = slices.Clone(t.Binaries)
	if t.LastResult != nil {
		lr := *t.LastResult
		c.LastResult = &lr
	}
	return &c, true
}

// Cells returns the cells of every target that passes keep, sorted by
// project and profile.
func (m *Model) Cells(keep func(*Cell) bool) []Cell {
	m.mu.RLock()
	out := make([]Cell, 0, len(m.targets))
	for _, t := range m.targets {
		c := t.cell()
		if keep == nil || keep(&c) {
			out = append(out, c)
		}
	}
	m.mu.RUnlock()
	slices.SortFunc(out, func(a, b Cell) int {
		return cmp.Or(strings.Compare(a.Project, b.Project), strings.Compare(a.Profile, b.Profile))
	})
	return out
}

// Runners returns every runner seen, sorted by group and host.
func (m *Model) Runners() []Runner {
	now := m.now()
	m.mu.RLock()
	out := make([]Runner, 0, len(m.runners))
	for _, r := range m.runners {
		c := *r
		c.Running = slices.Clone(r.Running)
		c.Alive = r.alive(now)
		out = append(out, c)
	}
	m.mu.RUnlock()
	slices.SortFunc(out, func(a, b Runner) int {
		return cmp.Or(strings.Compare(a.Group, b.Group), strings.Compare(a.Host, b.Host))
	})
	return out
}

// Records is the number of messages folded in so far.
func (m *Model) Records() uint64 {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.records
}

// ArtifactURL is the artifact endpoint of the runner that built (or
// builds) t, from the newest heartbeat of that host; "" when unknown.
func (m *Model) ArtifactURL(t *Target) string {
	host := t.Runner
	if host == "" && t.LastResult != nil {
		host = t.LastResult.Runner
	}
	if host == "" {
		return ""
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	if r := m.runners[t.RunnerGroup+"/"+host]; r != nil && r.ArtifactURL != "" {
		return r.ArtifactURL
	}
	var best *Runner
	for _, r := range m.runners {
		if r.Host == host && r.ArtifactURL != "" && (best == nil || r.LastSeen.After(best.LastSeen)) {
			best = r
		}
	}
	if best == nil {
		return ""
	}
	return best.ArtifactURL
}

// Waiting explains why a queued or blocked target does not build: its
// position in its group's queue, runners missing or full, or what blocks
// it. Empty for other states.
func (m *Model) Waiting(t *Target) []string {
	switch t.State {
	case Blocked:
		return []string{"blocked: " + t.Reason}
	case Queued:
	default:
		return nil
	}
	now := m.now()
	m.mu.RLock()
	defer m.mu.RUnlock()
	var out []string
	pos, total := 1, 0
	for _, o := range m.targets {
		if o.State != Queued || o.RunnerGroup != t.RunnerGroup {
			continue
		}
		total++
		if o.Since.Before(t.Since) || o.Since.Equal(t.Since) && o.Key < t.Key {
			pos++
		}
	}
	group := t.RunnerGroup
	if group == "" {
		group = "(unknown)"
	}
	out = append(out, "queue position "+strconv.Itoa(pos)+" of "+strconv.Itoa(total)+" in runner group "+group)
	var alive, full int
	var lag int64 = -1
	for _, r := range m.runners {
		if r.Group != t.RunnerGroup || !r.alive(now) {
			continue
		}
		alive++
		if r.BuildLimit > 0 && len(r.Running)+r.Waiting >= r.BuildLimit {
			full++
		}
		lag = max(lag, r.QueueLag)
	}
	switch {
	case alive == 0:
		out = append(out, "no runner in runner group "+group+" sent a heartbeat recently")
	case full == alive:
		out = append(out, "build limit reached on every runner of group "+group+" ("+strconv.Itoa(alive)+" runners)")
	default:
		out = append(out, strconv.Itoa(alive-full)+" of "+strconv.Itoa(alive)+" runners of group "+group+" have free build slots")
	}
	if lag >= 0 {
		out = append(out, "queue lag of the group: "+strconv.Itoa(int(lag))+" requests")
	}
	return out
}
