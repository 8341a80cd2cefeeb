package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/cloud-builder/cb/internal/broker"
	"github.com/cloud-builder/cb/internal/message"
)

// buildEvents turns the responses on cb-response, and the collector's
// publications, into one readable line per build event for cb up's
// terminal: requested, accepted, buildroot ready or cached, built, failed,
// published, each with its target and how long the step took.
type buildEvents struct {
	mu       sync.Mutex
	w        io.Writer
	requests map[string]*eventRequest
	held     []string // lines printed before release
	released bool
}

type eventRequest struct {
	target      string    // "projects/… DIST.ARCH" once known
	first, last time.Time // first and latest event
}

func newBuildEvents(w io.Writer) *buildEvents {
	return &buildEvents{w: w, requests: map[string]*eventRequest{}}
}

// release prints the lines held so far and every later line at once; until
// then lines wait, so that none comes before cb up's banner.
func (e *buildEvents) release() {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, l := range e.held {
		io.WriteString(e.w, l)
	}
	e.held, e.released = nil, true
}

// print writes one line; the caller holds mu.
func (e *buildEvents) print(format string, a ...any) {
	l := fmt.Sprintf(format, a...)
	if !e.released {
		e.held = append(e.held, l)
		return
	}
	io.WriteString(e.w, l)
}

// run prints the responses published from start on until ctx is done.
func (e *buildEvents) run(ctx context.Context, opts broker.Options, start time.Time) error {
	cons, err := broker.NewConsumer(opts, broker.ConsumerConfig{Topics: []string{message.TopicResponse}, Start: broker.AtTime(start)})
	if err != nil {
		return err
	}
	defer cons.Close()
	for {
		recs, err := cons.Poll(ctx)
		if ctx.Err() != nil || errors.Is(err, broker.ErrClosed) {
			return nil
		}
		if err != nil {
			continue // logged by the client; it reconnects on its own
		}
		for _, rec := range recs {
			if r, err := message.DecodeResponse(rec.Value); err == nil {
				e.response(r, rec.Timestamp)
			}
		}
	}
}

// response prints the line for one response, if it is a build event.
func (e *buildEvents) response(r *message.Response, at time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	q := e.requests[r.RequestID]
	if q == nil {
		q = &eventRequest{target: r.Project, first: at, last: at}
		e.requests[r.RequestID] = q
	}
	if t := r.Target; t != nil {
		q.target = r.Project + " " + profileOf(t)
	}
	step, total := at.Sub(q.last), at.Sub(q.first)
	q.last = at
	code := r.ResponseCode
	var what, detail string
	switch {
	case code == message.PackageRebuildRequested || code == message.PackageRebuildSourceChange ||
		code == message.ImageRebuildRequested || code == message.ImageRebuildSourceChange:
		what = "requested"
		detail = "(" + code + ")"
	case code == message.PackageRequestAccepted || code == message.ImageRequestAccepted:
		what = "accepted"
	case code == message.ResetRunningBuild:
		what, detail = "reset", "the running build of this target was stopped"
	case code == message.BuildRootSetupSucceeded:
		what, detail = "buildroot", "created in "+seconds(step)
		if r.Message == message.BuildRootCachedMessage {
			detail = "from cache in " + seconds(step)
		}
	case message.IsSuccess(code):
		what = "built"
		detail = "in " + seconds(step) + " (total " + seconds(total) + ")"
		if n := binaries(r); n > 0 {
			detail += fmt.Sprintf(", %d binaries", n)
		}
	case message.IsFinal(code):
		what = "failed"
		detail = "after " + seconds(total) + ": " + code + ": " + r.Message
	default:
		return
	}
	if message.IsFinal(code) {
		delete(e.requests, r.RequestID)
	}
	line := fmt.Sprintf("%s %-10s %s", at.Local().Format("15:04:05"), what, q.target)
	if detail != "" {
		line += " " + detail
	}
	e.print("%s\n", line)
}

// published prints that the collector published a repository.
func (e *buildEvents) published(repoPath, repoType string, d time.Duration) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.print("%s %-10s %s (%s) in %s\n", time.Now().Format("15:04:05"), "published", repoPath, repoType, seconds(d))
}

func profileOf(t *message.Target) string {
	if t.Selection != "" {
		return t.Selection + "." + t.Arch
	}
	return t.Dist + "." + t.Arch
}

func binaries(r *message.Response) int {
	switch {
	case r.Package != nil:
		return len(r.Package.BinaryPackages)
	case r.Image != nil:
		return len(r.Image.BinaryPackages)
	}
	return 0
}

func seconds(d time.Duration) string { return fmt.Sprintf("%.1fs", max(d, 0).Seconds()) }
