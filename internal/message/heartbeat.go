package message

import (
	"fmt"
	"strings"
	"time"
)

// TopicHeartbeat carries runner heartbeats. It is publish/subscribe: every
// reader (the web UI, a runner-loss detector) sees every heartbeat.
const TopicHeartbeat = "cb-heartbeat"

// HeartbeatInterval is how often a runner publishes its heartbeat. A reader
// should consider a runner gone after three intervals without one.
const HeartbeatInterval = 10 * time.Second

// Heartbeat is an extension of the Go implementation: a runner's scheduler
// publishes one to TopicHeartbeat every Interval seconds, and once more
// with Stopping set when it shuts down. It says who the runner is, what it
// runs and how far its group's queue is behind, so that readers can tell a
// live runner from a dead one and explain why a request waits.
type Heartbeat struct {
	// ArtifactURL is the base URL of the runner's artifact endpoint
	// (logs, binaries), "" when it has none.
	ArtifactURL string `yaml:"artifact_url,omitempty" json:"artifact_url,omitempty"`
	BuildLimit  int    `yaml:"build_limit" json:"build_limit"`
	// Builds names every request the runner has taken on and not
	// answered yet. The other runners of the group read it: a request
	// that no heartbeat names for their stuck timeout is built again by
	// the runner that owns its partition.
	Builds   []HeartbeatBuild `yaml:"builds,omitempty" json:"builds,omitempty"`
	Identity string           `yaml:"identity" json:"identity"` // CBScheduler:HOST:PID:(system)
	// Interval is the seconds until the next heartbeat.
	Interval float64 `yaml:"interval" json:"interval"`
	// QueueLag is the number of requests of the runner group not yet
	// taken by any runner; -1 when unknown.
	QueueLag      int64    `yaml:"queue_lag" json:"queue_lag"`
	Running       []string `yaml:"running" json:"running"` // targets <project>@<profile> being built
	RunnerGroup   string   `yaml:"runner_group" json:"runner_group"`
	SchemaVersion float64  `yaml:"schema_version" json:"schema_version"`
	SourceIP      string   `yaml:"source_ip" json:"source_ip"` // the runner's this_host
	Stopping      bool     `yaml:"stopping,omitempty" json:"stopping,omitempty"`
	// Time is when it was sent, as utc_modification_time.
	Time string `yaml:"utc_time" json:"utc_time"`
	// Waiting is the number of accepted builds waiting for a build slot.
	Waiting int `yaml:"waiting" json:"waiting"`
}

// Build states in a heartbeat.
const (
	HeartbeatWaiting  = "waiting"  // journaled, waiting for a free build slot
	HeartbeatRunning  = "running"  // a job process works on it
	HeartbeatFinished = "finished" // built; the final response is not out yet
)

// HeartbeatBuild is one request a runner works on.
type HeartbeatBuild struct {
	LastOutput string `yaml:"last_output,omitempty" json:"last_output,omitempty"` // newest log write, TimeFormat UTC
	PID        int    `yaml:"pid,omitempty" json:"pid,omitempty"`
	Project    string `yaml:"project" json:"project"`
	RequestID  string `yaml:"request_id" json:"request_id"`
	State      string `yaml:"state" json:"state"`
	Target     string `yaml:"target" json:"target"` // DIST.ARCH or SELECTION.ARCH
}

// maxHeartbeatBuilds bounds the list a decoder accepts; a runner has at
// most its build limit running plus what waits in its journal.
const maxHeartbeatBuilds = 10000

// DecodeHeartbeat decodes a heartbeat and validates its names.
func DecodeHeartbeat(data []byte) (*Heartbeat, error) {
	f, err := parseMap(data)
	if err != nil {
		return nil, fmt.Errorf("heartbeat: %w", err)
	}
	h := &Heartbeat{}
	err = func() (err error) {
		if h.SchemaVersion, err = schemaVersion(f); err != nil {
			return err
		}
		if h.Identity, err = f.str("", "identity", true); err != nil {
			return err
		}
		if h.RunnerGroup, err = f.str("", "runner_group", true); err != nil {
			return err
		}
		if err := validateNameField("runner_group", h.RunnerGroup); err != nil {
			return err
		}
		if h.SourceIP, err = f.str("", "source_ip", true); err != nil {
			return err
		}
		if h.ArtifactURL, err = f.str("", "artifact_url", false); err != nil {
			return err
		}
		if h.BuildLimit, err = f.integer("", "build_limit"); err != nil {
			return err
		}
		if h.Waiting, err = f.integer("", "waiting"); err != nil {
			return err
		}
		lag, err := f.integer("", "queue_lag")
		if err != nil {
			return err
		}
		h.QueueLag = int64(lag)
		if h.Interval, err = f.number("", "interval", true); err != nil {
			return err
		}
		if h.Interval <= 0 || h.Interval > 3600 {
			return &FieldError{"interval", "must be between 0 and 3600 seconds"}
		}
		if h.Running, err = f.strings("", "running"); err != nil {
			return err
		}
		if h.Stopping, err = f.boolean("", "stopping"); err != nil {
			return err
		}
		if h.Time, err = f.str("", "utc_time", true); err != nil {
			return err
		}
		if _, err := time.Parse(TimeFormat, h.Time); err != nil {
			return &FieldError{"utc_time", "want " + TimeFormat}
		}
		h.Builds, err = heartbeatBuilds(f)
		return err
	}()
	if err != nil {
		return nil, fmt.Errorf("heartbeat: %w", err)
	}
	return h, nil
}

// SentAt is Time parsed; the zero time when it does not parse.
func (h *Heartbeat) SentAt() time.Time {
	t, _ := time.Parse(TimeFormat, h.Time)
	return t
}

func heartbeatBuilds(f fields) ([]HeartbeatBuild, error) {
	builds, err := f.list("", "builds")
	if err != nil {
		return nil, err
	}
	if len(builds) > maxHeartbeatBuilds {
		return nil, &FieldError{"builds", fmt.Sprintf("more than %d entries", maxHeartbeatBuilds)}
	}
	var out []HeartbeatBuild
	for i, b := range builds {
		m, ok := b.(map[string]any)
		if !ok {
			return nil, &FieldError{fmt.Sprintf("builds[%d]", i), "must be a mapping"}
		}
		bf, key := fields(m), fmt.Sprintf("builds[%d]", i)
		var hb HeartbeatBuild
		if hb.RequestID, err = bf.str(key, "request_id", true); err != nil {
			return nil, err
		}
		if err := validateNameField(key+".request_id", hb.RequestID); err != nil {
			return nil, err
		}
		if hb.State, err = bf.str(key, "state", true); err != nil {
			return nil, err
		}
		if hb.Project, err = bf.str(key, "project", false); err != nil {
			return nil, err
		}
		if hb.Target, err = bf.str(key, "target", false); err != nil {
			return nil, err
		}
		if hb.PID, err = bf.integer(key, "pid"); err != nil {
			return nil, err
		}
		if hb.LastOutput, err = bf.str(key, "last_output", false); err != nil {
			return nil, err
		}
		if hb.LastOutput != "" {
			if _, err := time.Parse(TimeFormat, hb.LastOutput); err != nil {
				return nil, &FieldError{key + ".last_output", "want " + TimeFormat}
			}
		}
		out = append(out, hb)
	}
	return out, nil
}

// IdentityHost returns the HOST part of an identity SERVICE:HOST:PID:NAME,
// or "" when the identity has another shape.
func IdentityHost(identity string) string {
	service, rest, ok := strings.Cut(identity, ":")
	if !ok || service == "" {
		return ""
	}
	host, rest, ok := strings.Cut(rest, ":")
	if !ok {
		return ""
	}
	if _, _, ok := strings.Cut(rest, ":"); !ok {
		return ""
	}
	return host
}
