package ctl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Depsolver reads cb-depsolver's API: the dependency graph and the state
// of one target.
type Depsolver struct {
	URL  string // e.g. http://127.0.0.1:8082
	HTTP *http.Client
}

// maxDepsolverAnswer bounds one API answer.
const maxDepsolverAnswer = 256 << 20

func (d Depsolver) get(ctx context.Context, rel string, q url.Values) ([]byte, error) {
	base, err := url.Parse(strings.TrimRight(d.URL, "/"))
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		return nil, fmt.Errorf("depsolver URL %q: want http(s)://host:port", d.URL)
	}
	u := base.String() + rel + "?" + q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	hc := d.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: time.Minute}
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("ask cb-depsolver: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxDepsolverAnswer))
	if err != nil {
		return nil, fmt.Errorf("ask cb-depsolver: %w", err)
	}
	switch resp.StatusCode {
	case http.StatusOK:
		return body, nil
	case http.StatusNotFound:
		return nil, kindErr(ErrNotFound, "cb-depsolver: %s", strings.TrimSpace(errorText(body)))
	}
	return nil, fmt.Errorf("cb-depsolver: %s: %s", resp.Status, strings.TrimSpace(errorText(body)))
}

func errorText(body []byte) string {
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(body, &e) == nil && e.Error != "" {
		return e.Error
	}
	return string(body)
}

// printSorted re-encodes a JSON document with sorted keys, indented by 4,
// as every cb-ctl output.
func printSorted(w io.Writer, body []byte) (map[string]any, error) {
	var v map[string]any
	if err := json.Unmarshal(body, &v); err != nil {
		return nil, fmt.Errorf("cb-depsolver answer: %w", err)
	}
	out, err := json.MarshalIndent(v, "", "    ")
	if err != nil {
		return nil, err
	}
	_, err = fmt.Fprintf(w, "%s\n", out)
	return v, err
}

// Graph prints the dependency graph of the targets below project (all
// for ""), in build order, as JSON or, with dot, as Graphviz dot.
func (d Depsolver) Graph(ctx context.Context, w io.Writer, project string, dot bool) error {
	q := url.Values{}
	if project != "" {
		q.Set("project", project)
	}
	if dot {
		q.Set("format", "dot")
		body, err := d.get(ctx, "/api/v1/graph", q)
		if err != nil {
			return err
		}
		_, err = w.Write(body)
		return err
	}
	body, err := d.get(ctx, "/api/v1/graph", q)
	if err != nil {
		return err
	}
	_, err = printSorted(w, body)
	return err
}

// Target prints what cb-depsolver knows of q: its needs, who provides
// each, its state and why. It returns the state.
func (d Depsolver) Target(ctx context.Context, w io.Writer, q Query) (string, error) {
	body, err := d.get(ctx, "/api/v1/target", url.Values{"id": {q.String()}})
	if err != nil {
		return "", err
	}
	v, err := printSorted(w, body)
	if err != nil {
		return "", err
	}
	state, _ := v["state"].(string)
	return state, nil
}

// BuildDependencies with a depsolver prints its view of q first, then the
// solver file of the newest build (as without one). A target that has
// never been built (e.g. unresolvable) has no solver file; that is no
// failure when the depsolver answered.
func (c *Client) BuildDependenciesWith(ctx context.Context, d Depsolver, q Query) error {
	state, derr := d.Target(ctx, c.Stdout, q)
	if derr != nil {
		fmt.Fprintf(c.Stderr, "cb-ctl: %v\n", derr)
	}
	if state == "unresolvable" {
		return nil
	}
	err := c.BuildDependencies(ctx, q)
	if err != nil && derr == nil && (errors.Is(err, ErrNotFound) || errors.Is(err, ErrTimeout)) {
		fmt.Fprintf(c.Stderr, "cb-ctl: no solver file: %v\n", err)
		return nil
	}
	if err == nil {
		return nil
	}
	return errors.Join(derr, err)
}
