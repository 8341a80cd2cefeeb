package ctl

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/cloud-builder/cb/internal/broker"
	"github.com/cloud-builder/cb/internal/message"
)

// InfoResult is what the runners said about a target.
type InfoResult struct {
	// Answers in arrival order, one per runner.
	Answers []*message.InfoResponse
	// Newest is the answer with the newest utc_modification_time.
	Newest *message.InfoResponse
	// Complete: RunnerCount answers arrived, the wait ended early.
	Complete bool
}

// Info sends an info request for q and collects the answers until
// RunnerCount arrived or the broker stayed silent for Timeout.
func (c *Client) Info(ctx context.Context, q Query) (*InfoResult, error) {
	cl, err := c.connect(ctx)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	cons, err := c.subscribe(message.TopicInfoResponse, recentStart())
	if err != nil {
		return nil, err
	}
	defer cons.Close()
	req := &message.InfoRequest{SchemaVersion: message.SchemaVersion, RequestID: c.newID(), Project: q.Project, Package: q.Package, Image: q.Image}
	data, err := message.Encode(req)
	if err != nil {
		return nil, err
	}
	if err := cl.Publish(ctx, message.TopicInfoRequest, data); err != nil {
		return nil, fmt.Errorf("send info request: %w", err)
	}
	res := &InfoResult{}
	seen := map[string]bool{}
	var complete atomic.Bool
	stop := make(chan struct{})
	defer close(stop)
	go c.reask(ctx, cl, data, &complete, stop)
	err = c.pollUntil(ctx, cons, c.timeout(), func(rec broker.Record) (bool, bool) {
		a, err := message.DecodeInfoResponse(rec.Value)
		if err != nil || a.RequestID != req.RequestID {
			return false, false
		}
		a.ArtifactURL = rec.Header(broker.HeaderArtifactURL)
		// At-least-once delivery may repeat an answer; one per runner.
		key := a.Identity + "|" + a.SourceIP
		if seen[key] {
			return false, false
		}
		seen[key] = true
		res.Answers = append(res.Answers, a)
		if c.RunnerCount > 0 && len(res.Answers) >= c.RunnerCount {
			res.Complete = true
			complete.Store(true)
			return true, true
		}
		return true, false
	})
	if err != nil && !errors.Is(err, ErrTimeout) {
		return nil, err
	}
	res.Newest = Newest(res.Answers)
	return res, nil
}

// reask publishes the request again after 1s and 3s unless the answers
// are complete. A direct consumer resolves its start offset in the
// background, and so does a runner whose group just formed; an answer (or
// request) appended while that happens can end up behind the resolved
// offset. Once positioned, a repeated request is seen and answered; answers
// are counted once per runner, so asking again is harmless.
func (c *Client) reask(ctx context.Context, cl *broker.Client, data []byte, complete *atomic.Bool, stop <-chan struct{}) {
	var waited time.Duration
	for _, d := range []time.Duration{time.Second, 2 * time.Second} {
		if waited += d; waited >= c.timeout() {
			return
		}
		t := time.NewTimer(d)
		select {
		case <-stop:
			t.Stop()
			return
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		if complete.Load() {
			return
		}
		if err := cl.Publish(ctx, message.TopicInfoRequest, data); err != nil {
			c.logger().Debug("repeat info request", "err", err)
		}
	}
}

// Newest returns the answer with the newest utc_modification_time; "none"
// is older than any time, and the first of equals wins.
func Newest(answers []*message.InfoResponse) *message.InfoResponse {
	var best *message.InfoResponse
	var bestT time.Time
	for _, a := range answers {
		t, err := time.Parse(message.TimeFormat, a.UTCModificationTime)
		if err != nil {
			t = time.Time{}
		}
		if best == nil || t.After(bestT) {
			best, bestT = a, t
		}
	}
	return best
}

// locate asks the runners about q and returns the newest answer, with a
// warning on stderr when fewer than RunnerCount runners answered.
func (c *Client) locate(ctx context.Context, q Query) (*message.InfoResponse, error) {
	res, err := c.Info(ctx, q)
	if err != nil {
		return nil, err
	}
	if len(res.Answers) == 0 {
		return nil, kindErr(ErrNotFound, "no runner answered about %s within %s (not built anywhere?)", q, c.timeout())
	}
	if c.RunnerCount > 0 && len(res.Answers) < c.RunnerCount {
		fmt.Fprintf(c.Stderr, "cb-ctl: warning: %d of %d runners answered within %s; the newest build may be on a silent runner\n", len(res.Answers), c.RunnerCount, c.timeout())
	}
	return res.Newest, nil
}

// BuildInfo prints the newest runner answer about q.
func (c *Client) BuildInfo(ctx context.Context, q Query) error {
	n, err := c.locate(ctx, q)
	if err != nil {
		return err
	}
	return PrintJSON(c.Stdout, n)
}
