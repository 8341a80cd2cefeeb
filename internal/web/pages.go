package web

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/cloud-builder/cb/internal/artifact"
	"github.com/cloud-builder/cb/internal/bearer"
	"github.com/cloud-builder/cb/internal/collect"
	"github.com/cloud-builder/cb/internal/message"
	"github.com/cloud-builder/cb/internal/target"
)

// Filter is the overview's selection; it lives in the URL's query.
type Filter struct {
	Project string `json:"project,omitempty"` // substring of the project path
	State   string `json:"state,omitempty"`
	Group   string `json:"group,omitempty"`
	Text    string `json:"q,omitempty"` // substring of project, profile or reason
	PerPage int    `json:"per_page"`
}

const defaultPerPage = 500

func filterOf(q url.Values) Filter {
	f := Filter{Project: q.Get("project"), State: q.Get("state"), Group: q.Get("group"), Text: q.Get("q"), PerPage: defaultPerPage}
	if n, err := strconv.Atoi(q.Get("per_page")); err == nil && n > 0 {
		f.PerPage = min(n, 10000)
	}
	return f
}

func (f Filter) keep(c *Cell) bool {
	if f.State != "" && string(c.State) != f.State {
		return false
	}
	if f.Group != "" && c.RunnerGroup != f.Group {
		return false
	}
	if f.Project != "" && !strings.Contains(c.Project, f.Project) {
		return false
	}
	if f.Text != "" {
		t := strings.ToLower(f.Text)
		if !strings.Contains(strings.ToLower(c.Project), t) && !strings.Contains(strings.ToLower(c.Profile), t) &&
			!strings.Contains(strings.ToLower(c.Reason), t) {
			return false
		}
	}
	return true
}

func (f Filter) query(page int) string {
	v := url.Values{}
	for k, s := range map[string]string{"project": f.Project, "state": f.State, "group": f.Group, "q": f.Text} {
		if s != "" {
			v.Set(k, s)
		}
	}
	if f.PerPage != defaultPerPage {
		v.Set("per_page", strconv.Itoa(f.PerPage))
	}
	if page > 1 {
		v.Set("page", strconv.Itoa(page))
	}
	if len(v) == 0 {
		return "?"
	}
	return "?" + v.Encode()
}

// Row is one package or image of the matrix: its cells by column.
type Row struct {
	Project string  `json:"project"`
	Cells   []*Cell `json:"cells"` // aligned with Overview.Columns; nil where the target does not exist
}

// Overview is the data of the overview page and of /api/v1/targets.
type Overview struct {
	Filter  Filter        `json:"filter"`
	Page    int           `json:"page"`
	Pages   int           `json:"pages"`
	Rows    int           `json:"rows"`    // packages and images that match
	Targets int           `json:"targets"` // targets that match
	Counts  map[State]int `json:"counts"`  // matching targets per state
	Columns []string      `json:"columns"`
	Matrix  []Row         `json:"matrix"`
	Seq     uint64        `json:"seq"` // live updates continue after this change
	Groups  []string      `json:"-"`
	States  []State       `json:"-"`
	Now     time.Time     `json:"-"`
}

// BuildOverview selects, groups and pages the targets.
func (m *Model) BuildOverview(f Filter, page int) *Overview {
	seq := m.Seq()
	all := m.Cells(nil)
	o := &Overview{Filter: f, Counts: map[State]int{}, States: States, Now: m.now(), Seq: seq}
	groups := map[string]bool{}
	var cells []Cell
	for i := range all {
		if all[i].RunnerGroup != "" {
			groups[all[i].RunnerGroup] = true
		}
		if f.keep(&all[i]) {
			cells = append(cells, all[i])
		}
	}
	for g := range groups {
		o.Groups = append(o.Groups, g)
	}
	slices.Sort(o.Groups)
	// Rows in project order (cells are sorted by project, profile).
	var projects []string
	var starts []int // index of each project's first cell
	for i := range cells {
		o.Counts[cells[i].State]++
		if len(projects) == 0 || projects[len(projects)-1] != cells[i].Project {
			projects = append(projects, cells[i].Project)
			starts = append(starts, i)
		}
	}
	starts = append(starts, len(cells))
	o.Targets, o.Rows = len(cells), len(projects)
	o.Pages = max(1, (len(projects)+f.PerPage-1)/f.PerPage)
	o.Page = min(max(page, 1), o.Pages)
	lo, hi := (o.Page-1)*f.PerPage, min(o.Page*f.PerPage, len(projects))
	if lo >= hi {
		o.Columns, o.Matrix = []string{}, []Row{}
		return o
	}
	page_ := cells[starts[lo]:starts[hi]]
	cols := map[string]int{}
	for i := range page_ {
		cols[page_[i].Profile] = 0
	}
	for c := range cols {
		o.Columns = append(o.Columns, c)
	}
	slices.Sort(o.Columns)
	for i, c := range o.Columns {
		cols[c] = i
	}
	for i := range page_ {
		c := &page_[i]
		if len(o.Matrix) == 0 || o.Matrix[len(o.Matrix)-1].Project != c.Project {
			o.Matrix = append(o.Matrix, Row{Project: c.Project, Cells: make([]*Cell, len(o.Columns))})
		}
		o.Matrix[len(o.Matrix)-1].Cells[cols[c.Profile]] = c
	}
	return o
}

func (s *Server) overview(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	page, _ := strconv.Atoi(q.Get("page"))
	o := s.m.BuildOverview(filterOf(q), page)
	if isAPI(r) {
		writeJSON(w, http.StatusOK, o)
		return
	}
	s.render(w, r, "overview", o)
}

// TargetView is the data of a target page and of /api/v1/targets/<key>.
type TargetView struct {
	*Target
	Waiting      []string        `json:"waiting,omitempty"`
	ArtifactURL  string          `json:"artifact_url,omitempty"` // the runner's endpoint for this target
	Files        []artifact.File `json:"files,omitempty"`
	Packages     []SolvedPackage `json:"buildroot_packages,omitempty"`
	ArtifactNote string          `json:"artifact_error,omitempty"`
	Final        bool            `json:"final"`
	Seq          uint64          `json:"seq"` // live updates continue after this change
	Now          time.Time       `json:"-"`
	Rebuild      bool            `json:"-"`
}

// SolvedPackage is one package of a buildroot's solver file.
type SolvedPackage struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	Arch    string `json:"arch"`
}

func (s *Server) targetPage(w http.ResponseWriter, r *http.Request) {
	key := r.PathValue("key")
	if _, _, err := parseKey(key); err != nil {
		http.Error(w, "target: "+err.Error(), http.StatusNotFound)
		return
	}
	t, ok := s.m.Target(key)
	if !ok {
		if isAPI(r) {
			writeJSON(w, http.StatusNotFound, map[string]string{"error": "unknown target " + key})
			return
		}
		http.Error(w, "unknown target "+key, http.StatusNotFound)
		return
	}
	v := &TargetView{Target: t, Seq: s.m.Seq(), Waiting: s.m.Waiting(t), Now: s.m.now(), Rebuild: s.cfg.Publisher != nil,
		Final: t.State != Queued && t.State != Building && t.State != Blocked}
	base := s.m.ArtifactURL(t)
	if base != "" {
		tg, err := targetOf(key)
		if err == nil {
			v.ArtifactURL = artifact.TargetURL(base, tg)
		}
	}
	if v.ArtifactURL != "" && t.LastResult != nil {
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		var l artifact.Listing
		if err := s.fetchJSON(ctx, v.ArtifactURL+artifact.Binaries, &l); err == nil {
			v.Files = l.Files
		} else {
			v.ArtifactNote = err.Error()
		}
		if r.URL.Query().Get("fragment") == "" {
			v.Packages, _ = s.solved(ctx, v.ArtifactURL+artifact.SolverFile)
		}
		if t.State == Failed && t.ErrorLine == "" {
			name := artifact.BuildLog
			if t.Code == message.BuildRootSetupFailed {
				name = artifact.PrepareLog
			}
			if line := s.errorLine(ctx, v.ArtifactURL+name); line != "" {
				s.m.SetErrorLine(key, t.RequestID, line)
				v.ErrorLine = line
			}
		}
	}
	if isAPI(r) {
		writeJSON(w, http.StatusOK, v)
		return
	}
	s.render(w, r, "target", v)
}

func targetOf(key string) (target.Target, error) {
	project, profile, err := parseKey(key)
	if err != nil {
		return target.Target{}, err
	}
	i := strings.LastIndexByte(profile, '.')
	return target.New("", project, profile[:i], profile[i+1:])
}

func (s *Server) get(ctx context.Context, u string, hdr http.Header) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if s.cfg.ArtifactToken != "" {
		if err := bearer.Check(u, s.cfg.ArtifactAllowPlainHTTP, "cbctl.artifacts.allow_plain_http"); err != nil {
			return nil, err
		}
		req.Header.Set("Authorization", "Bearer "+s.cfg.ArtifactToken)
	}
	return s.client.Do(req)
}

func (s *Server) fetchJSON(ctx context.Context, u string, v any) error {
	resp, err := s.get(ctx, u, nil)
	if err != nil {
		return fmt.Errorf("artifact endpoint: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("artifact endpoint: %s", resp.Status)
	}
	return json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(v)
}

// solved reads a solver file: {"packages": {name: {version, arch}}}.
func (s *Server) solved(ctx context.Context, u string) ([]SolvedPackage, error) {
	var doc struct {
		Packages map[string]struct {
			Version string `json:"version"`
			Arch    string `json:"arch"`
		} `json:"packages"`
	}
	if err := s.fetchJSON(ctx, u, &doc); err != nil {
		return nil, err
	}
	out := make([]SolvedPackage, 0, len(doc.Packages))
	for n, p := range doc.Packages {
		out = append(out, SolvedPackage{Name: n, Version: p.Version, Arch: p.Arch})
	}
	slices.SortFunc(out, func(a, b SolvedPackage) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// errorLine finds the line that explains a failed build in the last
// 256 KiB of its log: the last line naming an error, else the last line
// that is not the runner's own summary.
func (s *Server) errorLine(ctx context.Context, u string) string {
	resp, err := s.get(ctx, u, http.Header{"Range": {"bytes=-262144"}})
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusPartialContent {
		return ""
	}
	return ErrorLine(io.LimitReader(resp.Body, 1<<20))
}

// ErrorLine picks the line that explains a failure from a log: the first
// compiler or linker diagnostic ("file.c:4:9: error: …"), else the first
// line naming an error that is not a build driver reporting that a step
// failed (make, dh_*, dpkg-buildpackage), else the first line saying
// something failed, else the last line that is not the runner's summary.
func ErrorLine(r io.Reader) string {
	var best, last string
	rank := 0
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "===") {
			continue
		}
		last = line
		if r := errorRank(line); r > rank {
			best, rank = line, r
		}
	}
	if best == "" {
		best = last
	}
	return truncate(best, 500)
}

var diagnosticRE = regexp.MustCompile(`^\S+:\d+(:\d+)?: (fatal )?error\b|undefined reference to`)

func errorRank(line string) int {
	if diagnosticRE.MatchString(line) {
		return 3
	}
	l := strings.ToLower(line)
	driver := strings.HasPrefix(l, "make") || strings.HasPrefix(l, "dh_") || strings.HasPrefix(l, "dpkg-buildpackage") ||
		strings.HasPrefix(l, "debian/rules")
	switch {
	case strings.Contains(l, "error") && !driver:
		return 2
	case strings.Contains(l, "error") || strings.Contains(l, "failed"):
		return 1
	}
	return 0
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// artifact proxies a runner artifact (logs, solver file, binaries) so the
// browser needs neither the runner's address nor its token. Followed logs
// stream through unchanged, flushed as they come.
func (s *Server) artifact(w http.ResponseWriter, r *http.Request) {
	tg, name, err := artifact.ParsePath(r.PathValue("rest"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	key := Key(tg.Project, tg.Profile)
	t, ok := s.m.Target(key)
	if !ok {
		http.Error(w, "unknown target "+key, http.StatusNotFound)
		return
	}
	base := s.m.ArtifactURL(t)
	if base == "" {
		http.Error(w, "no artifact endpoint known for the runner of "+key+" (no heartbeat with artifact_url)", http.StatusServiceUnavailable)
		return
	}
	u := artifact.TargetURL(base, tg) + strings.TrimPrefix(escapeKey(name), "/")
	if f := r.URL.Query().Get("follow"); f == "1" || f == "true" {
		u += "?follow=1"
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	stop := context.AfterFunc(s.ctx, cancel)
	defer stop()
	hdr := http.Header{}
	if rg := r.Header.Get("Range"); rg != "" {
		hdr.Set("Range", rg)
	}
	resp, err := s.get(ctx, u, hdr)
	if err != nil {
		http.Error(w, "artifact endpoint: "+err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	for _, h := range []string{"Content-Type", "Content-Length", "Content-Range", "Accept-Ranges", "Last-Modified"} {
		if v := resp.Header.Get(h); v != "" {
			w.Header().Set(h, v)
		}
	}
	if strings.HasPrefix(name, artifact.Binaries) && name != artifact.Binaries {
		w.Header().Set("Content-Disposition", "attachment; filename="+strconv.Quote(name[strings.LastIndexByte(name, '/')+1:]))
	}
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(resp.StatusCode)
	rc := http.NewResponseController(w)
	buf := make([]byte, 32<<10)
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return
			}
			_ = rc.Flush()
		}
		if err != nil {
			return
		}
	}
}

// events streams cell changes as server-sent events: "cell" events with a
// Cell as data and the change's sequence number as id, so a reconnecting
// EventSource resumes where it stopped (Last-Event-ID). With ?target= only
// that target's changes are sent. A comment every 15s keeps proxies and
// the client's liveness check happy.
func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	only := r.URL.Query().Get("target")
	var since uint64
	if v := r.Header.Get("Last-Event-ID"); v != "" {
		since, _ = strconv.ParseUint(v, 10, 64)
	} else if v := r.URL.Query().Get("since"); v != "" {
		since, _ = strconv.ParseUint(v, 10, 64)
	} else {
		since = s.m.Seq()
	}
	ch, cancel := s.m.Subscribe()
	defer cancel()
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	fmt.Fprintf(w, "retry: 2000\nevent: hello\ndata: {\"seq\":%d}\n\n", since)
	if rc.Flush() != nil {
		return
	}
	ping := time.NewTicker(15 * time.Second)
	defer ping.Stop()
	var buf bytes.Buffer
	for {
		cells := s.m.ChangesSince(since)
		buf.Reset()
		for i := range cells {
			since = max(since, cells[i].Seq)
			if only != "" && cells[i].Key != only {
				continue
			}
			data, _ := json.Marshal(&cells[i])
			fmt.Fprintf(&buf, "id: %d\nevent: cell\ndata: %s\n\n", cells[i].Seq, data)
		}
		if buf.Len() > 0 {
			if _, err := w.Write(buf.Bytes()); err != nil {
				return
			}
			if rc.Flush() != nil {
				return
			}
		}
		select {
		case <-r.Context().Done():
			return
		case <-s.ctx.Done():
			return
		case <-ch:
		case <-ping.C:
			if _, err := io.WriteString(w, ": ping\n\n"); err != nil || rc.Flush() != nil {
				return
			}
		}
	}
}

// RepoView is the repositories page's data.
type RepoView struct {
	Status  *collect.Status `json:"status"`
	BaseURL string          `json:"base_url"`
	Error   string          `json:"error,omitempty"`
}

func (s *Server) repositories(w http.ResponseWriter, r *http.Request) {
	v := &RepoView{BaseURL: s.cfg.RepoURL}
	if v.BaseURL == "" {
		scheme := "http"
		if r.TLS != nil {
			scheme = "https"
		}
		v.BaseURL = scheme + "://" + r.Host
	}
	v.BaseURL = strings.TrimRight(v.BaseURL, "/")
	if s.cfg.Status == nil {
		v.Error = "no collector configured"
	} else {
		ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
		defer cancel()
		st, err := s.cfg.Status(ctx)
		if err != nil {
			v.Error = err.Error()
		}
		v.Status = st
	}
	if isAPI(r) {
		writeJSON(w, http.StatusOK, v)
		return
	}
	s.render(w, r, "repositories", v)
}

// RunnersView is the runners page's data.
type RunnersView struct {
	Runners []Runner  `json:"runners"`
	Now     time.Time `json:"-"`
}

func (s *Server) runners(w http.ResponseWriter, r *http.Request) {
	v := &RunnersView{Runners: s.m.Runners(), Now: s.m.now()}
	if isAPI(r) {
		writeJSON(w, http.StatusOK, v)
		return
	}
	s.render(w, r, "runners", v)
}

// rebuild sends an ordinary build request for a known target. It always
// needs a credential, from loopback too, and only accepts JSON so a form
// on another site cannot trigger it with the user's cookie.
func (s *Server) rebuild(w http.ResponseWriter, r *http.Request) {
	if !s.credential(r) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="cloud-builder"`)
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "rebuild needs the UI token or a client certificate"})
		return
	}
	if s.cfg.Publisher == nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "rebuilds are not enabled (no broker)"})
		return
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		writeJSON(w, http.StatusUnsupportedMediaType, map[string]string{"error": "send application/json"})
		return
	}
	var body struct {
		Target      string `json:"target"`
		RunnerGroup string `json:"runner_group"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 4096)).Decode(&body); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "body: " + err.Error()})
		return
	}
	tg, err := targetOf(body.Target)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "target: " + err.Error()})
		return
	}
	t, ok := s.m.Target(body.Target)
	if !ok {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "unknown target " + body.Target})
		return
	}
	group := t.RunnerGroup
	if body.RunnerGroup != "" {
		group = body.RunnerGroup
	}
	if err := message.ValidateName(group); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "runner group of " + body.Target + " unknown; name one: " + err.Error()})
		return
	}
	req := &message.BuildRequest{SchemaVersion: message.SchemaVersion, RequestID: uuid.NewString(), RunnerGroup: group, Project: tg.Project}
	if t.Image {
		req.Action = message.ActionImageRebuild
		req.Image = &message.ImageTarget{Arch: tg.Arch(), Selection: tg.DistOrSelection()}
	} else {
		req.Action = message.ActionPackageRebuild
		req.Package = &message.PackageTarget{Arch: tg.Arch(), Dist: tg.DistOrSelection()}
	}
	data, err := message.Encode(req)
	if err == nil {
		ctx, cancel := context.WithTimeout(r.Context(), 15*time.Second)
		err = s.cfg.Publisher.Publish(ctx, group, data)
		cancel()
	}
	if err != nil {
		writeJSON(w, http.StatusBadGateway, map[string]string{"error": "send request: " + err.Error()})
		return
	}
	s.log.Info("rebuild requested", "target", body.Target, "request_id", req.RequestID, "runner_group", group, "from", r.RemoteAddr)
	writeJSON(w, http.StatusAccepted, map[string]string{"request_id": req.RequestID, "runner_group": group})
}

// StatusFrom returns a Config.Status that asks a collector over HTTP.
func StatusFrom(collectorURL string, client *http.Client) func(ctx context.Context) (*collect.Status, error) {
	u := strings.TrimRight(collectorURL, "/") + "/api/v1/status"
	return func(ctx context.Context) (*collect.Status, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return nil, err
		}
		resp, err := client.Do(req)
		if err != nil {
			return nil, fmt.Errorf("collector status: %w", err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("collector status: %s", resp.Status)
		}
		var st collect.Status
		if err := json.NewDecoder(io.LimitReader(resp.Body, 32<<20)).Decode(&st); err != nil {
			return nil, fmt.Errorf("collector status: %w", err)
		}
		return &st, nil
	}
}
