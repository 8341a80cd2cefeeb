package depsolver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/cloud-builder/cb/internal/broker"
	"github.com/cloud-builder/cb/internal/message"
	"github.com/cloud-builder/cb/internal/source"
)

// Config wires one cb-depsolver.
type Config struct {
	Broker broker.Options
	// URL and Branch name the sources repository; Dir is the depsolver's
	// own checkout of it.
	URL, Branch, Dir string
	// CollectorURL is the base URL of the collector's repositories.
	CollectorURL string
	// StateFile keeps the build states and what each target published
	// across restarts; "" = <Dir>.depsolver.json.
	StateFile string
	// Listen is the address of the HTTP API (graph, target state); ""
	// serves none.
	Listen string
	// BaseInterval is the shortest time between two checks of the base
	// repositories' indexes; 0 turns base repository rebuilds off.
	BaseInterval time.Duration
	// RunnerRoot, when the runners' state is on this machine, lets the
	// depsolver read the solver files of finished builds (needed for base
	// repository rebuilds) from disk. Solver files it cannot read there
	// are fetched from the artifact endpoint of the runner that answered
	// (the cb-artifact-url header of its final response).
	RunnerRoot string
	// ArtifactToken is the bearer token for the runners' artifact
	// endpoints; ArtifactClient the HTTP client for them (TLS settings),
	// nil for a plain one. Both as cb-ctl and the web UI use them.
	ArtifactToken  string
	ArtifactClient *http.Client
	// ArtifactAllowPlainHTTP lets ArtifactToken go over plain HTTP to
	// endpoints that are not loopback (allow_plain_http of the runner
	// config section the token came from).
	ArtifactAllowPlainHTTP bool
	// Substitute replaces the mirror placeholder of descriptions.
	Substitute  func([]byte) ([]byte, error)
	PollTimeout time.Duration
	ThisHost    string
	Logger      *slog.Logger
	// Since is where the response reader of a new consumer group starts;
	// zero is the start of Run.
	Since time.Time
	// OnListen is called with the API's address once it listens.
	OnListen func(net.Addr)
}

// Service is cb-depsolver.
type Service struct {
	cfg     Config
	log     *slog.Logger
	pub     *broker.Client
	scanner *Scanner

	mu  sync.Mutex
	eng *Engine
	// byRequest maps the request ids the depsolver follows to targets.
	byRequest map[string]string
	// actions keeps the action of requests that came from cb-fetch.
	actions map[string]string
	// digests of every base repository's index, by base key.
	digests map[string]string
	// finished are request ids whose final response was seen: responses
	// travel over several partitions, so an accepted response may arrive
	// after the final one and must not mark the target building again.
	finished map[string]time.Time
}

// finishedKeep is how long a finished request id is remembered.
const finishedKeep = 24 * time.Hour

// savedState is the state file.
type savedState struct {
	Statuses  map[string]Status    `json:"statuses"`
	ByRequest map[string]string    `json:"by_request"`
	Actions   map[string]string    `json:"actions"`
	Digests   map[string]string    `json:"base_digests"`
	Finished  map[string]time.Time `json:"finished"`
}

// New validates cfg.
func New(cfg Config) (*Service, error) {
	if cfg.URL == "" || cfg.Dir == "" {
		return nil, errors.New("depsolver: the sources repository and a checkout directory are required")
	}
	if err := source.ValidateURL(cfg.URL); err != nil {
		return nil, fmt.Errorf("depsolver: %w", err)
	}
	if cfg.CollectorURL == "" {
		return nil, errors.New("depsolver: the collector URL is required")
	}
	cfg.CollectorURL = strings.TrimRight(cfg.CollectorURL, "/")
	if cfg.StateFile == "" {
		cfg.StateFile = filepath.Clean(cfg.Dir) + ".depsolver.json"
	}
	if cfg.PollTimeout <= 0 {
		cfg.PollTimeout = 2 * time.Second
	}
	if cfg.ThisHost == "" {
		cfg.ThisHost, _ = os.Hostname()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Service{cfg: cfg, log: cfg.Logger, eng: NewEngine(), scanner: &Scanner{Dir: cfg.Dir, Substitute: cfg.Substitute},
		byRequest: map[string]string{}, actions: map[string]string{}, digests: map[string]string{},
		finished: map[string]time.Time{}}, nil
}

// Run serves until ctx ends.
func (s *Service) Run(ctx context.Context) error {
	since := s.cfg.Since
	if since.IsZero() {
		since = time.Now()
	}
	pub, err := broker.New(s.cfg.Broker)
	if err != nil {
		return fmt.Errorf("depsolver: %w", err)
	}
	defer pub.Close()
	s.pub = pub
	if _, err := source.Update(ctx, s.cfg.Dir, s.cfg.URL, s.cfg.Branch, s.log); err != nil {
		return fmt.Errorf("depsolver: %w", err)
	}
	s.load()
	ts, err := s.scanner.All(ctx)
	if err != nil {
		return fmt.Errorf("depsolver: %w", err)
	}
	s.mu.Lock()
	s.eng.SetTargets(nil, ts)
	s.mu.Unlock()
	s.log.Info("dependency graph loaded", "targets", len(ts))

	var wg sync.WaitGroup
	errc := make(chan error, 4)
	run := func(name string, fn func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := fn(ctx); err != nil && ctx.Err() == nil {
				errc <- fmt.Errorf("depsolver %s: %w", name, err)
			}
		}()
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	if s.cfg.Listen != "" {
		run("api", s.serve)
	}
	// The indexes first: what is published is the baseline, and whether a
	// need is resolvable is known only with the base index.
	s.refreshAll(ctx)
	s.checkBases(ctx, true)
	s.mu.Lock()
	s.dispatch(ctx)
	s.mu.Unlock()
	run("requests", s.readRequests)
	run("responses", func(ctx context.Context) error { return s.readResponses(ctx, since) })
	if s.cfg.BaseInterval > 0 {
		run("base", func(ctx context.Context) error {
			t := time.NewTicker(s.cfg.BaseInterval)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return nil
				case <-t.C:
					s.checkBases(ctx, false)
				}
			}
		})
	}
	var first error
	select {
	case <-ctx.Done():
	case first = <-errc:
		cancel(first)
	}
	wg.Wait()
	return first
}

// batchWindow is how long the request reader waits for more requests of
// the same change.
const batchWindow = 300 * time.Millisecond

// readRequests forwards the requests of cb-fetch (and anyone else who
// sends to the depsolver's topic) in dependency order.
func (s *Service) readRequests(ctx context.Context) error {
	cons, err := broker.NewConsumer(s.cfg.Broker, broker.ConsumerConfig{
		Group: "cb-depsolver", Topics: []string{message.TopicDepsolverRequests}, Start: broker.Earliest,
	})
	if err != nil {
		return err
	}
	defer cons.Close()
	return s.poll(ctx, cons, func(recs []broker.Record) {
		// cb-fetch sends the requests of one change within milliseconds:
		// take them as one batch, so a dependency is not requested (and
		// built) before the request of its dependent was even read.
		for {
			pctx, cancel := context.WithTimeout(ctx, batchWindow)
			more, err := cons.Poll(pctx)
			cancel()
			if err != nil || len(more) == 0 {
				break
			}
			recs = append(recs, more...)
		}
		var reqs []*message.BuildRequest
		for _, rec := range recs {
			req, err := message.DecodeBuildRequest(rec.Value)
			if err == nil && rec.Header(broker.HeaderFreshBuildRoot) == "true" {
				req.FreshBuildRoot = true
			}
			if err != nil {
				s.log.Warn("invalid build request", "err", err)
				if id := message.PeekRequestID(rec.Value); id != "" {
					s.respond(ctx, &message.Response{RequestID: id, ResponseCode: message.InvalidRequest,
						Message: "Invalid build request: " + err.Error()}, "(system)")
				}
				continue
			}
			reqs = append(reqs, req)
		}
		if len(reqs) > 0 {
			s.handleRequests(ctx, reqs)
		}
		if err := cons.Ack(ctx, recs...); err != nil && ctx.Err() == nil {
			s.log.Warn("acknowledge requests", "err", err)
		}
	})
}

func (s *Service) poll(ctx context.Context, cons *broker.Consumer, fn func([]broker.Record)) error {
	for {
		pctx, cancel := context.WithTimeout(ctx, s.cfg.PollTimeout)
		recs, err := cons.Poll(pctx)
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, broker.ErrClosed) {
			return err
		}
		if err != nil {
			if !errors.Is(err, context.DeadlineExceeded) {
				s.log.Warn("poll", "err", err)
			}
			continue
		}
		if len(recs) > 0 {
			fn(recs)
		}
	}
}

func (s *Service) handleRequests(ctx context.Context, reqs []*message.BuildRequest) {
	// The request says the sources changed: read them at the new head.
	if _, err := source.Update(ctx, s.cfg.Dir, s.cfg.URL, s.cfg.Branch, s.log); err != nil {
		s.log.Warn("update sources", "err", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	rescanned := map[string]bool{}
	for _, r := range reqs {
		if !rescanned[r.Project] {
			rescanned[r.Project] = true
			ts, err := s.scanner.Project(r.Project)
			if err == nil {
				s.eng.SetTargets([]string{r.Project}, ts)
			}
			for _, t := range ts {
				if t.Base != "" && !s.eng.HasBase(t.Base) {
					s.loadBase(ctx, t.Base, t.BaseRepos)
				}
			}
		}
		id := r.Project + "@" + r.Profile()
		log := s.log.With("request_id", r.RequestID, "target", id)
		if t := s.eng.Target(id); t == nil || t.Err != "" {
			// Not a target the depsolver can place: the runner's
			// validation answers it as it would without a depsolver.
			log.Info("forwarding request of an unknown or unreadable target")
			if err := s.sendRequest(ctx, r); err != nil {
				log.Error("forward request", "err", err)
			}
			continue
		}
		s.actions[r.RequestID] = r.Action
		s.byRequest[r.RequestID] = id
		reason := "source change"
		if r.Action == message.ActionPackageRebuild || r.Action == message.ActionImageRebuild {
			reason = "rebuild requested"
		}
		s.eng.Want(id, r.RequestID, reason, r.FreshBuildRoot)
		log.Info("build wanted", "reason", reason)
	}
	s.dispatch(ctx)
}

// readResponses follows builds, publications and the runners' answers.
func (s *Service) readResponses(ctx context.Context, since time.Time) error {
	cons, err := broker.NewConsumer(s.cfg.Broker, broker.ConsumerConfig{
		Group: "cb-depsolver-responses", Topics: []string{message.TopicResponse}, Start: broker.AtTime(since),
	})
	if err != nil {
		return err
	}
	defer cons.Close()
	return s.poll(ctx, cons, func(recs []broker.Record) {
		for _, rec := range recs {
			r, err := message.DecodeResponse(rec.Value)
			if err != nil || strings.HasPrefix(r.Identity, message.ServiceDepsolver+":") {
				continue
			}
			s.handleResponse(ctx, r, rec.Header(broker.HeaderArtifactURL))
		}
		if err := cons.Ack(ctx, recs...); err != nil && ctx.Err() == nil {
			s.log.Warn("acknowledge responses", "err", err)
		}
	})
}

// handleResponse follows one response; artifactURL is the record's
// cb-artifact-url header ("" when absent).
func (s *Service) handleResponse(ctx context.Context, r *message.Response, artifactURL string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case r.ResponseCode == message.PackageRequestAccepted || r.ResponseCode == message.ImageRequestAccepted:
		if r.Target == nil {
			return
		}
		sel := r.Target.Dist
		if r.ResponseCode == message.ImageRequestAccepted {
			sel = r.Target.Selection
		}
		id := r.Project + "@" + sel + "." + r.Target.Arch
		if _, done := s.finished[r.RequestID]; done || s.eng.Target(id) == nil {
			return
		}
		s.byRequest[r.RequestID] = id
		s.eng.Accepted(id, r.RequestID)
		s.save()
	case r.ResponseCode == message.BinariesPublished:
		for _, id := range s.eng.Targets(r.Project) {
			s.refreshTarget(ctx, id)
		}
		s.dispatch(ctx)
	case message.IsFinal(r.ResponseCode):
		now := time.Now()
		s.finished[r.RequestID] = now
		for k, t := range s.finished {
			if now.Sub(t) > finishedKeep {
				delete(s.finished, k)
			}
		}
		id, ok := s.byRequest[r.RequestID]
		if !ok {
			return
		}
		delete(s.byRequest, r.RequestID)
		delete(s.actions, r.RequestID)
		success := message.IsSuccess(r.ResponseCode)
		var solved map[string]string
		if success {
			s.refreshTarget(ctx, id)
			solverFile := ""
			if r.Package != nil {
				solverFile = r.Package.SolverFile
			} else if r.Image != nil {
				solverFile = r.Image.SolverFile
			}
			solved = s.solved(ctx, id, solverFile, artifactURL)
		}
		s.eng.Finished(id, success, solved)
		s.log.Info("build finished", "target", id, "request_id", r.RequestID, "code", r.ResponseCode)
		s.dispatch(ctx)
	}
}

// refreshTarget reads the repository target id publishes into and
// records its binaries. The caller holds s.mu.
func (s *Service) refreshTarget(ctx context.Context, id string) {
	t := s.eng.Target(id)
	if t == nil || t.Image {
		return
	}
	bins, err := RepoBinaries(ctx, s.cfg.CollectorURL+"/"+t.Repo, t.Format, t.Arch)
	if err != nil {
		if !errors.Is(err, ErrNotPublished) {
			s.log.Warn("read published binaries", "target", id, "err", err)
		}
		return
	}
	s.assign(ctx, []*Target{t}, bins)
}

// refreshAll reads every repository the targets publish into.
func (s *Service) refreshAll(ctx context.Context) {
	s.mu.Lock()
	defer s.mu.Unlock()
	groups := map[[3]string][]*Target{}
	for _, t := range s.eng.targets {
		if t.Image || t.Err != "" {
			continue
		}
		k := [3]string{t.Repo, t.Format, t.Arch}
		groups[k] = append(groups[k], t)
	}
	for k, ts := range groups {
		bins, err := RepoBinaries(ctx, s.cfg.CollectorURL+"/"+k[0], k[1], k[2])
		if err != nil {
			if !errors.Is(err, ErrNotPublished) {
				s.log.Warn("read published binaries", "repository", k[0], "err", err)
			}
			continue
		}
		s.assign(ctx, ts, bins)
	}
	s.save()
}

// assign gives each target the binaries of the repository it declares,
// computes the normalised content of files not seen before, and records
// them. The caller holds s.mu.
func (s *Service) assign(ctx context.Context, ts []*Target, bins []Binary) {
	for _, t := range ts {
		declared := map[string]bool{}
		for _, d := range t.Declared {
			declared[d.Name] = true
		}
		prev := map[string]Binary{}
		for _, b := range s.eng.Status(t.ID).Published {
			prev[b.Name+"/"+b.Arch] = b
		}
		var mine []Binary
		for _, b := range bins {
			if !declared[b.Name] || b.Arch == "src" || b.Arch == "nosrc" || !archServes(b.Arch, t.Arch, t.Arch) {
				continue
			}
			if p, ok := prev[b.Name+"/"+b.Arch]; ok && p.SHA256 == b.SHA256 && p.Content != "" {
				b.Content = p.Content
			} else if b.File != "" {
				u := s.cfg.CollectorURL + "/" + t.Repo + "/" + strings.TrimPrefix(path.Clean("/"+b.File), "/")
				if c, err := DownloadDigest(ctx, u, t.Format); err == nil {
					b.Content = c
				} else {
					s.log.Warn("normalised content not computed, comparing file digests", "file", b.File, "err", err)
				}
			}
			mine = append(mine, b)
		}
		if len(mine) == 0 {
			continue
		}
		sort.Slice(mine, func(i, j int) bool { return mine[i].Name+mine[i].Arch < mine[j].Name+mine[j].Arch })
		if change := s.eng.Published(t.ID, mine); change != "" {
			s.log.Info("published binaries changed", "target", t.ID, "change", change)
		}
	}
}

// readSolved reads name -> version from a solver file below the runner
// root; the path comes from the wire, so anything else is ignored.
func (s *Service) readSolved(p string) map[string]string {
	if s.cfg.RunnerRoot == "" || p == "" || p == message.None || !strings.HasSuffix(p, ".solver.json") {
		return nil
	}
	root, err := filepath.Abs(s.cfg.RunnerRoot)
	if err != nil {
		return nil
	}
	rel, err := filepath.Rel(root, filepath.Clean(p))
	if err != nil || !filepath.IsLocal(rel) {
		return nil
	}
	r, err := os.OpenRoot(root)
	if err != nil {
		return nil
	}
	defer r.Close()
	data, err := readFile(r, rel)
	if err != nil {
		return nil
	}
	out, err := parseSolved(data)
	if err != nil {
		return nil
	}
	return out
}

// loadBase reads the names of one base. The caller holds s.mu.
func (s *Service) loadBase(ctx context.Context, key string, repos []BaseRepo) {
	names, err := BaseNames(ctx, repos)
	if err != nil {
		s.log.Warn("base repositories unreadable, their needs are not checked", "err", err)
		s.eng.BaseFailed(key)
		return
	}
	s.eng.SetBase(key, names)
}

// checkBases reads the base repositories' index digests and, for a base
// that changed, its names; targets whose solved buildroot packages would
// change are rebuilt. initial only records digests and names.
func (s *Service) checkBases(ctx context.Context, initial bool) {
	s.mu.Lock()
	keys := s.eng.BaseKeys()
	s.mu.Unlock()
	for key, repos := range keys {
		var parts []string
		ok := true
		for _, r := range repos {
			d, err := IndexDigest(ctx, r)
			if err != nil {
				s.log.Warn("read base repository index", "url", r.URL, "err", err)
				ok = false
				break
			}
			parts = append(parts, d)
		}
		digest := strings.Join(parts, ",")
		s.mu.Lock()
		old, known := s.digests[key]
		has := s.eng.HasBase(key)
		s.mu.Unlock()
		if ok && known && old == digest && has {
			continue
		}
		names, err := BaseNames(ctx, repos)
		s.mu.Lock()
		if err != nil {
			s.log.Warn("base repositories unreadable, their needs are not checked", "err", err)
			s.eng.BaseFailed(key)
			s.mu.Unlock()
			continue
		}
		s.eng.SetBase(key, names)
		if ok {
			s.digests[key] = digest
		}
		if !initial && known && ok && old != digest {
			s.baseChanged(key, names)
			s.dispatch(ctx)
		}
		s.save()
		s.mu.Unlock()
	}
}

// baseChanged queues the targets of base key whose solved packages have
// another version in the new index. The caller holds s.mu.
func (s *Service) baseChanged(key string, names Names) {
	for id, t := range s.eng.targets {
		if t.Base != key {
			continue
		}
		st := s.eng.Status(id)
		var changes []string
		for name, v := range st.Solved {
			vs, ok := names[strings.SplitN(name, ":", 2)[0]]
			if !ok || len(vs) == 0 || slices.Contains(vs, v) {
				continue
			}
			newest := vs[0]
			for _, x := range vs[1:] {
				if CompareVersions(t.Format, x, newest) > 0 {
					newest = x
				}
			}
			changes = append(changes, fmt.Sprintf("%s %s -> %s", name, v, newest))
		}
		if len(changes) == 0 {
			continue
		}
		sort.Strings(changes)
		s.log.Info("base repository change affects the buildroot", "target", id, "changes", len(changes))
		s.eng.Want(id, "", "rebuild due to base repository change: "+summarize(changes, 5), false)
	}
}

// dispatch sends what the engine decided. The caller holds s.mu.
func (s *Service) dispatch(ctx context.Context) {
	out := s.eng.Dispatch()
	for _, n := range out.Notices {
		t := n.Target
		code := message.PackageBuildBlocked
		if n.State == StateUnresolvable {
			code = message.PackageBuildUnresolvable
		}
		if t.Image {
			code = map[string]string{message.PackageBuildBlocked: message.ImageBuildBlocked,
				message.PackageBuildUnresolvable: message.ImageBuildUnresolvable}[code]
		}
		if n.State == StateUnresolvable {
			delete(s.byRequest, n.RequestID)
			delete(s.actions, n.RequestID)
		}
		s.log.Info("target "+string(n.State), "target", t.ID, "request_id", n.RequestID, "message", n.Message)
		s.respond(ctx, &message.Response{RequestID: n.RequestID, ResponseCode: code, Message: n.Message,
			Project: t.Project, Target: responseTarget(t)}, path.Base(t.Project))
	}
	for _, r := range out.Requests {
		t := r.Target
		action, ok := s.actions[r.RequestID]
		if !ok {
			action = message.ActionPackageRebuild
			if t.Image {
				action = message.ActionImageRebuild
			}
		}
		req := &message.BuildRequest{Action: action, FreshBuildRoot: r.Fresh, Project: t.Project,
			RequestID: r.RequestID, RunnerGroup: t.RunnerGroup, SchemaVersion: message.SchemaVersion}
		if t.Image {
			req.Image = &message.ImageTarget{Arch: t.Arch, Selection: t.Selection}
		} else {
			req.Package = &message.PackageTarget{Arch: t.Arch, Dist: t.Dist}
		}
		if err := s.sendRequest(ctx, req); err != nil {
			s.log.Error("send build request", "target", t.ID, "err", err)
			s.eng.Retry(t.ID)
			continue
		}
		s.byRequest[r.RequestID] = t.ID
		s.log.Info("build requested", "target", t.ID, "request_id", r.RequestID, "reason", r.Reason)
		if r.DependencyChange {
			code := message.PackageRebuildDependencyChange
			if t.Image {
				code = message.ImageRebuildDependencyChange
			}
			s.respond(ctx, &message.Response{RequestID: r.RequestID, ResponseCode: code, Message: r.Reason,
				Project: t.Project, Target: responseTarget(t)}, path.Base(t.Project))
		}
	}
	s.save()
}

func responseTarget(t *Target) *message.Target {
	if t.Image {
		return &message.Target{Arch: t.Arch, Selection: t.Selection}
	}
	return &message.Target{Arch: t.Arch, Dist: t.Dist}
}

// sendRequest sends a build request to its runner group; the fresh
// buildroot extension travels in a record header, as cb-fetch sends it.
func (s *Service) sendRequest(ctx context.Context, r *message.BuildRequest) error {
	b, err := message.Encode(r.WireRequest())
	if err != nil {
		return err
	}
	var headers []broker.Header
	if r.FreshBuildRoot {
		headers = append(headers, broker.Header{Key: broker.HeaderFreshBuildRoot, Value: "true"})
	}
	return s.pub.PublishHeaders(ctx, r.RunnerGroup, b, headers)
}

func (s *Service) send(ctx context.Context, topic string, v any) error {
	b, err := message.Encode(v)
	if err != nil {
		return err
	}
	return s.pub.Publish(ctx, topic, b)
}

func (s *Service) respond(ctx context.Context, r *message.Response, name string) {
	r.Identity = message.Identity(message.ServiceDepsolver, s.cfg.ThisHost, name)
	r.SchemaVersion = message.SchemaVersion
	if err := s.send(ctx, message.TopicResponse, r); err != nil {
		s.log.Warn("send response", "request_id", r.RequestID, "err", err)
	}
}

// load reads the state file; a missing or unreadable one starts empty.
func (s *Service) load() {
	data, err := os.ReadFile(s.cfg.StateFile)
	if err != nil {
		return
	}
	var st savedState
	if err := json.Unmarshal(data, &st); err != nil {
		s.log.Warn("state file unreadable, starting without", "file", s.cfg.StateFile, "err", err)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.eng.Restore(st.Statuses)
	for k, v := range st.ByRequest {
		s.byRequest[k] = v
	}
	for k, v := range st.Actions {
		s.actions[k] = v
	}
	for k, v := range st.Digests {
		s.digests[k] = v
	}
	for k, v := range st.Finished {
		s.finished[k] = v
	}
}

// save writes the state file atomically. The caller holds s.mu.
func (s *Service) save() {
	data, err := json.Marshal(savedState{Statuses: s.eng.Statuses(), ByRequest: s.byRequest, Actions: s.actions, Digests: s.digests, Finished: s.finished})
	if err == nil {
		tmp := s.cfg.StateFile + ".tmp"
		if err = os.WriteFile(tmp, data, 0o644); err == nil {
			err = os.Rename(tmp, s.cfg.StateFile)
		}
	}
	if err != nil {
		s.log.Warn("save state", "err", err)
	}
}
