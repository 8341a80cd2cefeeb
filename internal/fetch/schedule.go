package fetch

import (
	"context"
	"fmt"
	"path"

	"github.com/google/uuid"

	"github.com/cloud-builder/cb/internal/broker"
	"github.com/cloud-builder/cb/internal/message"
	"github.com/cloud-builder/cb/internal/metrics"
	"github.com/cloud-builder/cb/internal/source"
)

var _ Publisher = (*broker.Client)(nil)

// Response messages of cb-fetch, as the original writes them.
const (
	msgPackageScheduled = "Package update request scheduled"
	msgImageScheduled   = "Image update request scheduled"
)

// pkg is one changed package with its decoded metadata or the reason it
// cannot be built.
type pkg struct {
	change source.Change
	meta   *message.Metadata
	err    error
}

// schedule sends the requests for changes as of commit and returns how many
// build requests it sent. Any publish error aborts the poll so that it is
// repeated as a whole.
func schedule(ctx context.Context, cfg Config, commit string, changes []source.Change) (int, error) {
	log := cfg.Logger
	var pkgs []*pkg
	var paths []string
	byPath := map[string]*pkg{}
	for _, ch := range changes {
		switch {
		case ch.Deleted:
			// Removing its binaries is the collector's business.
			log.Info("package removed from the sources, nothing to build", "project", ch.Project)
		case ch.Err != nil:
			// The path itself is unfit for the wire, so there is no
			// project to answer for; the log is the only place to say it.
			log.Warn("package directory is not a valid project, skipped", "project", ch.Project, "err", ch.Err)
		default:
			p := &pkg{change: ch}
			pkgs = append(pkgs, p)
			mp := ch.Project + "/" + message.MetadataFile
			paths = append(paths, mp)
			byPath[mp] = p
		}
	}
	err := source.ReadFiles(ctx, cfg.Dir, commit, paths, message.MaxDocumentSize, func(mp string, data []byte, err error) {
		p := byPath[mp]
		if err != nil {
			p.err = fmt.Errorf("%s: %w", mp, err)
			return
		}
		if p.meta, err = message.DecodeMetadata(data, path.Base(p.change.Project)); err != nil {
			p.err = fmt.Errorf("%s: %w", mp, err)
			return
		}
		if err := validateTopics(p.meta); err != nil {
			p.meta, p.err = nil, fmt.Errorf("%s: %w", mp, err)
		}
	})
	if err != nil {
		return 0, err
	}
	sent := 0
	for _, p := range pkgs {
		n, err := schedulePackage(ctx, cfg, p)
		sent += n
		if err != nil {
			return sent, err
		}
	}
	return sent, nil
}

// validateTopics checks that every runner group is a usable topic name:
// otherwise the publish would fail on every poll and hold up all other
// packages forever.
func validateTopics(m *message.Metadata) error {
	for i, d := range m.Distributions {
		if err := broker.ValidateTopic(d.RunnerGroup); err != nil {
			return &message.FieldError{Field: fmt.Sprintf("distributions[%d].runner_group", i), Reason: err.Error()}
		}
	}
	for i, im := range m.Images {
		if err := broker.ValidateTopic(im.RunnerGroup); err != nil {
			return &message.FieldError{Field: fmt.Sprintf("images[%d].runner_group", i), Reason: err.Error()}
		}
	}
	return nil
}

func schedulePackage(ctx context.Context, cfg Config, p *pkg) (int, error) {
	project := p.change.Project
	name := path.Base(project)
	log := cfg.Logger.With("project", project)
	identity := message.Identity(message.ServiceFetch, cfg.ThisHost, name)
	if p.err != nil {
		log.Warn("invalid package metadata", "err", p.err)
		resp := &message.Response{
			Identity:      identity,
			Message:       p.err.Error(),
			Project:       project,
			RequestID:     uuid.NewString(),
			ResponseCode:  message.InvalidPackageMetadata,
			SchemaVersion: message.SchemaVersion,
		}
		return 0, publish(ctx, cfg.Publisher, message.TopicResponse, resp)
	}
	if len(p.meta.Distributions) == 0 && len(p.meta.Images) == 0 {
		log.Info("package has no targets, nothing to build")
		return 0, nil
	}
	type job struct {
		req    *message.BuildRequest
		target *message.Target
		msg    string
	}
	var jobs []job
	for _, d := range p.meta.Distributions {
		jobs = append(jobs, job{
			req: &message.BuildRequest{
				Action:      message.ActionPackageSourceChange,
				Package:     &message.PackageTarget{Arch: d.Arch, Dist: d.Dist},
				RunnerGroup: d.RunnerGroup,
			},
			target: &message.Target{Arch: d.Arch, Dist: d.Dist},
			msg:    msgPackageScheduled,
		})
	}
	for _, im := range p.meta.Images {
		jobs = append(jobs, job{
			req: &message.BuildRequest{
				Action:      message.ActionImageSourceChange,
				Image:       &message.ImageTarget{Arch: im.Arch, Selection: im.Selection.Name},
				RunnerGroup: im.RunnerGroup,
			},
			target: &message.Target{Arch: im.Arch, Selection: im.Selection.Name},
			msg:    msgImageScheduled,
		})
	}
	sent := 0
	seen := map[string]bool{}
	for _, j := range jobs {
		r := j.req
		// A target listed twice is still one target: build it once.
		key := fmt.Sprint(r.IsImage(), " ", r.Profile())
		if seen[key] {
			continue
		}
		seen[key] = true
		r.Project = project
		r.FreshBuildRoot = p.change.MetadataChanged
		r.RequestID = uuid.NewString()
		r.SchemaVersion = message.SchemaVersion
		var headers []broker.Header
		if r.FreshBuildRoot {
			headers = append(headers, broker.Header{Key: broker.HeaderFreshBuildRoot, Value: "true"})
		}
		topic := r.RunnerGroup
		if cfg.RequestTopic != "" {
			topic = cfg.RequestTopic
		}
		if err := publish(ctx, cfg.Publisher, topic, r.WireRequest(), headers...); err != nil {
			return sent, err
		}
		sent++
		metrics.FetchRequests.WithLabelValues(r.Action).Inc()
		log.Info("build requested", "request_id", r.RequestID, "target", r.Profile(),
			"runner_group", r.RunnerGroup, "fresh_build_root", r.FreshBuildRoot)
		resp := &message.Response{
			Identity:      identity,
			Message:       j.msg,
			Project:       project,
			RequestID:     r.RequestID,
			ResponseCode:  r.Action,
			SchemaVersion: message.SchemaVersion,
			Target:        j.target,
		}
		if err := publish(ctx, cfg.Publisher, message.TopicResponse, resp); err != nil {
			return sent, err
		}
	}
	return sent, nil
}

func publish(ctx context.Context, p Publisher, topic string, v any, headers ...broker.Header) error {
	b, err := message.Encode(v)
	if err != nil {
		return err
	}
	return p.PublishHeaders(ctx, topic, b, headers)
}
