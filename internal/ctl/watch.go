package ctl

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/cloud-builder/cb/internal/broker"
	"github.com/cloud-builder/cb/internal/message"
)

// WatchOptions filter what Watch prints.
type WatchOptions struct {
	RequestID string // only responses to this request
	// Service keeps responses whose identity starts with this service
	// name (CBRun, ...); see ServiceName for the cb-run spelling.
	Service string
	// Since is where the watch starts; zero means now, unless FromStart.
	Since time.Time
	// FromStart starts at the oldest retained response (when Since is
	// zero): the whole history of a request, as the original's watch
	// showed it.
	FromStart bool
}

// ServiceName maps --filter-service-name values to identity service names:
// cb-run and CBRun both mean CBRun.
func ServiceName(s string) (string, error) {
	names := map[string]string{
		"cb-fetch": message.ServiceFetch, "cb-scheduler": message.ServiceScheduler,
		"cb-prepare": message.ServicePrepare, "cb-run": message.ServiceRun,
		"cb-image": message.ServiceImage, "cb-info": message.ServiceInfo,
		"cb-collect": message.ServiceCollect, "cb-depsolver": message.ServiceDepsolver,
		"cb-ctl": message.ServiceCtl,
	}
	if n, ok := names[strings.ToLower(s)]; ok {
		return n, nil
	}
	for _, n := range names {
		if n == s {
			return n, nil
		}
	}
	return "", fmt.Errorf("unknown service %q (want cb-fetch, cb-scheduler, cb-prepare, cb-run, cb-image, cb-info, cb-collect, cb-depsolver)", s)
}

// Watch prints the responses on cb-response that pass the filters, as
// they arrive, until Timeout passed without one. Running out of time is
// how a watch ends, so it returns nil then.
func (c *Client) Watch(ctx context.Context, o WatchOptions) error {
	cl, err := c.connect(ctx)
	if err != nil {
		return err
	}
	cl.Close()
	start := broker.AtTime(time.Now())
	switch {
	case !o.Since.IsZero():
		start = broker.AtTime(o.Since)
	case o.FromStart:
		start = broker.Earliest
	}
	cons, err := c.subscribe(message.TopicResponse, start)
	if err != nil {
		return err
	}
	defer cons.Close()
	// A request has one final response; should a runner crash between
	// publishing it and recording that it did, or a runner cut off from
	// the broker answer after another took over, the repeat is dropped
	// here: watchers count a request's end once.
	finals := map[string]bool{}
	err = c.pollUntil(ctx, cons, c.timeout(), func(rec broker.Record) (bool, bool) {
		resp, err := message.DecodeResponse(rec.Value)
		if err != nil {
			c.logger().Warn("skipping invalid response", "offset", rec.Offset, "err", err)
			return false, false
		}
		if o.RequestID != "" && resp.RequestID != o.RequestID {
			return false, false
		}
		if o.Service != "" && !strings.HasPrefix(resp.Identity, o.Service+":") {
			return false, false
		}
		if message.IsFinal(resp.ResponseCode) && resp.RequestID != "" {
			if finals[resp.RequestID] {
				c.logger().Debug("skipping a repeated final response", "request_id", resp.RequestID, "identity", resp.Identity)
				return false, false
			}
			finals[resp.RequestID] = true
		}
		if err := c.printResponse(rec.Value, resp); err != nil {
			c.logger().Warn("print response", "err", err)
		}
		return true, false
	})
	if errors.Is(err, ErrTimeout) {
		return nil
	}
	return err
}

// printResponse prints the message as it came, unknown fields included
// (the original printed the whole document); the decoded struct is the
// fallback for documents JSON cannot express (non-string keys).
func (c *Client) printResponse(raw []byte, resp *message.Response) error {
	var doc map[string]any
	if err := yaml.Unmarshal(raw, &doc); err == nil {
		if err := PrintJSON(c.Stdout, doc); err == nil {
			return nil
		}
	}
	return PrintJSON(c.Stdout, resp)
}
