package scheduler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/cloud-builder/cb/internal/broker"
	"github.com/cloud-builder/cb/internal/message"
)

// Reader is a group-less reader of the response and heartbeat topics;
// *broker.Consumer satisfies it.
type Reader interface {
	Poll(ctx context.Context) ([]broker.Record, error)
	EndOffsets(ctx context.Context) (map[string]map[int32]int64, error)
	OffsetsAfter(ctx context.Context, t time.Time) (map[string]map[int32]int64, error)
}

// Ledger is what the cluster has said about requests, read from
// cb-response and the runner heartbeats: which requests have their final
// response, and which runner last said it works on which request. The
// scheduler asks it before it builds a request, so that a request whose
// partition moved, or that a crashed runner answered but never committed,
// is not built or answered twice.
type Ledger struct {
	r      Reader
	self   string    // this runner's host: its own activity does not count
	since  time.Time // where r starts reading
	logger *slog.Logger
	floors bool // seen holds where r started, at least

	mu       sync.Mutex
	cond     *sync.Cond
	finals   map[string]struct{}
	activity map[string]map[string]time.Time // request -> host -> last said it works on it
	seen     map[string]map[int32]int64      // next offset to read, per topic and partition
	err      error                           // last poll error, for Sync to report
}

// NewLedger returns a ledger reading r, which starts at records published
// at since; run it with Run. self is this runner's this_host.
func NewLedger(r Reader, since time.Time, self string, logger *slog.Logger) *Ledger {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	l := &Ledger{r: r, self: self, since: since, logger: logger,
		finals: map[string]struct{}{}, activity: map[string]map[string]time.Time{}, seen: map[string]map[int32]int64{}}
	l.cond = sync.NewCond(&l.mu)
	return l
}

// Run reads until ctx is done.
func (l *Ledger) Run(ctx context.Context) error {
	defer func() {
		l.mu.Lock()
		l.err = errors.New("ledger stopped")
		l.cond.Broadcast()
		l.mu.Unlock()
	}()
	for ctx.Err() == nil {
		recs, err := l.r.Poll(ctx)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, broker.ErrClosed) {
				return nil
			}
			l.mu.Lock()
			l.err = err
			l.mu.Unlock()
			continue
		}
		l.add(recs)
	}
	return nil
}

func (l *Ledger) add(recs []broker.Record) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.err = nil
	for _, rec := range recs {
		if l.seen[rec.Topic] == nil {
			l.seen[rec.Topic] = map[int32]int64{}
		}
		l.seen[rec.Topic][rec.Partition] = max(l.seen[rec.Topic][rec.Partition], rec.Offset+1)
		at := rec.Timestamp
		if at.IsZero() || at.After(time.Now()) {
			at = time.Now()
		}
		switch rec.Topic {
		case message.TopicResponse:
			resp, err := message.DecodeResponse(rec.Value)
			if err != nil || resp.RequestID == "" {
				continue
			}
			if message.IsFinal(resp.ResponseCode) {
				l.finals[resp.RequestID] = struct{}{}
				delete(l.activity, resp.RequestID)
				continue
			}
			l.note(resp.RequestID, message.IdentityHost(resp.Identity), at)
		case message.TopicHeartbeat:
			hb, err := message.DecodeHeartbeat(rec.Value)
			if err != nil {
				continue
			}
			for _, b := range hb.Builds {
				l.note(b.RequestID, hb.SourceIP, at)
			}
		}
	}
	l.cond.Broadcast()
}

func (l *Ledger) note(id, host string, at time.Time) {
	if _, done := l.finals[id]; done || host == "" {
		return
	}
	hosts := l.activity[id]
	if hosts == nil {
		hosts = map[string]time.Time{}
		l.activity[id] = hosts
	}
	if prev, ok := hosts[host]; !ok || at.After(prev) {
		hosts[host] = at
	}
}

// Sync waits until the ledger has read everything published before the
// call, so that the answers that follow are current.
func (l *Ledger) Sync(ctx context.Context) error {
	l.mu.Lock()
	floored := l.floors
	l.mu.Unlock()
	if !floored {
		// Partitions with nothing after since yield no record to
		// count; start them where the reader starts.
		floors, err := l.r.OffsetsAfter(ctx, l.since)
		if err != nil {
			return fmt.Errorf("ledger sync: %w", err)
		}
		l.mu.Lock()
		for t, ps := range floors {
			if l.seen[t] == nil {
				l.seen[t] = map[int32]int64{}
			}
			for p, o := range ps {
				l.seen[t][p] = max(l.seen[t][p], o)
			}
		}
		l.floors = true
		l.mu.Unlock()
	}
	ends, err := l.r.EndOffsets(ctx)
	if err != nil {
		return fmt.Errorf("ledger sync: %w", err)
	}
	stop := context.AfterFunc(ctx, func() {
		l.mu.Lock()
		l.cond.Broadcast()
		l.mu.Unlock()
	})
	defer stop()
	l.mu.Lock()
	defer l.mu.Unlock()
	for !l.caughtUp(ends) {
		if err := ctx.Err(); err != nil {
			if l.err != nil {
				err = errors.Join(err, l.err)
			}
			return fmt.Errorf("ledger sync: %w", err)
		}
		l.cond.Wait()
	}
	return nil
}

func (l *Ledger) caughtUp(ends map[string]map[int32]int64) bool {
	for t, ps := range ends {
		for p, end := range ps {
			if end > 0 && l.seen[t][p] < end {
				return false
			}
		}
	}
	return true
}

// Final reports whether the request has its final response on the broker.
func (l *Ledger) Final(id string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, ok := l.finals[id]
	return ok
}

// Elsewhere returns the runner other than this one that last said that it
// works on the request, how long ago, and whether that was within d.
func (l *Ledger) Elsewhere(id string, d time.Duration) (host string, since time.Duration, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	// Every other runner counts, not only the last one heard: this
	// runner's own heartbeats (also ones sent late, after a cut-off
	// network healed) must not hide another runner's recent work.
	var last time.Time
	for h, at := range l.activity[id] {
		if h != l.self && at.After(last) {
			host, last = h, at
		}
	}
	if host == "" {
		return "", 0, false
	}
	age := time.Since(last)
	return host, age, age <= d
}
