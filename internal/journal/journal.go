// Package journal records build requests durably on the runner, so that a
// request acknowledged on the broker is never lost: the scheduler writes an
// entry and fsyncs it before it commits the request's offset, the build job
// advances the entry as it goes, and a restarted scheduler resumes every
// entry that never reached its final state.
//
// States move forward only:
//
//	accepted → running → finished → responded
//	      any unanswered state → released
//
// accepted: the scheduler owns the request; no job process yet.
// running: a job process (PID) works on it.
// finished: the final response is in the target's result file but may not
// be on the broker yet; recovery publishes it.
// responded: the final response was published; the entry is history.
// released: this runner gave the request up without answering it, because
// another runner answered or took it over, or because this runner lost
// contact with the broker for longer than its fence time; the runner that
// owns the request's partition builds it. A released entry is history too,
// unless the request is delivered to this runner again (Add reopens it).
//
// Who writes: the scheduler creates entries and may move any entry to
// finished/responded when it answers on a job's behalf (reset, abandon); a
// job process writes only its own entry. Writes are atomic (temp file,
// fsync, rename, fsync of the directory), so a crash leaves either the old
// or the new state.
package journal

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/cloud-builder/cb/internal/atomicfile"
	"github.com/cloud-builder/cb/internal/message"
)

// State of a journal entry.
type State string

// States, in order.
const (
	Accepted  State = "accepted"
	Running   State = "running"
	Finished  State = "finished"
	Responded State = "responded"
	Released  State = "released"
)

var order = map[State]int{Accepted: 0, Running: 1, Finished: 2, Responded: 3, Released: 3}

// Entry is one journaled request.
type Entry struct {
	Request  message.BuildRequest `yaml:"request"`
	State    State                `yaml:"state"`
	PID      int                  `yaml:"pid,omitempty"`
	Attempts int                  `yaml:"attempts"`
	Accepted time.Time            `yaml:"accepted"`
	Updated  time.Time            `yaml:"updated"`
	Code     string               `yaml:"response_code,omitempty"` // final response code
	CacheHit *bool                `yaml:"cache_hit,omitempty"`
	// Layers is the cache outcome per layer of a layered buildroot.
	Layers  map[string]bool `yaml:"cache_layers,omitempty"`
	Prepare time.Duration   `yaml:"prepare_duration,omitempty"`
	Build   time.Duration   `yaml:"build_duration,omitempty"`
	Clean   bool            `yaml:"clean,omitempty"`
	path    string
}

// Path is the file of the entry.
func (e *Entry) Path() string { return e.path }

// Journal is a directory of entries, one file per request id.
type Journal struct{ dir string }

// Open creates the journal directory below the runner root.
func Open(runnerRoot string) (*Journal, error) {
	dir := filepath.Join(runnerRoot, "journal")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("open journal: %w", err)
	}
	return &Journal{dir: dir}, nil
}

// Dir is the journal directory.
func (j *Journal) Dir() string { return j.dir }

func (j *Journal) path(requestID string) string {
	return filepath.Join(j.dir, requestID+".yml")
}

// Add durably records a newly accepted request. A request id that is
// already journaled is returned as it is (the broker redelivered a request
// we had recorded but not acknowledged): the caller must not start it twice.
func (j *Journal) Add(req *message.BuildRequest, clean bool) (e *Entry, existed bool, err error) {
	if err := message.ValidateName(req.RequestID); err != nil {
		return nil, false, fmt.Errorf("journal request: %w", err)
	}
	if old, err := Load(j.path(req.RequestID)); err == nil && old.State != Released {
		return old, true, nil
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, false, err
	}
	now := time.Now().UTC()
	e = &Entry{Request: *req, State: Accepted, Accepted: now, Clean: clean, path: j.path(req.RequestID)}
	return e, false, e.write()
}

// Get returns the entry of a request id; an error wrapping os.ErrNotExist
// when it was never journaled.
func (j *Journal) Get(requestID string) (*Entry, error) {
	if err := message.ValidateName(requestID); err != nil {
		return nil, fmt.Errorf("journal request: %w", err)
	}
	return Load(j.path(requestID))
}

// Load reads one entry file.
func Load(path string) (*Entry, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	e := &Entry{}
	if err := yaml.Unmarshal(data, e); err != nil {
		return nil, fmt.Errorf("journal entry %s: %w", path, err)
	}
	if _, ok := order[e.State]; !ok {
		return nil, fmt.Errorf("journal entry %s: unknown state %q", path, e.State)
	}
	e.path = path
	return e, nil
}

// Pending returns the entries that have not reached Responded, oldest first.
func (j *Journal) Pending() ([]*Entry, error) {
	names, err := os.ReadDir(j.dir)
	if err != nil {
		return nil, fmt.Errorf("read journal: %w", err)
	}
	var out []*Entry
	for _, n := range names {
		if n.IsDir() || !strings.HasSuffix(n.Name(), ".yml") {
			continue
		}
		e, err := Load(filepath.Join(j.dir, n.Name()))
		if err != nil {
			// A torn or foreign file must not stop recovery of the
			// others; it is moved aside for a human.
			_ = os.Rename(filepath.Join(j.dir, n.Name()), filepath.Join(j.dir, n.Name()+".corrupt"))
			continue
		}
		if e.State != Responded && e.State != Released {
			out = append(out, e)
		}
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Accepted.Before(out[b].Accepted) })
	return out, nil
}

// Prune removes responded entries last updated before cutoff.
func (j *Journal) Prune(cutoff time.Time) error {
	names, err := os.ReadDir(j.dir)
	if err != nil {
		return err
	}
	for _, n := range names {
		p := filepath.Join(j.dir, n.Name())
		e, err := Load(p)
		if err == nil && (e.State == Responded || e.State == Released) && e.Updated.Before(cutoff) {
			_ = os.Remove(p)
		}
	}
	return nil
}

// Advance moves the entry to state s (never backwards) and writes it.
// Responded and Released are both final: neither leads to the other.
func (e *Entry) Advance(s State) error {
	if order[s] < order[e.State] || order[e.State] == order[Responded] && s != e.State {
		return fmt.Errorf("journal %s: cannot go from %s back to %s", e.Request.RequestID, e.State, s)
	}
	e.State = s
	return e.write()
}

// Save writes the entry as it is.
func (e *Entry) Save() error { return e.write() }

func (e *Entry) write() error {
	e.Updated = time.Now().UTC()
	data, err := yaml.Marshal(e)
	if err != nil {
		return fmt.Errorf("encode journal entry: %w", err)
	}
	if err := atomicfile.WriteFile(e.path, data, 0o644); err != nil {
		return fmt.Errorf("write journal entry: %w", err)
	}
	return nil
}
