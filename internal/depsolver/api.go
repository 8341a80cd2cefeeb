package depsolver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// TargetView is what the API and cb-ctl show of one target.
type TargetView struct {
	ID           string       `json:"id"`
	Project      string       `json:"project"`
	Profile      string       `json:"profile"`
	RunnerGroup  string       `json:"runner_group"`
	Mode         Mode         `json:"cascade"`
	State        State        `json:"state"`
	Reason       string       `json:"reason,omitempty"`
	Blockers     []string     `json:"blockers,omitempty"`
	Missing      []string     `json:"missing,omitempty"`
	Note         string       `json:"note,omitempty"`
	Error        string       `json:"error,omitempty"`
	RequestID    string       `json:"request_id,omitempty"`
	Dependencies []string     `json:"dependencies"`
	Dependents   []string     `json:"dependents"`
	Cycle        []string     `json:"cycle,omitempty"`
	Needs        []Resolution `json:"needs,omitempty"`
	Published    []Binary     `json:"published,omitempty"`
}

// GraphView is the whole graph in build order.
type GraphView struct {
	Targets []TargetView `json:"targets"`
}

// View describes target i of g with its status.
func (e *Engine) View(g *Graph, i int, details bool) TargetView {
	t := g.Targets[i]
	s := e.Status(t.ID)
	v := TargetView{ID: t.ID, Project: t.Project, Profile: t.Profile(), RunnerGroup: t.RunnerGroup, Mode: t.Mode,
		State: s.State, Reason: s.Reason, Blockers: s.Blockers, Missing: s.Missing, Note: s.Note, Error: t.Err,
		RequestID: s.RequestID, Dependencies: []string{}, Dependents: []string{}}
	for _, d := range g.Deps[i] {
		v.Dependencies = append(v.Dependencies, g.Targets[d].ID)
	}
	for _, d := range g.Rdeps[i] {
		v.Dependents = append(v.Dependents, g.Targets[d].ID)
	}
	if g.InCycle(i) {
		for _, m := range g.Comps[g.Comp[i]] {
			v.Cycle = append(v.Cycle, g.Targets[m].ID)
		}
	}
	if details {
		v.Needs = g.Resolved[i]
		v.Published = s.Published
	}
	return v
}

// GraphView returns the targets below project prefix (all for "") in
// build order.
func (e *Engine) GraphView(prefix string) GraphView {
	g := e.Graph()
	out := GraphView{Targets: []TargetView{}}
	for _, i := range g.Order {
		if p := g.Targets[i].Project; prefix == "" || p == prefix || strings.HasPrefix(p, strings.TrimSuffix(prefix, "/")+"/") {
			out.Targets = append(out.Targets, e.View(g, i, false))
		}
	}
	return out
}

// Dot renders a graph view as Graphviz dot: an edge points from a target
// to what it needs; states are colours.
func Dot(w io.Writer, gv GraphView) error {
	colour := map[State]string{StateIdle: "white", StateQueued: "lightblue", StateBlocked: "orange",
		StateRequested: "lightblue", StateBuilding: "yellow", StateFailed: "red", StateUnresolvable: "grey"}
	var b strings.Builder
	b.WriteString("digraph dependencies {\n  rankdir=BT;\n  node [shape=box, style=filled];\n")
	in := map[string]bool{}
	for _, t := range gv.Targets {
		in[t.ID] = true
	}
	for _, t := range gv.Targets {
		fmt.Fprintf(&b, "  %q [label=%q, fillcolor=%q];\n", t.ID, t.ID+"\\n"+string(t.State), colour[t.State])
	}
	for _, t := range gv.Targets {
		for _, d := range t.Dependencies {
			if in[d] {
				fmt.Fprintf(&b, "  %q -> %q;\n", t.ID, d)
			}
		}
	}
	b.WriteString("}\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// Handler serves the API:
//
//	GET /api/v1/graph[?project=projects/X][&format=dot]
//	GET /api/v1/target?id=<project>@<profile>
//	GET /healthz
func (s *Service) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET /api/v1/graph", func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		gv := s.eng.GraphView(r.URL.Query().Get("project"))
		s.mu.Unlock()
		if r.URL.Query().Get("format") == "dot" {
			w.Header().Set("Content-Type", "text/vnd.graphviz; charset=utf-8")
			Dot(w, gv)
			return
		}
		writeJSON(w, http.StatusOK, gv)
	})
	mux.HandleFunc("GET /api/v1/target", func(w http.ResponseWriter, r *http.Request) {
		id := r.URL.Query().Get("id")
		s.mu.Lock()
		g := s.eng.Graph()
		i := g.Index(id)
		var v TargetView
		if i >= 0 {
			v = s.eng.View(g, i, true)
		}
		s.mu.Unlock()
		if i < 0 {
			writeJSON(w, http.StatusNotFound, map[string]string{"error": "no target " + id})
			return
		}
		writeJSON(w, http.StatusOK, v)
	})
	return mux
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "    ")
	enc.Encode(v)
}

func (s *Service) serve(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return err
	}
	if s.cfg.OnListen != nil {
		s.cfg.OnListen(ln.Addr())
	}
	srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second}
	stop := context.AfterFunc(ctx, func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	})
	defer stop()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
