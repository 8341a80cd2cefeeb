// Package ctl is the logic of cb-ctl, the client of a Cloud Builder
// cluster: it sends build requests and follows them, watches cb-response,
// asks the runners about a target (cb-info) and fetches logs, the solver
// file and binaries from the runner that built it (its artifact endpoint).
//
// Everything a command prints on stdout is JSON (keys sorted, indent 4, one
// object per message) or the raw log / solver file; progress and warnings go
// to stderr.
package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/cloud-builder/cb/internal/broker"
	"github.com/cloud-builder/cb/internal/message"
)

// Client runs cb-ctl commands against one cluster.
type Client struct {
	Broker broker.Options
	Stdout io.Writer
	Stderr io.Writer
	// Timeout is how long the broker may stay silent before a command
	// gives up (--timeout). 0 means 30s.
	Timeout time.Duration
	// RunnerCount is cluster.runner_count: an info request is complete
	// once this many runners answered. 0 means: wait for Timeout.
	RunnerCount int
	// HTTP reaches the runners' artifact endpoints; nil means a default
	// client without credentials.
	HTTP *http.Client
	// ArtifactToken is sent as bearer token to artifact endpoints.
	ArtifactToken string
	// AllowPlainHTTP lets ArtifactToken go over plain HTTP to endpoints
	// that are not loopback (cbctl.artifacts.allow_plain_http).
	AllowPlainHTTP bool
	// NewID returns request ids; nil means random UUIDs.
	NewID  func() string
	Logger *slog.Logger
}

// DefaultTimeout is --timeout's default.
const DefaultTimeout = 30 * time.Second

// Errors a command returns; the command line maps them to exit codes.
var (
	// ErrTimeout: nothing relevant arrived within the timeout.
	ErrTimeout = errors.New("timed out")
	// ErrBuildFailed: a followed request ended with a failure response.
	ErrBuildFailed = errors.New("build failed")
	// ErrNotFound: no runner holds the target or the artifact asked for.
	ErrNotFound = errors.New("not found")
)

// kindError is an error of one of the kinds above whose text is only its
// message: "no runner answered ..." rather than "...: not found".
type kindError struct {
	msg  string
	kind error
}

func (e *kindError) Error() string { return e.msg }
func (e *kindError) Unwrap() error { return e.kind }

func kindErr(kind error, format string, a ...any) error {
	return &kindError{msg: fmt.Sprintf(format, a...), kind: kind}
}

func (c *Client) timeout() time.Duration {
	if c.Timeout <= 0 {
		return DefaultTimeout
	}
	return c.Timeout
}

func (c *Client) logger() *slog.Logger {
	if c.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return c.Logger
}

func (c *Client) newID() string {
	if c.NewID != nil {
		return c.NewID()
	}
	return uuid.NewString()
}

// Query names one build target: a project and a package or image target.
type Query struct {
	Project string
	Package *message.PackageTarget
	Image   *message.ImageTarget
}

// Project joins --project-path and a package or image name into a
// validated project string: "MS" + "xclock" is projects/MS/xclock. A
// project path that already starts with projects/ is taken as it is.
func Project(projectPath, name string) (string, error) {
	if err := message.ValidateName(name); err != nil {
		return "", fmt.Errorf("package or image name: %w", err)
	}
	if strings.HasPrefix(projectPath, "/") {
		return "", fmt.Errorf("--project-path: %q is absolute; want a path below projects/", projectPath)
	}
	pp := strings.TrimRight(projectPath, "/")
	var p string
	switch {
	case pp == "" || pp == "projects":
		p = "projects/" + name
	case strings.HasPrefix(pp, "projects/"):
		p = pp + "/" + name
	default:
		p = "projects/" + pp + "/" + name
	}
	if err := message.ValidateProject(p); err != nil {
		return "", fmt.Errorf("--project-path: %w", err)
	}
	return p, nil
}

// NewQuery validates a target given on the command line: dist for a
// package, selection for an image (exactly one of them).
func NewQuery(project, arch, dist, selection string) (Query, error) {
	if err := message.ValidateProject(project); err != nil {
		return Query{}, err
	}
	if arch == "" {
		return Query{}, errors.New("--arch is required")
	}
	if err := message.ValidateName(arch); err != nil {
		return Query{}, fmt.Errorf("--arch: %w", err)
	}
	switch {
	case dist != "" && selection != "":
		return Query{}, errors.New("--dist and --selection exclude each other")
	case dist != "":
		if err := message.ValidateName(dist); err != nil {
			return Query{}, fmt.Errorf("--dist: %w", err)
		}
		return Query{Project: project, Package: &message.PackageTarget{Arch: arch, Dist: dist}}, nil
	case selection != "":
		if err := message.ValidateName(selection); err != nil {
			return Query{}, fmt.Errorf("--selection: %w", err)
		}
		return Query{Project: project, Image: &message.ImageTarget{Arch: arch, Selection: selection}}, nil
	}
	return Query{}, errors.New("--dist (package) or --selection (image) is required")
}

func (q Query) String() string {
	if q.Image != nil {
		return q.Project + "@" + q.Image.Profile()
	}
	if q.Package != nil {
		return q.Project + "@" + q.Package.Profile()
	}
	return q.Project
}

// connect returns a producer after checking that the broker answers, so
// an unreachable broker is one clear error instead of a hang.
func (c *Client) connect(ctx context.Context) (*broker.Client, error) {
	cl, err := broker.New(c.Broker)
	if err != nil {
		return nil, err
	}
	pctx, cancel := context.WithTimeout(ctx, min(c.timeout(), 10*time.Second))
	defer cancel()
	if err := cl.Ping(pctx); err != nil {
		cl.Close()
		return nil, err
	}
	return cl, nil
}

// subscribe reads topic directly (no group, nothing committed) from
// shortly before now, so that nothing published after this call is missed
// even while the consumer is still connecting.
func (c *Client) subscribe(topic string, start broker.StartPosition) (*broker.Consumer, error) {
	return broker.NewConsumer(c.Broker, broker.ConsumerConfig{Topics: []string{topic}, Start: start})
}

func recentStart() broker.StartPosition { return broker.AtTime(time.Now().Add(-time.Second)) }

// pollUntil hands every record of cons to fn until fn reports done, or
// until idle passed since the last record fn called relevant. It returns
// ErrTimeout in the latter case.
func (c *Client) pollUntil(ctx context.Context, cons *broker.Consumer, idle time.Duration, fn func(broker.Record) (relevant, done bool)) error {
	deadline := time.Now().Add(idle)
	for {
		pctx, cancel := context.WithDeadline(ctx, deadline)
		recs, err := cons.Poll(pctx)
		cancel()
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		for _, r := range recs {
			relevant, done := fn(r)
			if done {
				return nil
			}
			if relevant {
				deadline = time.Now().Add(idle)
			}
		}
		if time.Now().After(deadline) {
			return ErrTimeout
		}
		if err != nil && !errors.Is(err, context.DeadlineExceeded) {
			if errors.Is(err, broker.ErrClosed) {
				return err
			}
			c.logger().Debug("poll", "err", err)
		}
	}
}

// PrintJSON writes v as the original cb-ctl did: JSON with sorted keys,
// indented by 4. Structs go through a generic value so their keys are
// sorted whatever their field order.
func PrintJSON(w io.Writer, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode output: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var generic any
	if err := dec.Decode(&generic); err != nil {
		return fmt.Errorf("encode output: %w", err)
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "    ")
	enc.SetEscapeHTML(false)
	return enc.Encode(generic)
}
