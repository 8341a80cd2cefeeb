package ctl

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cloud-builder/cb/internal/broker"
	"github.com/cloud-builder/cb/internal/message"
)

// BuildRequest returns a validated "package rebuild requested" or "image
// rebuild requested" request for q on runnerGroup, with a new request id.
func (c *Client) BuildRequest(q Query, runnerGroup string) (*message.BuildRequest, error) {
	if err := broker.ValidateTopic(runnerGroup); err != nil {
		return nil, fmt.Errorf("--runner-group: %w", err)
	}
	if err := message.ValidateName(runnerGroup); err != nil {
		return nil, fmt.Errorf("--runner-group: %w", err)
	}
	req := &message.BuildRequest{
		SchemaVersion: message.SchemaVersion,
		RequestID:     c.newID(),
		RunnerGroup:   runnerGroup,
		Project:       q.Project,
	}
	switch {
	case q.Package != nil:
		req.Action = message.ActionPackageRebuild
		req.Package = &message.PackageTarget{Arch: q.Package.Arch, Dist: q.Package.Dist}
	case q.Image != nil:
		req.Action = message.ActionImageRebuild
		req.Image = &message.ImageTarget{Arch: q.Image.Arch, Selection: q.Image.Selection}
	default:
		return nil, errors.New("neither package nor image target given")
	}
	// What we send must be what a runner accepts.
	data, err := message.Encode(req)
	if err != nil {
		return nil, err
	}
	if _, err := message.DecodeBuildRequest(data); err != nil {
		return nil, err
	}
	return req, nil
}

// Send publishes req to its runner group and prints it.
func (c *Client) Send(ctx context.Context, req *message.BuildRequest) error {
	cl, err := c.connect(ctx)
	if err != nil {
		return err
	}
	defer cl.Close()
	return c.publishRequest(ctx, cl, req)
}

func (c *Client) publishRequest(ctx context.Context, cl *broker.Client, req *message.BuildRequest) error {
	data, err := message.Encode(req)
	if err != nil {
		return err
	}
	if err := cl.Publish(ctx, req.RunnerGroup, data); err != nil {
		return fmt.Errorf("send build request: %w", err)
	}
	c.logger().Debug("build request sent", "request_id", req.RequestID, "runner_group", req.RunnerGroup)
	return PrintJSON(c.Stdout, req)
}

// SendAndWait publishes req, prints it, then follows its responses with a
// progress line per stage on stderr until the final response, which it
// prints on stdout. It returns nil on success, ErrBuildFailed (wrapped)
// on a failure response and ErrTimeout (wrapped) when the broker stayed
// silent for Timeout while no runner reported the build as running.
func (c *Client) SendAndWait(ctx context.Context, req *message.BuildRequest) (*message.Response, error) {
	cl, err := c.connect(ctx)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	// Subscribe before sending: the first response can come back fast.
	cons, err := c.subscribe(message.TopicResponse, recentStart())
	if err != nil {
		return nil, err
	}
	defer cons.Close()
	if err := c.publishRequest(ctx, cl, req); err != nil {
		return nil, err
	}
	return c.follow(ctx, cons, req.RequestID, queryOf(req))
}

// Follow follows the responses of an earlier request from the start of
// cb-response, as SendAndWait does after sending.
func (c *Client) Follow(ctx context.Context, requestID string) (*message.Response, error) {
	cons, err := c.subscribe(message.TopicResponse, broker.Earliest)
	if err != nil {
		return nil, err
	}
	defer cons.Close()
	return c.follow(ctx, cons, requestID, nil)
}

func queryOf(req *message.BuildRequest) *Query {
	return &Query{Project: req.Project, Package: req.Package, Image: req.Image}
}

func (c *Client) follow(ctx context.Context, cons *broker.Consumer, requestID string, q *Query) (*message.Response, error) {
	start := time.Now()
	var final *message.Response
	for {
		err := c.pollUntil(ctx, cons, c.timeout(), func(rec broker.Record) (bool, bool) {
			resp, err := message.DecodeResponse(rec.Value)
			if err != nil || resp.RequestID != requestID {
				return false, false
			}
			c.progress(time.Since(start), resp)
			if q == nil && resp.Target != nil {
				// Following an earlier request: the accepted
				// response names the target to probe on silence.
				if nq, err := NewQuery(resp.Project, resp.Target.Arch, resp.Target.Dist, resp.Target.Selection); err == nil {
					q = &nq
				}
			}
			if message.IsFinal(resp.ResponseCode) {
				final = resp
				return true, true
			}
			return true, false
		})
		if err == nil {
			break
		}
		if !errors.Is(err, ErrTimeout) {
			return nil, err
		}
		// A compile can run far longer than the timeout without a
		// response: silence only ends the wait when no runner reports
		// the build as running. (Not only after "accepted": that early
		// response may have been missed while the consumer was still
		// being positioned.)
		if q != nil && c.stillRunning(ctx, *q) {
			fmt.Fprintf(c.Stderr, "%7s %-9s %s\n", elapsed(time.Since(start)), "running", "no news for "+c.timeout().String()+", a runner reports the build running; waiting on")
			continue
		}
		return nil, kindErr(ErrTimeout, "no response to request %s for %s", requestID, c.timeout())
	}
	if err := PrintJSON(c.Stdout, final); err != nil {
		return final, err
	}
	if !message.IsSuccess(final.ResponseCode) {
		return final, kindErr(ErrBuildFailed, "%s: %s", final.ResponseCode, final.Message)
	}
	return final, nil
}

func (c *Client) stillRunning(ctx context.Context, q Query) bool {
	res, err := c.Info(ctx, q)
	if err != nil {
		return false
	}
	for _, a := range res.Answers {
		if a.IsRunning {
			return true
		}
	}
	return false
}

// Stage names the step of a build a response reports.
func Stage(code message.ResponseCode) string {
	switch code {
	case message.PackageRequestAccepted, message.ImageRequestAccepted:
		return "accepted"
	case message.ResetRunningBuild:
		return "reset"
	case message.BuildRootSetupSucceeded, message.BuildRootSetupFailed:
		return "buildroot"
	case message.PackageBuildSucceeded, message.PackageBuildFailed, message.PackageBuildFailedNoBinaries,
		message.ImageBuildSucceeded, message.ImageBuildFailed:
		return "build"
	case message.PackageBinariesSyncFailed, message.ImageBinariesSyncFailed:
		return "sync"
	case message.PackageBuildBlocked, message.ImageBuildBlocked:
		return "blocked"
	case message.PackageBuildUnresolvable, message.ImageBuildUnresolvable:
		return "unresolvable"
	case message.PackageRebuildDependencyChange, message.ImageRebuildDependencyChange:
		return "requested"
	}
	if message.IsFinal(code) {
		return "rejected"
	}
	return "progress"
}

func (c *Client) progress(d time.Duration, r *message.Response) {
	line := r.ResponseCode
	if r.Message != "" && r.Message != r.ResponseCode {
		line += ": " + r.Message
	}
	fmt.Fprintf(c.Stderr, "%7s %-9s %s (%s)\n", elapsed(d), Stage(r.ResponseCode), line, r.Identity)
}

func elapsed(d time.Duration) string {
	return fmt.Sprintf("%.1fs", d.Seconds())
}
