package broker

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
)

func values(recs []Record) map[string]int {
	m := make(map[string]int, len(recs))
	for _, r := range recs {
		m[string(r.Value)]++
	}
	return m
}

func TestPubSubEveryReaderGetsEverything(t *testing.T) {
	e := newCluster(t, withTopics(3, "pubsub"))
	ctx := testContext(t, 30*time.Second)
	const n = 1000

	readers := []ConsumerConfig{
		{Group: SubscriberGroup("watch"), Topics: []string{"pubsub"}},
		{Group: SubscriberGroup("watch"), Topics: []string{"pubsub"}},
		{Group: "", Topics: []string{"pubsub"}}, // direct reader, no group
	}
	var cols []*collector
	for _, cfg := range readers {
		cols = append(cols, consume(ctx, newConsumer(t, e, cfg), true))
	}
	publishN(t, ctx, newClient(t, e), "pubsub", "msg", n)

	for i, col := range cols {
		waitFor(t, 20*time.Second, fmt.Sprintf("reader %d to get %d records", i, n), func() bool { return col.count() >= n })
		got := values(col.snapshot())
		if len(got) != n {
			t.Errorf("reader %d: %d distinct values, want %d", i, len(got), n)
		}
		for j := range n {
			if got[fmt.Sprintf("msg-%d", j)] != 1 {
				t.Errorf("reader %d: msg-%d received %d times", i, j, got[fmt.Sprintf("msg-%d", j)])
				break
			}
		}
	}
}

func TestSharedQueueDeliversEachMessageOnce(t *testing.T) {
	e := newCluster(t, withTopics(3, "queue"))
	ctx := testContext(t, 40*time.Second)
	const n = 3000

	var members []*Consumer
	for range 3 {
		members = append(members, newConsumer(t, e, ConsumerConfig{Group: "runners", Topics: []string{"queue"}}))
	}
	var cols []*collector
	for _, m := range members {
		cols = append(cols, consume(ctx, m, true))
	}
	// Publish only once the group settled, so that no record is read by
	// a member that loses its partition to a later joiner before acking.
	waitFor(t, 20*time.Second, "every member to own one partition", func() bool {
		for _, m := range members {
			if m.assignedCount() != 1 {
				return false
			}
		}
		return true
	})
	publishN(t, ctx, newClient(t, e), "queue", "job", n)

	total := func() int {
		s := 0
		for _, col := range cols {
			s += col.count()
		}
		return s
	}
	waitFor(t, 20*time.Second, "all records", func() bool { return total() >= n })
	time.Sleep(300 * time.Millisecond) // a duplicate would show up now
	all := map[string]int{}
	for i, col := range cols {
		got := values(col.snapshot())
		if len(got) == 0 {
			t.Errorf("member %d received nothing", i)
		}
		for v, k := range got {
			all[v] += k
		}
		t.Logf("member %d: %d records", i, len(got))
	}
	if len(all) != n {
		t.Errorf("%d distinct records, want %d", len(all), n)
	}
	for v, k := range all {
		if k != 1 {
			t.Errorf("%s delivered %d times", v, k)
		}
	}
}

func TestAckCommitsOnlyTheAcknowledgedPrefix(t *testing.T) {
	e := newCluster(t, withTopics(1, "acks"))
	ctx := testContext(t, 30*time.Second)
	publishN(t, ctx, newClient(t, e), "acks", "r", 5)

	c, err := NewConsumer(clientOpts(e), ConsumerConfig{Group: "g", Topics: []string{"acks"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var recs []Record
	for len(recs) < 5 {
		got, err := c.Poll(ctx)
		if err != nil {
			t.Fatalf("poll: %v", err)
		}
		recs = append(recs, got...)
	}
	adm := kadm.NewClient(c.cl)
	committed := func() int64 {
		t.Helper()
		offs, err := adm.FetchOffsets(ctx, "g")
		if err != nil {
			t.Fatalf("fetch offsets: %v", err)
		}
		o, ok := offs.Lookup("acks", 0)
		if !ok {
			return -1
		}
		return o.At
	}

	steps := []struct {
		ack  []int
		want int64
	}{
		{[]int{3}, -1},   // 0..2 still open: nothing may be committed
		{[]int{1, 0}, 2}, // prefix 0,1 done
		{[]int{2}, 4},    // 2 closes the gap up to the acked 3
		{[]int{2, 3}, 4}, // acking twice changes nothing
		{[]int{4}, 5},    // everything done
	}
	for _, s := range steps {
		var batch []Record
		for _, i := range s.ack {
			batch = append(batch, recs[i])
		}
		if err := c.Ack(ctx, batch...); err != nil {
			t.Fatalf("ack %v: %v", s.ack, err)
		}
		if got := committed(); got != s.want {
			t.Fatalf("after ack %v: committed %d, want %d", s.ack, got, s.want)
		}
	}
	lag, err := c.Lag(ctx)
	if err != nil {
		t.Fatalf("lag: %v", err)
	}
	if lag != 0 {
		t.Errorf("lag %d after acking everything, want 0", lag)
	}
}

func TestLagCountsUnackedRecords(t *testing.T) {
	e := newCluster(t, withTopics(2, "lagged"))
	ctx := testContext(t, 30*time.Second)
	publishN(t, ctx, newClient(t, e), "lagged", "r", 10)
	c := newConsumer(t, e, ConsumerConfig{Group: "lag", Topics: []string{"lagged"}})
	var recs []Record
	for len(recs) < 10 {
		got, err := c.Poll(ctx)
		if err != nil {
			t.Fatalf("poll: %v", err)
		}
		recs = append(recs, got...)
	}
	if lag, err := c.Lag(ctx); err != nil || lag != 10 {
		t.Fatalf("lag before ack = %d, %v; want 10", lag, err)
	}
	if err := c.Ack(ctx, recs...); err != nil {
		t.Fatal(err)
	}
	if lag, err := c.Lag(ctx); err != nil || lag != 0 {
		t.Fatalf("lag after ack = %d, %v; want 0", lag, err)
	}
}

func TestClosedMemberWorkGoesToAnother(t *testing.T) {
	e := newCluster(t, withTopics(2, "handover"))
	ctx := testContext(t, 30*time.Second)
	publishN(t, ctx, newClient(t, e), "handover", "job", 20)

	first, err := NewConsumer(clientOpts(e), ConsumerConfig{Group: "g", Topics: []string{"handover"}})
	if err != nil {
		t.Fatal(err)
	}
	var got []Record
	for len(got) < 20 {
		recs, err := first.Poll(ctx)
		if err != nil {
			t.Fatalf("poll: %v", err)
		}
		got = append(got, recs...)
	}
	// Finish only half of the work, then leave.
	if err := first.Ack(ctx, got[:5]...); err != nil {
		t.Fatal(err)
	}
	first.Close()
	first.Close() // safe twice
	if _, err := first.Poll(ctx); err != ErrClosed {
		t.Errorf("poll after close: %v, want ErrClosed", err)
	}

	col := consume(ctx, newConsumer(t, e, ConsumerConfig{Group: "g", Topics: []string{"handover"}}), true)
	acked := values(got[:5])
	waitFor(t, 20*time.Second, "redelivery", func() bool { return col.count() >= 15 })
	time.Sleep(200 * time.Millisecond)
	again := values(col.snapshot())
	if len(again) != 15 || len(col.snapshot()) != 15 {
		t.Errorf("second member got %d records (%d distinct), want the 15 unacked", len(col.snapshot()), len(again))
	}
	for v := range acked {
		if again[v] > 0 {
			t.Errorf("acked record %s delivered again", v)
		}
	}
}

// childEnv makes the test binary act as a group member that reports every
// record it receives on stdout and never acks (see TestMain).
const childEnv = "CB_BROKER_TEST_CHILD"

func runChild() int {
	c, err := NewConsumer(Options{Brokers: strings.Split(os.Getenv(childEnv), ","), Logger: testLogger()},
		ConsumerConfig{Group: "crash", Topics: []string{"crash"}, SessionTimeout: time.Second})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	for {
		recs, err := c.Poll(context.Background())
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			continue
		}
		for _, r := range recs {
			fmt.Printf("got %s\n", r.Value)
		}
	}
}

func TestCrashedMemberWorkIsRedelivered(t *testing.T) {
	e := newCluster(t, withTopics(2, "crash"))
	ctx := testContext(t, 40*time.Second)
	const n = 20
	publishN(t, ctx, newClient(t, e), "crash", "job", n)

	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	child := exec.CommandContext(ctx, exe, "-test.run=^$")
	child.Env = append(os.Environ(), childEnv+"="+strings.Join(e.Addrs(), ","))
	child.Stderr = os.Stderr
	child.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Kill(-child.Process.Pid, syscall.SIGKILL); _ = child.Wait() })

	// Wait until the child holds all the work, then kill it hard: no
	// leave-group, no commit, its session just stops.
	sc := bufio.NewScanner(out)
	seen := 0
	for seen < n && sc.Scan() {
		if strings.HasPrefix(sc.Text(), "got ") {
			seen++
		}
	}
	if seen < n {
		t.Fatalf("child member received %d of %d records", seen, n)
	}
	if err := syscall.Kill(-child.Process.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = child.Wait()

	start := time.Now()
	col := consume(ctx, newConsumer(t, e, ConsumerConfig{Group: "crash", Topics: []string{"crash"}, SessionTimeout: time.Second}), true)
	waitFor(t, 30*time.Second, "redelivery after the crash", func() bool { return col.count() >= n })
	t.Logf("redelivered %d records %s after the crash", col.count(), time.Since(start).Round(time.Millisecond))
	got := values(col.snapshot())
	for i := range n {
		if got[fmt.Sprintf("job-%d", i)] != 1 {
			t.Errorf("job-%d delivered %d times to the survivor", i, got[fmt.Sprintf("job-%d", i)])
		}
	}
}

func TestPauseKeepsGroupMembership(t *testing.T) {
	e := newCluster(t, withTopics(2, "pause"))
	ctx := testContext(t, 40*time.Second)
	cfg := ConsumerConfig{Group: "pausers", Topics: []string{"pause"}, SessionTimeout: time.Second, MaxWait: 200 * time.Millisecond}
	a := newConsumer(t, e, cfg)
	b := newConsumer(t, e, cfg)
	colA := consume(ctx, a, true)
	colB := consume(ctx, b, true)
	waitFor(t, 20*time.Second, "one partition each", func() bool { return a.assignedCount() == 1 && b.assignedCount() == 1 })
	genA, genB := a.generation(), b.generation()

	a.Pause()
	a.Pause() // idempotent
	cl := newClient(t, e)
	publishN(t, ctx, cl, "pause", "job", 20)

	// Several session timeouts pass: a member that had left the group
	// would have lost its partition to b by now.
	waitFor(t, 10*time.Second, "b's share", func() bool { return colB.count() >= 10 })
	time.Sleep(3 * time.Second)
	if n := colA.count(); n != 0 {
		t.Fatalf("paused member received %d records", n)
	}
	if n := colB.count(); n != 10 {
		t.Fatalf("b received %d records while a was paused, want only its own 10", n)
	}
	if g := a.generation(); g != genA {
		t.Errorf("paused member generation %d -> %d: the group rebalanced", genA, g)
	}
	if g := b.generation(); g != genB {
		t.Errorf("other member generation %d -> %d: the group rebalanced", genB, g)
	}
	partsB := map[int32]bool{}
	for _, r := range colB.snapshot() {
		partsB[r.Partition] = true
	}
	if len(partsB) != 1 {
		t.Errorf("b read partitions %v, want only its own", partsB)
	}

	a.Resume()
	waitFor(t, 10*time.Second, "a's share after resume", func() bool { return colA.count() >= 10 })
	all := values(append(colA.snapshot(), colB.snapshot()...))
	if len(all) != 20 {
		t.Errorf("%d distinct records, want 20", len(all))
	}
	if a.generation() != genA {
		t.Errorf("generation changed across pause/resume")
	}
	for _, r := range colA.snapshot() {
		if partsB[r.Partition] {
			t.Errorf("a and b both read partition %d", r.Partition)
		}
	}
}

func TestPollReturnsWhilePaused(t *testing.T) {
	e := newCluster(t, withTopics(1, "idle"))
	ctx := testContext(t, 20*time.Second)
	c := newConsumer(t, e, ConsumerConfig{Group: "g", Topics: []string{"idle"}})

	// A Poll blocked on an empty topic returns when another goroutine
	// pauses the consumer …
	done := make(chan error, 1)
	go func() {
		recs, err := c.Poll(ctx)
		if len(recs) > 0 {
			err = fmt.Errorf("unexpected records %v", recs)
		}
		done <- err
	}()
	time.Sleep(300 * time.Millisecond)
	c.Pause()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("poll interrupted by pause: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("poll did not return after Pause")
	}
	// … and a paused Poll returns by itself, so a loop keeps running.
	start := time.Now()
	if recs, err := c.Poll(ctx); err != nil || len(recs) != 0 {
		t.Fatalf("paused poll = %v, %v", recs, err)
	}
	if d := time.Since(start); d > 3*pausedPollInterval {
		t.Errorf("paused poll took %s", d)
	}
	// Closing ends a blocked poll with ErrClosed.
	c.Resume()
	go func() { time.Sleep(200 * time.Millisecond); c.Close() }()
	if _, err := c.Poll(ctx); err != ErrClosed {
		t.Errorf("poll during close: %v, want ErrClosed", err)
	}
}

func TestStartPositions(t *testing.T) {
	e := newCluster(t, withTopics(1, "positions"))
	ctx := testContext(t, 30*time.Second)
	cl := newClient(t, e)
	publishN(t, ctx, cl, "positions", "old", 3)
	time.Sleep(50 * time.Millisecond)
	mark := time.Now()
	time.Sleep(50 * time.Millisecond)
	publishN(t, ctx, cl, "positions", "mid", 2)

	tests := []struct {
		name  string
		start StartPosition
		want  []string
	}{
		{"earliest", Earliest, []string{"old-0", "old-1", "old-2", "mid-0", "mid-1", "new-0"}},
		{"at-time", AtTime(mark), []string{"mid-0", "mid-1", "new-0"}},
		{"latest", Latest, []string{"new-0"}},
	}
	var cols []*collector
	for _, tt := range tests {
		c := newConsumer(t, e, ConsumerConfig{Group: SubscriberGroup(tt.name), Topics: []string{"positions"}, Start: tt.start})
		cols = append(cols, consume(ctx, c, true))
		// Latest means "from when the reader is positioned": wait until it is.
		waitFor(t, 10*time.Second, "assignment", func() bool { return c.assignedCount() == 1 })
	}
	time.Sleep(500 * time.Millisecond)
	publishN(t, ctx, cl, "positions", "new", 1)
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			col := cols[i]
			waitFor(t, 10*time.Second, "records", func() bool { return col.count() >= len(tt.want) })
			var got []string
			for _, r := range col.snapshot() {
				got = append(got, string(r.Value))
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestSubscriberGroupIsUnique(t *testing.T) {
	a, b := SubscriberGroup("cb-ctl"), SubscriberGroup("cb-ctl")
	if a == b {
		t.Fatalf("two subscriber groups are equal: %s", a)
	}
	pid := "-" + strconv.Itoa(os.Getpid()) + "-"
	if !strings.HasPrefix(a, "cb-ctl-") || !strings.Contains(a, pid) {
		t.Errorf("group %q does not look like prefix-host-pid-random", a)
	}
}

func TestConfirmTellsOwnerFromFormerOwner(t *testing.T) {
	e := newCluster(t, withTopics(1, "confirm"))
	ctx := testContext(t, 30*time.Second)
	publishN(t, ctx, newClient(t, e), "confirm", "r", 1)
	a := newConsumer(t, e, ConsumerConfig{Group: "g", Topics: []string{"confirm"}, SessionTimeout: time.Second})
	recs, err := a.Poll(ctx)
	if err != nil || len(recs) != 1 {
		t.Fatalf("poll = %v, %v", recs, err)
	}
	if err := a.Confirm(ctx, recs[0]); err != nil {
		t.Fatalf("owner not confirmed: %v", err)
	}
	// A second member takes the partition over once the first one's
	// session ended: the first may no longer take the record on.
	a.Close()
	b := newConsumer(t, e, ConsumerConfig{Group: "g", Topics: []string{"confirm"}, SessionTimeout: time.Second})
	again, err := b.Poll(ctx)
	if err != nil || len(again) != 1 || string(again[0].Value) != string(recs[0].Value) {
		t.Fatalf("new owner poll = %v, %v", again, err)
	}
	if err := a.Confirm(ctx, recs[0]); !errors.Is(err, ErrNotOwner) && !errors.Is(err, ErrClosed) {
		t.Fatalf("former owner confirmed: %v", err)
	}
	if err := b.Confirm(ctx, again[0]); err != nil {
		t.Fatalf("new owner not confirmed: %v", err)
	}
}
