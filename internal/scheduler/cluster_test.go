package scheduler

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/cloud-builder/cb/internal/broker"
	"github.com/cloud-builder/cb/internal/journal"
	"github.com/cloud-builder/cb/internal/message"
	"github.com/cloud-builder/cb/internal/metrics"
	"github.com/cloud-builder/cb/internal/target"
)

// The tests below run real schedulers, each in a child process of its own
// (this test binary), against an embedded broker, with a stand-in build
// job (also this binary) that sleeps instead of compiling. A runner that
// dies is killed with SIGKILL, jobs included, so that it leaves its group
// the way a lost machine does: by its session timing out.

const (
	envRole    = "CB_SCHEDULER_TEST_ROLE" // "runner" or "job"
	envBroker  = "CB_SCHEDULER_TEST_BROKER"
	envRoot    = "CB_SCHEDULER_TEST_ROOT"
	envSources = "CB_SCHEDULER_TEST_SOURCES"
	envHost    = "CB_SCHEDULER_TEST_HOST"
	envBuilds  = "CB_SCHEDULER_TEST_BUILDS" // append-only record of job starts and ends
	envSleep   = "CB_SCHEDULER_TEST_SLEEP"
	envLimit   = "CB_SCHEDULER_TEST_LIMIT"
	envIdle    = "CB_SCHEDULER_TEST_IDLE"   // log idle limit of the runner
	envSilent  = "CB_SCHEDULER_TEST_SILENT" // the job writes nothing while it "builds"
	envHealth  = "CB_SCHEDULER_TEST_HEALTH" // serve /healthz here
)

// Timing of the test cluster: fast, and in the order CheckTimeouts wants.
const (
	testSession   = time.Second
	testHeartbeat = 250 * time.Millisecond
	testFence     = 2 * time.Second
	testStuck     = 3 * time.Second
)

func TestMain(m *testing.M) {
	switch os.Getenv(envRole) {
	case "runner":
		os.Exit(runTestRunner())
	case "job":
		os.Exit(runTestJob())
	}
	os.Exit(m.Run())
}

func childLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// runTestRunner is a cb-scheduler wired as the CLI wires it.
func runTestRunner() int {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	logger := childLogger().With("runner", os.Getenv(envHost))
	opts := broker.Options{Brokers: []string{os.Getenv(envBroker)}, Logger: logger}
	client, err := broker.New(opts)
	if err != nil {
		logger.Error("client", "err", err)
		return 1
	}
	cons, err := broker.NewConsumer(opts, broker.ConsumerConfig{Group: "suse", Topics: []string{"suse"}, SessionTimeout: testSession})
	if err != nil {
		logger.Error("consumer", "err", err)
		return 1
	}
	since := time.Now().Add(-time.Hour)
	reader, err := broker.NewConsumer(opts, broker.ConsumerConfig{Topics: []string{message.TopicResponse, message.TopicHeartbeat}, Start: broker.AtTime(since)})
	if err != nil {
		logger.Error("reader", "err", err)
		return 1
	}
	ledger := NewLedger(reader, since, os.Getenv(envHost), logger)
	go func() { _ = ledger.Run(ctx) }()
	limit, _ := strconv.Atoi(os.Getenv(envLimit))
	idle, _ := time.ParseDuration(os.Getenv(envIdle))
	s, err := New(Config{
		RunnerGroup: "suse", RunnerRoot: os.Getenv(envRoot), Sources: os.Getenv(envSources), ThisHost: os.Getenv(envHost),
		HostArch: "x86_64", BuildLimit: limit, PollTimeout: 200 * time.Millisecond,
		JobCommand: []string{os.Args[0]}, JobEnv: []string{envRole + "=job"},
		Consumer: cons, Publisher: client, Ledger: ledger, Logger: logger,
		HeartbeatInterval: testHeartbeat, FenceAfter: testFence, StuckTimeout: testStuck, StopGrace: time.Second, LogIdleLimit: idle,
	})
	if err != nil {
		logger.Error("scheduler", "err", err)
		return 1
	}
	if addr := os.Getenv(envHealth); addr != "" {
		go func() {
			_ = metrics.Serve(ctx, addr, metrics.Mux(s.Healthy), logger, nil)
		}()
	}
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
		<-sig
		cancel()
	}()
	err = s.Run(ctx)
	cons.Close()
	reader.Close()
	client.Close()
	if err != nil {
		logger.Error("run", "err", err)
		return 1
	}
	return 0
}

// runTestJob stands in for `cb job`: it records its start and end, keeps
// writing to its log while it "builds", and finishes the way a job does.
func runTestJob() int {
	logger := childLogger()
	path := os.Args[len(os.Args)-1]
	e, err := journal.Load(path)
	if err != nil {
		logger.Error("journal", "err", err)
		return 1
	}
	e.PID = os.Getpid()
	e.Attempts++
	if err := e.Advance(journal.Running); err != nil {
		logger.Error("journal", "err", err)
		return 1
	}
	host := os.Getenv(envHost)
	note := func(what string) {
		f, err := os.OpenFile(os.Getenv(envBuilds), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err == nil {
			fmt.Fprintf(f, "%s %s %s %s %d\n", what, e.Request.RequestID, e.Request.Name(), host, time.Now().UnixNano())
			f.Close()
		}
	}
	note("start")
	d, _ := time.ParseDuration(os.Getenv(envSleep))
	silent := os.Getenv(envSilent) != ""
	for end := time.Now().Add(d); time.Now().Before(end); {
		if !silent {
			fmt.Println("compiling")
		}
		time.Sleep(50 * time.Millisecond)
	}
	note("end")
	t, err := target.ForRequest(os.Getenv(envRoot), &e.Request)
	if err != nil {
		logger.Error("target", "err", err)
		return 1
	}
	client, err := broker.New(broker.Options{Brokers: []string{os.Getenv(envBroker)}, Logger: logger})
	if err != nil {
		logger.Error("client", "err", err)
		return 1
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	final := &message.Response{SchemaVersion: message.SchemaVersion, RequestID: e.Request.RequestID, Project: e.Request.Project,
		Identity:     message.Identity(message.ServiceRun, host, e.Request.Project),
		ResponseCode: message.PackageBuildSucceeded, Message: "built by " + host}
	if err := e.Finish(ctx, client, &t, final, logger); err != nil {
		logger.Error("finish", "err", err)
		return 1
	}
	return 0
}

// testCluster is a broker, a source tree of n packages and a response
// watcher.
type testCluster struct {
	t       *testing.T
	e       *broker.Embedded
	addr    string
	sources string
	builds  string
	dir     string
	pub     *broker.Client

	mu     sync.Mutex
	byID   map[string][]*message.Response
	deaths map[string][]time.Time // when each runner was killed
}

func newTestCluster(t *testing.T, partitions int32, packages int) *testCluster {
	t.Helper()
	if testing.Short() {
		t.Skip("multi-process scheduler test skipped in -short mode")
	}
	dir := t.TempDir()
	e, err := broker.StartEmbedded(broker.EmbeddedOptions{Listen: "127.0.0.1:0", Partitions: partitions, Topics: []string{"suse"},
		MinSessionTimeout: 500 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	c := &testCluster{t: t, e: e, addr: e.Addrs()[0], dir: dir, sources: filepath.Join(dir, "sources"),
		builds: filepath.Join(dir, "builds.log"), byID: map[string][]*message.Response{}, deaths: map[string][]time.Time{}}
	for i := range packages {
		name := fmt.Sprintf("pkg%02d", i)
		p := filepath.Join(c.sources, "projects", "T", name, ".cb", "cloud_builder.yml")
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		meta := fmt.Sprintf("schema_version: 0.1\nname: %s\ndistributions:\n  - dist: TW\n    arch: x86_64\n    runner_group: suse\n", name)
		if err := os.WriteFile(p, []byte(meta), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if c.pub, err = broker.New(broker.Options{Brokers: e.Addrs(), Logger: slog.New(slog.DiscardHandler)}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.pub.Close)
	w, err := broker.NewConsumer(broker.Options{Brokers: e.Addrs(), Logger: slog.New(slog.DiscardHandler)},
		broker.ConsumerConfig{Topics: []string{message.TopicResponse}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			recs, _ := w.Poll(ctx)
			for _, r := range recs {
				if resp, err := message.DecodeResponse(r.Value); err == nil {
					c.mu.Lock()
					c.byID[resp.RequestID] = append(c.byID[resp.RequestID], resp)
					c.mu.Unlock()
				}
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done; w.Close() })
	return c
}

// request sends a build request for package i and returns its id.
func (c *testCluster) request(i int) string {
	c.t.Helper()
	id := uuid.NewString()
	data, err := message.Encode(&message.BuildRequest{SchemaVersion: message.SchemaVersion, RequestID: id, RunnerGroup: "suse",
		Action: message.ActionPackageRebuild, Project: fmt.Sprintf("projects/T/pkg%02d", i),
		Package: &message.PackageTarget{Dist: "TW", Arch: "x86_64"}})
	if err != nil {
		c.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.pub.Publish(ctx, "suse", data); err != nil {
		c.t.Fatal(err)
	}
	return id
}

func (c *testCluster) responses(id string) []*message.Response {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*message.Response(nil), c.byID[id]...)
}

func (c *testCluster) finals(id string) []*message.Response {
	var out []*message.Response
	for _, r := range c.responses(id) {
		if message.IsFinal(r.ResponseCode) {
			out = append(out, r)
		}
	}
	return out
}

func (c *testCluster) has(id, code string) bool {
	for _, r := range c.responses(id) {
		if r.ResponseCode == code {
			return true
		}
	}
	return false
}

// testRunner is one runner: a scheduler process with its own root.
type testRunner struct {
	c    *testCluster
	host string
	root string
	cmd  *exec.Cmd
	log  *os.File
	done chan struct{}
}

func (c *testCluster) startRunner(host string, sleep time.Duration, limit int, env ...string) *testRunner {
	c.t.Helper()
	r := &testRunner{c: c, host: host, root: filepath.Join(c.dir, host), done: make(chan struct{})}
	var err error
	if r.log, err = os.OpenFile(filepath.Join(c.dir, host+".log"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644); err != nil {
		c.t.Fatal(err)
	}
	r.cmd = exec.Command(os.Args[0], "-test.run=^$")
	r.cmd.Env = append(os.Environ(), envRole+"=runner", envBroker+"="+c.addr, envRoot+"="+r.root, envSources+"="+c.sources,
		envHost+"="+host, envBuilds+"="+c.builds, envSleep+"="+sleep.String(), envLimit+"="+strconv.Itoa(limit))
	r.cmd.Env = append(r.cmd.Env, env...)
	r.cmd.Stdout, r.cmd.Stderr = r.log, r.log
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := r.cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	go func() { _ = r.cmd.Wait(); close(r.done) }()
	c.t.Cleanup(func() {
		r.stop()
		r.killJobs()
		r.log.Close()
		if c.t.Failed() {
			b, _ := os.ReadFile(r.log.Name())
			c.t.Logf("---- %s ----\n%s", host, tailOf(string(b), 6000))
		}
	})
	return r
}

func tailOf(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

func (r *testRunner) stop() {
	select {
	case <-r.done:
		return
	default:
	}
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.done:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-r.cmd.Process.Pid, syscall.SIGKILL)
		<-r.done
	}
}

// die kills the scheduler and every job of the runner with SIGKILL: the
// machine is gone.
func (r *testRunner) die() {
	_ = r.cmd.Process.Signal(syscall.SIGKILL)
	<-r.done
	r.killJobs()
	r.c.mu.Lock()
	r.c.deaths[r.host] = append(r.c.deaths[r.host], time.Now())
	r.c.mu.Unlock()
}

func (r *testRunner) killJobs() {
	pids, _ := filepath.Glob(filepath.Join(r.root, "projects", "T", "*.pid"))
	for _, p := range pids {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 1 {
			_ = syscall.Kill(-pid, syscall.SIGKILL)
		}
	}
}

func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// build is one job run read from the builds record.
type build struct {
	id, name, host string
	start, end     time.Time
}

// buildRuns returns the job runs; a run without an end was killed with
// its runner, or still runs.
func (c *testCluster) buildRuns() []build {
	c.mu.Lock()
	defer c.mu.Unlock()
	f, err := os.Open(c.builds)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []build
	open := map[string]int{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var what, id, name, host string
		var ns int64
		if _, err := fmt.Sscan(sc.Text(), &what, &id, &name, &host, &ns); err != nil {
			continue
		}
		key := id + " " + host
		switch what {
		case "start":
			open[key] = len(out)
			out = append(out, build{id: id, name: name, host: host, start: time.Unix(0, ns), end: time.Now()})
		case "end":
			if i, ok := open[key]; ok {
				out[i].end = time.Unix(0, ns)
				delete(open, key)
			}
		}
	}
	for _, i := range open {
		for _, d := range c.deaths[out[i].host] {
			if d.After(out[i].start) {
				out[i].end = d
				break
			}
		}
	}
	return out
}

// noOverlap fails when one target was built by two runners at once.
func (c *testCluster) noOverlap() {
	c.t.Helper()
	runs := c.buildRuns()
	for i, a := range runs {
		for _, b := range runs[i+1:] {
			if a.name == b.name && a.host != b.host && a.start.Before(b.end) && b.start.Before(a.end) {
				c.t.Errorf("%s built by %s and %s at the same time", a.name, a.host, b.host)
			}
		}
	}
}

// exactlyOneFinal waits for every id's final response, then checks that
// no second one follows.
func (c *testCluster) exactlyOneFinal(ids []string, timeout time.Duration) map[string]string {
	c.t.Helper()
	waitUntil(c.t, timeout, "a final response for every request", func() bool {
		for _, id := range ids {
			if len(c.finals(id)) == 0 {
				return false
			}
		}
		return true
	})
	time.Sleep(2 * testStuck) // room for a duplicate to show
	by := map[string]string{}
	for _, id := range ids {
		f := c.finals(id)
		if len(f) != 1 {
			var codes []string
			for _, r := range c.responses(id) {
				codes = append(codes, r.ResponseCode+"@"+message.IdentityHost(r.Identity))
			}
			c.t.Errorf("request %s: %d final responses: %s", id, len(f), strings.Join(codes, " → "))
			continue
		}
		by[id] = message.IdentityHost(f[0].Identity)
	}
	return by
}

// committedAll waits until the group committed every request.
func (c *testCluster) committedAll() {
	c.t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.addr))
	if err != nil {
		c.t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	var last string
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		lags, err := adm.Lag(ctx, "suse")
		cancel()
		if err == nil {
			var total int64
			lags.Each(func(l kadm.DescribedGroupLag) {
				for _, ps := range l.Lag {
					for _, m := range ps {
						total += m.Lag
					}
				}
			})
			if total == 0 {
				return
			}
			last = fmt.Sprintf("lag %d", total)
		} else {
			last = err.Error()
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("requests not all committed: %s", last)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func TestRunnerDeathHandsAcceptedRequestsToSurvivor(t *testing.T) {
	c := newTestCluster(t, 2, 6)
	a := c.startRunner("runner-a", time.Hour, 10) // never finishes on its own
	var ids []string
	for i := range 6 {
		ids = append(ids, c.request(i))
	}
	waitUntil(t, 20*time.Second, "runner-a to accept and start every request", func() bool {
		n := 0
		for _, r := range c.buildRuns() {
			if r.host == "runner-a" {
				n++
			}
		}
		return n == len(ids)
	})
	b := c.startRunner("runner-b", 300*time.Millisecond, 10)
	_ = b
	died := time.Now()
	a.die()
	by := c.exactlyOneFinal(ids, 90*time.Second)
	recovered := time.Since(died)
	for id, host := range by {
		if host != "runner-b" {
			t.Errorf("request %s answered by %s, want the survivor", id, host)
		}
	}
	c.noOverlap()
	c.committedAll()
	// Session timeout + stuck timeout + a build: about ten seconds, and
	// at most a minute on a loaded machine; never the hour the dead
	// runner's builds would take.
	if limit := time.Minute; recovered > limit {
		t.Errorf("recovered after %s, want under %s", recovered, limit)
	}
	t.Logf("all requests of the dead runner answered %s after its death", recovered.Round(100*time.Millisecond))
}

func TestRebalanceKeepsRunningBuildsWhereTheyAre(t *testing.T) {
	c := newTestCluster(t, 4, 8)
	c.startRunner("runner-a", 4*time.Second, 10)
	var ids []string
	for i := range 8 {
		ids = append(ids, c.request(i))
	}
	waitUntil(t, 20*time.Second, "runner-a to start every build", func() bool { return len(c.buildRuns()) == len(ids) })
	// Two runners join while the builds run: partitions move to them.
	c.startRunner("runner-b", 200*time.Millisecond, 10)
	c.startRunner("runner-c", 200*time.Millisecond, 10)
	by := c.exactlyOneFinal(ids, 40*time.Second)
	for id, host := range by {
		if host != "runner-a" {
			t.Errorf("request %s answered by %s; the build was running on runner-a", id, host)
		}
	}
	if n := len(c.buildRuns()); n != len(ids) {
		t.Errorf("%d builds for %d requests: a running build was started again", n, len(ids))
	}
	c.noOverlap()
	c.committedAll()
}

func TestSchedulerRestartResumesWithoutSecondFinal(t *testing.T) {
	c := newTestCluster(t, 1, 3)
	a := c.startRunner("runner-a", 2*time.Second, 10)
	var ids []string
	for i := range 3 {
		ids = append(ids, c.request(i))
	}
	waitUntil(t, 20*time.Second, "builds to start", func() bool { return len(c.buildRuns()) == len(ids) })
	a.die() // jobs die too
	c.startRunner("runner-a", 200*time.Millisecond, 10)
	by := c.exactlyOneFinal(ids, 30*time.Second)
	for id, host := range by {
		if host != "runner-a" {
			t.Errorf("%s answered by %s", id, host)
		}
	}
	c.noOverlap()
	c.committedAll()
}

func TestRunnerWithoutPartitionSaysSo(t *testing.T) {
	c := newTestCluster(t, 1, 1)
	addrs := []string{freeAddr(t), freeAddr(t)}
	c.startRunner("runner-a", time.Second, 10, envHealth+"="+addrs[0])
	c.startRunner("runner-b", time.Second, 10, envHealth+"="+addrs[1])
	const want = "runner group topic suse has 1 partitions for 2 runners"
	logs := func() string {
		a, _ := os.ReadFile(filepath.Join(c.dir, "runner-a.log"))
		b, _ := os.ReadFile(filepath.Join(c.dir, "runner-b.log"))
		return string(a) + string(b)
	}
	waitUntil(t, 40*time.Second, "a capacity warning", func() bool { return strings.Contains(logs(), want) })
	// One runner owns the partition and is healthy; the other says why not.
	var bodies []string
	waitUntil(t, 20*time.Second, "one healthy and one idle runner", func() bool {
		bodies = bodies[:0]
		ok, idle := 0, 0
		for _, a := range addrs {
			resp, err := http.Get("http://" + a + "/healthz")
			if err != nil {
				return false
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			bodies = append(bodies, fmt.Sprintf("%d %s", resp.StatusCode, b))
			switch {
			case resp.StatusCode == http.StatusOK:
				ok++
			case resp.StatusCode == http.StatusServiceUnavailable && strings.Contains(string(b), want):
				idle++
			}
		}
		return ok == 1 && idle == 1
	})
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func TestSilentBuildIsEndedFromOutside(t *testing.T) {
	c := newTestCluster(t, 1, 2)
	// The job "builds" for an hour without writing a line.
	c.startRunner("runner-a", time.Hour, 10, envIdle+"=2s", envSilent+"=1")
	id := c.request(0)
	start := time.Now()
	f := c.exactlyOneFinal([]string{id}, 30*time.Second)
	if f[id] != "runner-a" {
		t.Fatalf("answered by %q", f[id])
	}
	final := c.finals(id)[0]
	if final.ResponseCode != message.PackageBuildFailed || !strings.Contains(final.Message, "log idle limit 2s") {
		t.Fatalf("final %q: %q; want a failure naming the log idle limit", final.ResponseCode, final.Message)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("ended after %s", d)
	}
	c.committedAll()
}
