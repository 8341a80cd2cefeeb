package broker

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Record is one message read from a topic.
type Record struct {
	Topic     string
	Partition int32
	Offset    int64
	Value     []byte
	Timestamp time.Time
	Headers   []Header

	// leaderEpoch goes back to the broker with the commit so that a
	// consumer resuming from it can detect log truncation.
	leaderEpoch int32
}

// StartPosition says where a reader without a committed offset starts.
// The zero value is Earliest.
type StartPosition int64

const (
	// Earliest starts at the oldest record still retained. Request queues
	// use it: requests sent before the first runner joined are not lost.
	Earliest StartPosition = 0
	// Latest starts after the newest record: only what is published from
	// now on is read.
	Latest StartPosition = -1
)

// AtTime starts at the first record with a timestamp at or after t.
func AtTime(t time.Time) StartPosition {
	return StartPosition(max(t.UnixMilli(), 0))
}

func (p StartPosition) offset() kgo.Offset {
	switch {
	case p == Latest:
		return kgo.NewOffset().AtEnd()
	case p <= Earliest:
		return kgo.NewOffset().AtStart()
	}
	return kgo.NewOffset().AfterMilli(int64(p))
}

func (p StartPosition) String() string {
	switch {
	case p == Latest:
		return "latest"
	case p <= Earliest:
		return "earliest"
	}
	return time.UnixMilli(int64(p)).UTC().Format(time.RFC3339Nano)
}

// ConsumerConfig says what a Consumer reads.
type ConsumerConfig struct {
	// Group is the consumer group. All members of one group share the
	// topics' records (a shared queue). "" means no group: every partition
	// is read directly and Ack does nothing (ephemeral readers such as
	// `cb-ctl --watch`).
	Group  string
	Topics []string
	// Start is where a group without committed offsets, or a reader
	// without a group, begins.
	Start StartPosition
	// SessionTimeout is how long a member may stay silent before the group
	// gives its partitions, with every unacknowledged record, to the other
	// members. 0 keeps the client default (45s); the broker bounds it.
	SessionTimeout time.Duration
	// MaxWait bounds how long the broker holds a fetch that has no data.
	// It does not delay records (a fetch returns as soon as one arrives)
	// but bounds how soon Resume takes effect. 0 means 500ms.
	MaxWait time.Duration
}

// pausedPollInterval is how long Poll waits on a paused consumer before it
// returns without records, so that a single-goroutine loop gets to decide
// about resuming.
const pausedPollInterval = time.Second

// errorBackoff is how long Poll waits before it reports a fetch error, so
// that a caller retrying in a loop does not spin while the broker is away.
const errorBackoff = 250 * time.Millisecond

type topicPartition struct {
	topic     string
	partition int32
}

type delivered struct {
	offset int64
	epoch  int32
}

// partState tracks records of one assigned partition between Poll and Ack.
type partState struct {
	pending   []delivered        // returned by Poll, not yet below mark; ascending
	acked     map[int64]struct{} // acked offsets still in pending
	mark      kgo.EpochOffset    // end of the acked prefix: the offset to commit
	committed int64              // last offset committed successfully
}

func newPartState() *partState {
	return &partState{
		acked:     make(map[int64]struct{}),
		mark:      kgo.EpochOffset{Epoch: -1, Offset: -1},
		committed: -1,
	}
}

// ack marks offset done and advances mark over the acked prefix.
func (s *partState) ack(offset int64) {
	if _, found := slices.BinarySearchFunc(s.pending, offset, func(d delivered, o int64) int {
		return cmp.Compare(d.offset, o)
	}); !found {
		return // acked before, or delivered under an earlier assignment
	}
	s.acked[offset] = struct{}{}
	n := 0
	for n < len(s.pending) {
		d := s.pending[n]
		if _, ok := s.acked[d.offset]; !ok {
			break
		}
		delete(s.acked, d.offset)
		s.mark = kgo.EpochOffset{Epoch: d.epoch, Offset: d.offset + 1}
		n++
	}
	s.pending = s.pending[n:]
}

// Consumer reads records of a set of topics, as a member of a group or
// directly. Records are committed only by Ack.
type Consumer struct {
	cl      *kgo.Client
	adm     *kadm.Client
	cfg     ConsumerConfig
	brokers string
	log     *slog.Logger

	closeOnce sync.Once
	closed    chan struct{}

	pauseMu  sync.Mutex
	paused   bool
	pausedCh chan struct{} // closed while paused: interrupts a blocked Poll
	resumeCh chan struct{} // closed while running: wakes a paused Poll

	// commitMu orders commits: a slow commit of an older mark must not
	// land after, and overwrite, a newer one.
	commitMu sync.Mutex

	mu    sync.Mutex
	parts map[topicPartition]*partState // assigned partitions (group only)
}

// NewConsumer returns a consumer. It joins its group in the background; Poll
// returns records once partitions are assigned.
func NewConsumer(opts Options, cfg ConsumerConfig) (*Consumer, error) {
	if len(cfg.Topics) == 0 {
		return nil, errors.New("configure consumer: no topic to read")
	}
	for _, t := range cfg.Topics {
		if err := ValidateTopic(t); err != nil {
			return nil, fmt.Errorf("configure consumer: %w", err)
		}
	}
	kopts, err := opts.kgoOpts()
	if err != nil {
		return nil, fmt.Errorf("configure consumer: %w", err)
	}
	maxWait := cfg.MaxWait
	if maxWait <= 0 {
		maxWait = 500 * time.Millisecond
	}
	c := &Consumer{
		cfg:      cfg,
		brokers:  strings.Join(opts.Brokers, ","),
		log:      opts.logger().With("component", "broker", "group", cfg.Group, "topics", cfg.Topics),
		closed:   make(chan struct{}),
		pausedCh: make(chan struct{}),
		resumeCh: make(chan struct{}),
		parts:    make(map[topicPartition]*partState),
	}
	close(c.resumeCh)
	kopts = append(kopts,
		kgo.ConsumeTopics(cfg.Topics...),
		kgo.ConsumeResetOffset(cfg.Start.offset()),
		kgo.FetchMaxWait(maxWait),
	)
	if cfg.Group != "" {
		kopts = append(kopts,
			kgo.ConsumerGroup(cfg.Group),
			// Work is acknowledged when it is done, not when it is
			// read: nothing is committed behind the caller's back,
			// also not on revoke.
			kgo.DisableAutoCommit(),
			kgo.OnPartitionsAssigned(c.assigned),
			kgo.OnPartitionsRevoked(c.revoked),
			kgo.OnPartitionsLost(c.revoked),
		)
		if cfg.SessionTimeout > 0 {
			kopts = append(kopts,
				kgo.SessionTimeout(cfg.SessionTimeout),
				kgo.HeartbeatInterval(cfg.SessionTimeout/3),
			)
		}
	}
	cl, err := kgo.NewClient(kopts...)
	if err != nil {
		return nil, fmt.Errorf("create consumer: %w", err)
	}
	c.cl = cl
	c.adm = kadm.NewClient(cl)
	return c, nil
}

func (c *Consumer) assigned(_ context.Context, _ *kgo.Client, m map[string][]int32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for t, ps := range m {
		for _, p := range ps {
			c.parts[topicPartition{t, p}] = newPartState()
		}
	}
	c.log.Debug("partitions assigned", "partitions", m)
}

// revoked forgets partitions that moved away. Their unacknowledged records
// stay uncommitted so the new owner receives them again; a late Ack of such a
// record commits nothing, because committing for a partition another member
// now owns could move its position backwards.
func (c *Consumer) revoked(_ context.Context, _ *kgo.Client, m map[string][]int32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for t, ps := range m {
		for _, p := range ps {
			delete(c.parts, topicPartition{t, p})
		}
	}
	c.log.Debug("partitions revoked", "partitions", m)
}

// Poll blocks until records arrive, ctx is done, the consumer is closed or
// paused, and returns the records. It never commits. A paused consumer
// returns no records after at most a second (or at once on Resume), so that
// a polling loop keeps running while the group membership is kept.
//
// Errors are wrapped and transient: the client reconnects with backoff on
// its own, and the caller may simply log them and poll again. Only
// [ErrClosed] and the ctx error are final.
func (c *Consumer) Poll(ctx context.Context) ([]Record, error) {
	for {
		select {
		case <-c.closed:
			return nil, ErrClosed
		default:
		}
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("poll: %w", err)
		}
		c.pauseMu.Lock()
		paused, pausedCh, resumeCh := c.paused, c.pausedCh, c.resumeCh
		c.pauseMu.Unlock()
		if paused {
			return nil, c.waitPaused(ctx, resumeCh)
		}

		pctx, cancel := context.WithCancel(ctx)
		stop := make(chan struct{})
		go func() {
			select {
			case <-pausedCh:
				cancel()
			case <-stop:
			}
		}()
		fetches := c.cl.PollFetches(pctx)
		close(stop)
		cancel()

		recs := c.collect(fetches)
		var errs []error
		closed := false
		fetches.EachError(func(t string, p int32, err error) {
			switch {
			case errors.Is(err, kgo.ErrClientClosed):
				closed = true
			case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
			case t == "":
				// Injected by the client, e.g. group join failures.
				errs = append(errs, err)
			default:
				errs = append(errs, fmt.Errorf("%s[%d]: %w", t, p, err))
			}
		})
		if len(recs) > 0 {
			if len(errs) > 0 {
				c.log.Warn("fetch errors besides records", "err", errors.Join(errs...))
			}
			return recs, nil
		}
		switch {
		case closed:
			return nil, ErrClosed
		case ctx.Err() != nil:
			return nil, fmt.Errorf("poll: %w", ctx.Err())
		case len(errs) > 0:
			t := time.NewTimer(errorBackoff)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
			case <-c.closed:
				t.Stop()
			}
			return nil, fmt.Errorf("poll %s: %w", strings.Join(c.cfg.Topics, ","), errors.Join(errs...))
		}
		// Interrupted by Pause: loop once more to wait as a paused
		// consumer does.
	}
}

// waitPaused waits up to pausedPollInterval for Resume.
func (c *Consumer) waitPaused(ctx context.Context, resumeCh <-chan struct{}) error {
	t := time.NewTimer(pausedPollInterval)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return fmt.Errorf("poll: %w", ctx.Err())
	case <-c.closed:
		return ErrClosed
	case <-resumeCh:
	case <-t.C:
	}
	return nil
}

func (c *Consumer) collect(fetches kgo.Fetches) []Record {
	n := fetches.NumRecords()
	if n == 0 {
		return nil
	}
	recs := make([]Record, 0, n)
	group := c.cfg.Group != ""
	if group {
		c.mu.Lock()
		defer c.mu.Unlock()
	}
	fetches.EachRecord(func(r *kgo.Record) {
		rec := Record{
			Topic:       r.Topic,
			Partition:   r.Partition,
			Offset:      r.Offset,
			Value:       r.Value,
			Timestamp:   r.Timestamp,
			leaderEpoch: r.LeaderEpoch,
		}
		for _, h := range r.Headers {
			rec.Headers = append(rec.Headers, Header{Key: h.Key, Value: string(h.Value)})
		}
		recs = append(recs, rec)
		if !group {
			return
		}
		// Records of a partition revoked while this poll was in
		// flight are returned but not tracked: their new owner gets
		// them again.
		if st := c.parts[topicPartition{r.Topic, r.Partition}]; st != nil {
			if k := len(st.pending); k == 0 || st.pending[k-1].offset < r.Offset {
				st.pending = append(st.pending, delivered{r.Offset, r.LeaderEpoch})
			}
		}
	})
	return recs
}

// Ack marks records as done and synchronously commits, for every partition,
// the end of its acknowledged prefix: acking offset 7 while 5 is still open
// commits nothing beyond 5, so a crash redelivers 5 (and 7). Records of a
// partition no longer assigned to this member are not committed; the member
// that owns it now receives them again. Without a group Ack does nothing.
func (c *Consumer) Ack(ctx context.Context, recs ...Record) error {
	if c.cfg.Group == "" {
		return nil
	}
	c.commitMu.Lock()
	defer c.commitMu.Unlock()

	c.mu.Lock()
	for _, r := range recs {
		if st := c.parts[topicPartition{r.Topic, r.Partition}]; st != nil {
			st.ack(r.Offset)
		}
	}
	// Commit every partition that is behind, not only the ones acked
	// now: this retries commits that failed earlier.
	todo := make(map[string]map[int32]kgo.EpochOffset)
	states := make(map[topicPartition]*partState)
	for tp, st := range c.parts {
		if st.mark.Offset > st.committed {
			if todo[tp.topic] == nil {
				todo[tp.topic] = make(map[int32]kgo.EpochOffset)
			}
			todo[tp.topic][tp.partition] = st.mark
			states[tp] = st
		}
	}
	c.mu.Unlock()
	if len(todo) == 0 {
		return nil
	}

	var cerr error
	c.cl.CommitOffsetsSync(ctx, todo, func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
		if err != nil {
			cerr = err
			return
		}
		for _, t := range resp.Topics {
			for _, p := range t.Partitions {
				if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
					cerr = errors.Join(cerr, fmt.Errorf("%s[%d]: %w", t.Topic, p.Partition, err))
					delete(states, topicPartition{t.Topic, p.Partition})
				}
			}
		}
	})
	if cerr != nil && len(states) == 0 {
		return fmt.Errorf("commit offsets: %w", mapClosed(cerr))
	}
	c.mu.Lock()
	for tp, st := range states {
		// Only if the partition was not revoked (and maybe
		// reassigned with a fresh state) meanwhile.
		if c.parts[tp] == st {
			st.committed = max(st.committed, todo[tp.topic][tp.partition].Offset)
		}
	}
	c.mu.Unlock()
	if cerr != nil {
		return fmt.Errorf("commit offsets: %w", mapClosed(cerr))
	}
	return nil
}

// Pause stops fetching without leaving the group: heartbeats go on, the
// member keeps its partitions, and nobody else receives their records.
// A runner pauses while it is at its build limit.
func (c *Consumer) Pause() {
	c.pauseMu.Lock()
	defer c.pauseMu.Unlock()
	if c.paused {
		return
	}
	c.paused = true
	c.cl.PauseFetchTopics(c.cfg.Topics...)
	close(c.pausedCh)
	c.resumeCh = make(chan struct{})
}

// Resume undoes Pause.
func (c *Consumer) Resume() {
	c.pauseMu.Lock()
	defer c.pauseMu.Unlock()
	if !c.paused {
		return
	}
	c.paused = false
	c.cl.ResumeFetchTopics(c.cfg.Topics...)
	close(c.resumeCh)
	c.pausedCh = make(chan struct{})
}

// Lag returns how many records of the consumer's topics the group has not
// committed yet, for metrics. Without a group it is 0.
func (c *Consumer) Lag(ctx context.Context) (int64, error) {
	if c.cfg.Group == "" {
		return 0, nil
	}
	lags, err := c.adm.Lag(ctx, c.cfg.Group)
	if err != nil {
		return 0, fmt.Errorf("group lag: %w", mapClosed(err))
	}
	l, ok := lags[c.cfg.Group]
	if !ok {
		return 0, fmt.Errorf("group lag: group %s not described", c.cfg.Group)
	}
	if err := l.Error(); err != nil {
		return 0, fmt.Errorf("group lag: %w", err)
	}
	var total int64
	for _, t := range c.cfg.Topics {
		for _, m := range l.Lag[t] {
			if m.Lag > 0 {
				total += m.Lag
			}
		}
	}
	return total, nil
}

// Ping checks that at least one broker answers.
func (c *Consumer) Ping(ctx context.Context) error {
	return ping(ctx, c.cl, c.brokers)
}

// Close leaves the group, without committing anything that was not acked,
// and releases the connections. Safe to call more than once.
func (c *Consumer) Close() {
	c.closeOnce.Do(func() {
		close(c.closed)
		c.cl.Close()
	})
}

// SubscriberGroup returns a group id that no other reader uses, for a
// publish/subscribe reader that wants committed offsets of its own:
// prefix-host-pid-random.
func SubscriberGroup(prefix string) string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "localhost"
	}
	host = strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == '_' {
			return r
		}
		return '_'
	}, host)
	var b [4]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s-%s-%d-%s", prefix, host, os.Getpid(), hex.EncodeToString(b[:]))
}

// Assigned returns the partitions this member owns now, by topic. Without
// a group it is empty.
func (c *Consumer) Assigned() map[string][]int32 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string][]int32)
	for tp := range c.parts {
		out[tp.topic] = append(out[tp.topic], tp.partition)
	}
	for _, ps := range out {
		slices.Sort(ps)
	}
	return out
}

// Capacity says how the consumer's topics are shared in its group.
type Capacity struct {
	Partitions int // of the consumer's topics
	Members    int // in the group
	Assigned   int // partitions this member owns
}

// Capacity describes the group and the topics: a member that owns no
// partition while the group is stable gets no records at all, which is a
// capacity problem an operator must see.
func (c *Consumer) Capacity(ctx context.Context) (Capacity, error) {
	var cp Capacity
	if c.cfg.Group == "" {
		return cp, errors.New("capacity: consumer has no group")
	}
	for _, ps := range c.Assigned() {
		cp.Assigned += len(ps)
	}
	topics, err := c.adm.ListTopics(ctx, c.cfg.Topics...)
	if err != nil {
		return cp, fmt.Errorf("capacity: %w", mapClosed(err))
	}
	for _, d := range topics.Sorted() {
		if d.Err != nil {
			return cp, fmt.Errorf("capacity: topic %s: %w", d.Topic, d.Err)
		}
		cp.Partitions += len(d.Partitions)
	}
	groups, err := c.adm.DescribeGroups(ctx, c.cfg.Group)
	if err != nil {
		return cp, fmt.Errorf("capacity: %w", mapClosed(err))
	}
	g, ok := groups[c.cfg.Group]
	if !ok {
		return cp, fmt.Errorf("capacity: group %s not described", c.cfg.Group)
	}
	if g.Err != nil {
		return cp, fmt.Errorf("capacity: group %s: %w", c.cfg.Group, g.Err)
	}
	cp.Members = len(g.Members)
	return cp, nil
}

// EndOffsets returns, per topic and partition, the offset the next
// published record will get. A reader that has consumed every offset
// below them has seen everything published before the call. Topics that
// do not exist yet are left out.
func (c *Consumer) EndOffsets(ctx context.Context) (map[string]map[int32]int64, error) {
	ends, err := c.adm.ListEndOffsets(ctx, c.cfg.Topics...)
	return listed("end offsets", ends, err)
}

// OffsetsAfter returns, per topic and partition, the first offset with a
// timestamp at or after t (the end offset when there is none).
func (c *Consumer) OffsetsAfter(ctx context.Context, t time.Time) (map[string]map[int32]int64, error) {
	offs, err := c.adm.ListOffsetsAfterMilli(ctx, max(t.UnixMilli(), 0), c.cfg.Topics...)
	return listed("offsets after "+t.UTC().Format(time.RFC3339), offs, err)
}

func listed(what string, offs kadm.ListedOffsets, err error) (map[string]map[int32]int64, error) {
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, mapClosed(err))
	}
	out := make(map[string]map[int32]int64)
	var errs []error
	offs.Each(func(o kadm.ListedOffset) {
		if errors.Is(o.Err, kerr.UnknownTopicOrPartition) && o.Partition < 0 {
			return // not created yet: nothing to read
		}
		if o.Err != nil {
			errs = append(errs, fmt.Errorf("%s[%d]: %w", o.Topic, o.Partition, o.Err))
			return
		}
		if out[o.Topic] == nil {
			out[o.Topic] = make(map[int32]int64)
		}
		out[o.Topic][o.Partition] = o.Offset
	})
	if len(errs) > 0 {
		return nil, fmt.Errorf("%s: %w", what, errors.Join(errs...))
	}
	return out, nil
}

// ErrNotOwner is returned by Confirm when this member does not own the
// partition (any more); other Confirm errors are transient.
var ErrNotOwner = errors.New("partition not owned by this member")

// Confirm asks the group coordinator whether this member still owns the
// partition of rec in the group's current generation. It commits the
// partition's acknowledged prefix again, which never moves the committed
// offset past rec; a member that was fenced (its session expired and the
// partition went to another member) gets an error. A runner calls it
// before it takes over work that another member may own by now.
func (c *Consumer) Confirm(ctx context.Context, rec Record) error {
	if c.cfg.Group == "" {
		return errors.New("confirm: consumer has no group")
	}
	c.commitMu.Lock()
	defer c.commitMu.Unlock()
	tp := topicPartition{rec.Topic, rec.Partition}
	c.mu.Lock()
	st := c.parts[tp]
	var at kgo.EpochOffset
	if st != nil {
		switch {
		case st.mark.Offset >= 0:
			at = st.mark
		case len(st.pending) > 0:
			at = kgo.EpochOffset{Epoch: st.pending[0].epoch, Offset: st.pending[0].offset}
		default:
			st = nil
		}
	}
	c.mu.Unlock()
	if st == nil || at.Offset > rec.Offset {
		return fmt.Errorf("confirm %s[%d]: %w, or the record was not delivered under the current assignment", rec.Topic, rec.Partition, ErrNotOwner)
	}
	var cerr error
	c.cl.CommitOffsetsSync(ctx, map[string]map[int32]kgo.EpochOffset{rec.Topic: {rec.Partition: at}},
		func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
			if err != nil {
				cerr = err
				return
			}
			for _, t := range resp.Topics {
				for _, p := range t.Partitions {
					if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
						if errors.Is(err, kerr.IllegalGeneration) || errors.Is(err, kerr.UnknownMemberID) ||
							errors.Is(err, kerr.FencedInstanceID) || errors.Is(err, kerr.RebalanceInProgress) {
							err = fmt.Errorf("%w: %w", ErrNotOwner, err)
						}
						cerr = errors.Join(cerr, err)
					}
				}
			}
		})
	if cerr != nil {
		return fmt.Errorf("confirm %s[%d]: %w", rec.Topic, rec.Partition, mapClosed(cerr))
	}
	c.mu.Lock()
	if c.parts[tp] != st {
		cerr = fmt.Errorf("confirm %s[%d]: %w: revoked meanwhile", rec.Topic, rec.Partition, ErrNotOwner)
	}
	c.mu.Unlock()
	return cerr
}
