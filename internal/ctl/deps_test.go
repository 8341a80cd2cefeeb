package ctl

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/cloud-builder/cb/internal/message"
)

func TestDepsolverClient(t *testing.T) {
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/api/v1/graph" && r.URL.Query().Get("format") == "dot":
			w.Write([]byte("digraph dependencies {}\n"))
		case r.URL.Path == "/api/v1/graph":
			if r.URL.Query().Get("project") != "projects/T" {
				t.Errorf("project = %q", r.URL.Query().Get("project"))
			}
			w.Write([]byte(`{"targets":[{"state":"idle","id":"projects/T/a@b.x86_64"}]}`))
		case r.URL.Query().Get("id") == "projects/T/a@b.x86_64":
			w.Write([]byte(`{"state":"unresolvable","missing":["nope"],"id":"projects/T/a@b.x86_64"}`))
		default:
			w.WriteHeader(http.StatusNotFound)
			w.Write([]byte(`{"error":"no target x"}`))
		}
	}))
	defer hs.Close()
	d := Depsolver{URL: hs.URL}
	ctx := context.Background()
	var out bytes.Buffer
	if err := d.Graph(ctx, &out, "projects/T", false); err != nil {
		t.Fatal(err)
	}
	want := "{\n    \"targets\": [\n        {\n            \"id\": \"projects/T/a@b.x86_64\",\n            \"state\": \"idle\"\n        }\n    ]\n}\n"
	if out.String() != want {
		t.Fatalf("graph output %q, want sorted keys indented by 4", out.String())
	}
	out.Reset()
	if err := d.Graph(ctx, &out, "", true); err != nil || !strings.HasPrefix(out.String(), "digraph") {
		t.Fatalf("dot: %v %q", err, out.String())
	}
	q := Query{Project: "projects/T/a", Package: &message.PackageTarget{Arch: "x86_64", Dist: "b"}}
	out.Reset()
	state, err := d.Target(ctx, &out, q)
	if err != nil || state != "unresolvable" || !strings.Contains(out.String(), `"missing": [`) {
		t.Fatalf("target: %v %s %q", err, state, out.String())
	}
	// An unresolvable target was never built: no runner is asked.
	c := &Client{Stdout: &out, Stderr: &out}
	if err := c.BuildDependenciesWith(ctx, d, q); err != nil {
		t.Fatal(err)
	}
	q.Project = "projects/T/x"
	if _, err := d.Target(ctx, &out, q); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "no target x") {
		t.Fatalf("unknown target: %v", err)
	}
	if err := (Depsolver{URL: "ftp://x"}).Graph(ctx, &out, "", false); err == nil {
		t.Fatal("bad URL accepted")
	}
}
