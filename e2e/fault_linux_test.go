package e2e

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httputil"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/cloud-builder/cb/internal/message"
)

// faultConfig scales the fault suite. CI runs the defaults; scripts/soak
// runs the long version through the environment.
type faultConfig struct {
	requests   int           // CB_FAULT_REQUESTS
	cut        time.Duration // CB_FAULT_CUT: how long runner 2 is off the network
	buildSleep int           // CB_FAULT_BUILD_SLEEP: seconds each build sleeps, so faults meet running builds
	kills      int           // CB_FAULT_KILLS: random kill -9 of a scheduler and of a job, each
	seed       uint64        // CB_FAULT_SEED
}

func loadFaultConfig(t *testing.T) faultConfig {
	t.Helper()
	c := faultConfig{requests: 15, cut: 20 * time.Second, buildSleep: 4, kills: 1, seed: uint64(time.Now().UnixNano())}
	env := func(k string, f func(string) error) {
		if v := os.Getenv(k); v != "" {
			if err := f(v); err != nil {
				t.Fatalf("%s=%q: %v", k, v, err)
			}
		}
	}
	env("CB_FAULT_REQUESTS", func(v string) (err error) { c.requests, err = strconv.Atoi(v); return })
	env("CB_FAULT_CUT", func(v string) (err error) { c.cut, err = time.ParseDuration(v); return })
	env("CB_FAULT_BUILD_SLEEP", func(v string) (err error) { c.buildSleep, err = strconv.Atoi(v); return })
	env("CB_FAULT_KILLS", func(v string) (err error) { c.kills, err = strconv.Atoi(v); return })
	env("CB_FAULT_SEED", func(v string) (err error) { c.seed, err = strconv.ParseUint(v, 10, 64); return })
	return c
}

// Runner timing in the suite: the real defaults scaled down, in the order
// the scheduler checks (fence + heartbeat <= stuck).
var faultRunnerFlags = []string{"--heartbeat-interval", "2s", "--fence-after", "8s", "--stuck-timeout", faultStuck.String(),
	"--session-timeout", "6s", "--build-limit", "2", "--poll-timeout", "1000"}

// faultStuck is the suite's stuck timeout: the earliest a survivor may
// build a request whose runner stopped naming it in heartbeats. A cut-off
// runner's fence must have stopped its builds by then.
const faultStuck = 12 * time.Second

// faultSystem is the suite's cluster: broker and collector in the hub
// namespace, three runners in namespaces of their own.
type faultSystem struct {
	t          *testing.T
	net        *testNet
	dir        string
	env        []string
	brokerAddr string
	dataDir    string
	origin     string
	repoRoot   string
	broker     *proc
	runners    [4]*proc // 1-based
	dead       map[int]bool
	rng        *rand.Rand

	kcl *kgo.Client

	mu      sync.Mutex
	records []*message.Response // every record of cb-response, in order
	hbSeen  map[string]time.Time
	events  []string
	jobs    map[string]map[string][]jobSpan // request id → runner → spans seen building
}

func TestFaultSuite(t *testing.T) {
	needRoot(t, "mmdebstrap", "dpkg-deb", "gpg", "ip", "nsenter")
	cfg := loadFaultConfig(t)
	t.Logf("fault suite: %d requests, cut %s, build sleep %ds, %d random kills each, seed %d", cfg.requests, cfg.cut, cfg.buildSleep, cfg.kills, cfg.seed)
	fs := newFaultSystem(t, cfg)
	recovery := map[string]time.Duration{}
	t.Cleanup(func() {
		if t.Failed() {
			// What happened when, for a failure far into the suite.
			fs.mu.Lock()
			t.Logf("events:\n    %s", strings.Join(fs.events, "\n    "))
			fs.mu.Unlock()
			for k, v := range recovery {
				t.Logf("recovery so far: %s %s", k, v.Round(100*time.Millisecond))
			}
			fs.keepLogs()
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go fs.sampleJobs(ctx)

	var ids []string
	send := func(n int) {
		for i := 0; i < n && len(ids) < cfg.requests; i++ {
			ids = append(ids, fs.request(len(ids)))
		}
	}
	batch := max(cfg.requests/6, 1)

	// 1. Work arrives; random jobs and schedulers are killed with -9.
	send(batch * 2)
	fs.waitRunning(2)
	for k := 0; k < cfg.kills; k++ {
		fs.killRandomJob()
		i := fs.randomLiveRunner()
		start := time.Now()
		fs.kill9Scheduler(i)
		time.Sleep(2 * time.Second)
		fs.startRunner(i)
		fs.waitHeartbeat(i, start)
		recovery[fmt.Sprintf("scheduler %d kill -9 #%d (restart after 2s)", i, k+1)] = time.Since(start)
		send(batch / 2)
	}

	// 2. Broker restart (SIGTERM).
	send(batch)
	fs.waitRunning(1)
	start := time.Now()
	fs.restartBroker(syscall.SIGTERM)
	fs.waitAllHeartbeats(start)
	recovery["broker restart #1 (SIGTERM)"] = time.Since(start)

	// Requests go round-robin over the partitions, one per runner: a
	// round of as many as there are partitions reaches every runner.
	round := max(batch, faultPartitions)

	// 3. Runner 2 cut off, then healed.
	send(round)
	fs.waitRunningOn(2)
	fs.event("cut runner 2 for %s", cfg.cut)
	fs.net.cut(2)
	cutAt := time.Now()
	if cfg.cut > faultStuck+2*time.Second {
		// The fence itself: the builds of runner 2 that were running when
		// its heartbeats stopped must be over before a survivor may take
		// their requests over.
		time.Sleep(faultStuck)
		if building := fs.buildingOn(2); len(building) > 0 {
			t.Errorf("runner 2 still builds %v %s after it was cut off from the broker: the fence did not stop it before a survivor may take over", building, faultStuck)
		} else {
			fs.event("runner 2 builds nothing %s after the cut", faultStuck)
		}
	}
	time.Sleep(time.Until(cutAt.Add(cfg.cut)))
	fs.net.heal(2)
	healed := time.Now()
	fs.event("healed runner 2")
	fs.waitHeartbeat(2, healed)
	recovery[fmt.Sprintf("runner 2 cut off %s, heartbeats back after healing", cfg.cut)] = time.Since(healed)

	// 4. A runner killed for good while it builds: the first one seen
	// building after a new round of requests.
	send(round)
	victim := fs.waitRunningOnAny()
	victimHost := fmt.Sprintf("runner%d", victim)
	orphans := fs.unansweredOf(victimHost)
	start = time.Now()
	fs.killRunnerForGood(victim)
	// A survivor reaches them in their partition's queue, behind the
	// requests sent before them that are not answered yet: with the
	// soak's backlog that is minutes of builds, not a takeover delay.
	finals, _, _ := fs.countFinals(ids)
	backlog := len(ids) - len(finals)
	fs.event("runner %d has %d unanswered requests of its own, the group %d", victim, len(orphans), backlog)
	fs.waitAcceptedElsewhere(orphans, victimHost, max(5*time.Minute, time.Duration(backlog)*20*time.Second))
	recovery[fmt.Sprintf("runner %d killed for good: its %d unanswered requests accepted by a survivor", victim, len(orphans))] = time.Since(start)
	// Two survivors build them, and the backlog before them, at their
	// build limit: the wait grows with the backlog.
	fs.waitFinals(orphans, max(10*time.Minute, time.Duration(backlog)*20*time.Second))
	recovery[fmt.Sprintf("runner %d killed for good: its %d unanswered requests answered by a survivor", victim, len(orphans))] = time.Since(start)

	// 5. More kills, then a broker crash (kill -9).
	for k := 0; k < cfg.kills; k++ {
		send(batch / 2)
		fs.killRandomJob()
	}
	send(cfg.requests)
	if finals, _, _ := fs.countFinals(ids); len(finals) < len(ids) {
		// The crash meets a build, unless every request is answered
		// already (the soak's long takeover phase can get that far).
		fs.waitRunning(1)
	}
	start = time.Now()
	fs.restartBroker(syscall.SIGKILL)
	fs.waitAllHeartbeats(start)
	recovery["broker restart #2 (kill -9)"] = time.Since(start)

	// Every request ends with exactly one final response, counted from
	// the topic, with nothing filtered.
	fs.waitFinals(ids, max(20*time.Minute, time.Duration(len(ids))*20*time.Second))
	time.Sleep(20 * time.Second) // a duplicate would come within the stuck timeout
	cancel()
	finals, succeeded, failed := fs.countFinals(ids)
	var bad []string
	for _, id := range ids {
		if finals[id] != 1 {
			bad = append(bad, fmt.Sprintf("%s: %d", id, finals[id]))
		}
	}
	if len(bad) > 0 {
		t.Errorf("requests without exactly one final response: %s", strings.Join(bad, ", "))
	}
	// No target built by two runners at once.
	for _, o := range fs.overlaps() {
		t.Errorf("built by two runners at once: %s", o)
	}
	// Every successful build is in the repository.
	fs.waitInRepository(succeeded)
	// No mount or process left once the services stopped.
	fs.stopAll()
	fs.checkNothingLeft()

	var names []string
	for k := range recovery {
		names = append(names, k)
	}
	sort.Strings(names)
	var b strings.Builder
	fmt.Fprintf(&b, "fault suite: %d requests, %d final responses on the topic, %d succeeded, %d failed, %d accepted by more than one runner\n",
		len(ids), sum(finals), len(succeeded), len(ids)-len(succeeded), fs.movedRequests(ids))
	for _, n := range names {
		fmt.Fprintf(&b, "  recovery: %-70s %s\n", n, recovery[n].Round(100*time.Millisecond))
	}
	for _, f := range failed {
		fmt.Fprintf(&b, "  failed: %s\n", f)
	}
	b.WriteString("  events:\n")
	fs.mu.Lock()
	for _, e := range fs.events {
		b.WriteString("    " + e + "\n")
	}
	fs.mu.Unlock()
	t.Log(b.String())
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

func newFaultSystem(t *testing.T, cfg faultConfig) *faultSystem {
	t.Helper()
	fs := &faultSystem{t: t, dir: t.TempDir(), dead: map[int]bool{}, rng: rand.New(rand.NewPCG(cfg.seed, 17)),
		hbSeen: map[string]time.Time{}, jobs: map[string]map[string][]jobSpan{}}
	fs.net = newTestNet(t, 3)
	fs.brokerAddr = fs.net.hubHostPort(9092)
	fs.dataDir = filepath.Join(fs.dir, "broker")
	fs.origin = filepath.Join(fs.dir, "origin.git")
	fs.repoRoot = filepath.Join(fs.dir, "repo")
	work := filepath.Join(fs.dir, "work")

	// Sources: cheap packages from cb-hello whose build sleeps a little,
	// so that faults meet builds that run.
	git(t, fs.dir, "init", "-q", "--bare", fs.origin)
	git(t, fs.dir, "clone", "-q", fs.origin, work)
	for i := 0; i < cfg.requests; i++ {
		name := faultPackage(i)
		dir := filepath.Join(work, "projects", "Fault", name)
		copyTree(t, filepath.Join(repoRoot, "examples", "projects", "Debian", "cb-hello"), dir)
		for _, f := range []string{"debian/control", "debian/changelog", ".cb/cloud_builder.yml", "Makefile", "debian/copyright"} {
			p := filepath.Join(dir, f)
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			s := strings.ReplaceAll(string(b), "cb-hello", name)
			if f == "Makefile" {
				s = strings.Replace(s, "\t$(CC)", fmt.Sprintf("\tsleep %d\n\t$(CC)", cfg.buildSleep), 1)
			}
			if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	git(t, work, "add", "-A")
	git(t, work, "commit", "-q", "-m", "fault suite packages")
	git(t, work, "push", "-q", "origin", "HEAD:main")

	tokenFile := filepath.Join(fs.dir, "upload.token")
	if err := os.WriteFile(tokenFile, []byte("fault-suite-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	collector := fs.net.hubHostPort(8080)
	// The broker config holds only the original's keys; ours go to the
	// runner config. The collector is plain HTTP on the test network's
	// hub address, not loopback: the runners must be told to send their
	// upload tickets there.
	brokerConfig := filepath.Join(fs.dir, "broker.yml")
	runnerConfig := filepath.Join(fs.dir, "runner.yml")
	for p, cfg := range map[string]string{
		brokerConfig: fmt.Sprintf("broker:\n  host: %s\nrunner:\n  group: debian\n", fs.brokerAddr),
		runnerConfig: fmt.Sprintf("collector:\n  url: http://%s\n  token_file: %s\n  allow_plain_http: true\n", collector, tokenFile),
	} {
		if err := os.WriteFile(p, []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// Runners reach the Debian mirror's index (for the buildroot cache
	// key) through a proxy whose socket lives in the hub; the builds
	// themselves have no network.
	proxy := fs.net.hubHostPort(3128)
	fs.startProxy(proxy)
	fs.env = []string{
		"CB_BROKER_CONFIG=" + brokerConfig,
		"CB_RUNNER_CONFIG=" + runnerConfig,
		"CB_SETTINGS=" + filepath.Join(fs.dir, "cloud_builder"),
		"CB_REPO_ROOT=" + fs.repoRoot,
		"HTTP_PROXY=http://" + proxy, "http_proxy=http://" + proxy,
		"NO_PROXY=" + fs.net.hubAddr, "no_proxy=" + fs.net.hubAddr,
	}
	fs.startBroker()
	fs.kcl = fs.client()
	go fs.readResponses()
	startIn(t, fs.env, fs.net.hub, "cb-collect", "--listen", collector, "--repo-root", fs.repoRoot,
		"--state-dir", filepath.Join(fs.dir, "collector"), "--token-file", tokenFile,
		"--project", "file://"+fs.origin, "--branch", "main", "--update-interval", "2")
	for i := 1; i <= 3; i++ {
		git(t, fs.dir, "clone", "-q", "--branch", "main", fs.origin, filepath.Join(fs.dir, fmt.Sprintf("sources%d", i)))
		fs.startRunner(i)
	}
	for i := 1; i <= 3; i++ {
		fs.waitHeartbeat(i, time.Time{})
	}
	return fs
}

// faultPartitions is the runner group topic's partition count: one per
// runner.
const faultPartitions = 3

func faultPackage(i int) string { return fmt.Sprintf("cb-fault-%03d", i) }

func (fs *faultSystem) event(format string, args ...any) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.events = append(fs.events, time.Now().Format("15:04:05.0")+" "+fmt.Sprintf(format, args...))
}

// startIn runs bin/<prog> inside network namespace ns. nsenter enters
// only the network namespace; "ip netns exec" would also mount a new
// /sys, without the cgroup file systems below it, and every build would
// fail at once for want of a cgroup to limit it.
func startIn(t *testing.T, env []string, ns, prog string, args ...string) *proc {
	t.Helper()
	nsenter, err := exec.LookPath("nsenter")
	if err != nil {
		t.Fatal(err)
	}
	return startPath(t, env, nsenter, append([]string{"--net=/run/netns/" + ns, "--", filepath.Join(bin, prog)}, args...)...)
}

func (fs *faultSystem) startBroker() {
	fs.broker = startIn(fs.t, fs.env, fs.net.hub, "cb", "broker", "--listen", fs.brokerAddr, "--advertise", fs.net.hubAddr,
		"--data-dir", fs.dataDir, "--runner-group", "debian", "--partitions", strconv.Itoa(faultPartitions))
}

func (fs *faultSystem) restartBroker(sig syscall.Signal) {
	fs.event("broker %s", sig)
	_ = fs.broker.cmd.Process.Signal(sig)
	select {
	case <-fs.broker.done:
	case <-time.After(30 * time.Second):
		fs.broker.kill9()
	}
	time.Sleep(2 * time.Second)
	fs.startBroker()
	fs.event("broker started again")
}

func (fs *faultSystem) runnerRoot(i int) string {
	return filepath.Join(fs.dir, fmt.Sprintf("runner%d", i))
}

func (fs *faultSystem) startRunner(i int) {
	args := append([]string{"--runner-root", fs.runnerRoot(i), "--sources", filepath.Join(fs.dir, fmt.Sprintf("sources%d", i)),
		"--runner-group", "debian", "--this-host", fmt.Sprintf("runner%d", i), "--cache-dir", cacheDir()}, faultRunnerFlags...)
	fs.runners[i] = startIn(fs.t, fs.env, fs.net.member(i), "cb-scheduler", args...)
	fs.event("runner %d scheduler started", i)
}

// keepLogs copies the schedulers' logs and every job's logs and journal
// entry out of the test's directory, which is removed, so that a failure
// far into the suite can be read afterwards.
func (fs *faultSystem) keepLogs() {
	keep, err := os.MkdirTemp("", "cb-fault-logs-")
	if err != nil {
		fs.t.Log(err)
		return
	}
	for i := 1; i <= 3; i++ {
		dst := filepath.Join(keep, fmt.Sprintf("runner%d", i))
		if fs.runners[i] != nil {
			_ = os.MkdirAll(dst, 0o755)
			_ = os.WriteFile(filepath.Join(dst, "scheduler.log"), []byte(fs.runners[i].log.String()), 0o644)
		}
		root := fs.runnerRoot(i)
		_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err != nil {
				return nil
			}
			if d.IsDir() && strings.Count(strings.TrimPrefix(p, root), "/") > 3 {
				return filepath.SkipDir
			}
			if d.IsDir() || !(strings.HasSuffix(p, ".log") || strings.HasSuffix(p, ".yml")) {
				return nil
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return nil
			}
			out := filepath.Join(dst, strings.ReplaceAll(strings.TrimPrefix(p, root+"/"), "/", "_"))
			_ = os.WriteFile(out, b, 0o644)
			return nil
		})
	}
	if fs.broker != nil {
		_ = os.WriteFile(filepath.Join(keep, "broker.log"), []byte(fs.broker.log.String()), 0o644)
	}
	fs.t.Logf("logs kept in %s", keep)
}

func (fs *faultSystem) kill9Scheduler(i int) {
	fs.event("kill -9 scheduler of runner %d", i)
	fs.runners[i].kill9()
}

// jobPIDs returns the running jobs of runner i by request id.
func (fs *faultSystem) jobPIDs(i int) map[string]int {
	out := map[string]int{}
	journalDir := filepath.Join(fs.runnerRoot(i), "journal") + "/"
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		for k, a := range args {
			if a == "--journal" && k+1 < len(args) && strings.HasPrefix(args[k+1], journalDir) {
				pid, _ := strconv.Atoi(strings.Split(p, "/")[2])
				out[strings.TrimSuffix(filepath.Base(args[k+1]), ".yml")] = pid
			}
		}
	}
	return out
}

func (fs *faultSystem) killRandomJob() {
	var live []int
	for i := 1; i <= 3; i++ {
		if !fs.dead[i] && len(fs.jobPIDs(i)) > 0 {
			live = append(live, i)
		}
	}
	if len(live) == 0 {
		fs.event("no job to kill")
		return
	}
	i := live[fs.rng.IntN(len(live))]
	jobs := fs.jobPIDs(i)
	var ids []string
	for id := range jobs {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	id := ids[fs.rng.IntN(len(ids))]
	fs.event("kill -9 job of request %s on runner %d (pid %d, with its process group)", id, i, jobs[id])
	_ = syscall.Kill(-jobs[id], syscall.SIGKILL)
}

func (fs *faultSystem) killRunnerForGood(i int) {
	fs.event("runner %d killed for good", i)
	fs.dead[i] = true
	fs.runners[i].kill9()
	for _, pid := range fs.jobPIDs(i) {
		_ = syscall.Kill(-pid, syscall.SIGKILL)
	}
}

func (fs *faultSystem) randomLiveRunner() int {
	var live []int
	for i := 1; i <= 3; i++ {
		if !fs.dead[i] {
			live = append(live, i)
		}
	}
	return live[fs.rng.IntN(len(live))]
}

// client is a plain Kafka client whose connections start in the hub.
func (fs *faultSystem) client() *kgo.Client {
	cl, err := kgo.NewClient(kgo.SeedBrokers(fs.brokerAddr), kgo.Dialer(fs.net.hubNS.dial),
		kgo.ConsumeTopics(message.TopicResponse, message.TopicHeartbeat), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.RecordPartitioner(kgo.RoundRobinPartitioner()), kgo.AllowAutoTopicCreation())
	if err != nil {
		fs.t.Fatal(err)
	}
	fs.t.Cleanup(cl.Close)
	return cl
}

// readResponses keeps every record of cb-response and the time each
// runner's heartbeat was last seen.
func (fs *faultSystem) readResponses() {
	for {
		f := fs.kcl.PollFetches(context.Background())
		if f.IsClientClosed() {
			return
		}
		f.EachRecord(func(r *kgo.Record) {
			switch r.Topic {
			case message.TopicResponse:
				if resp, err := message.DecodeResponse(r.Value); err == nil {
					fs.mu.Lock()
					fs.records = append(fs.records, resp)
					fs.mu.Unlock()
				}
			case message.TopicHeartbeat:
				if hb, err := message.DecodeHeartbeat(r.Value); err == nil {
					fs.mu.Lock()
					fs.hbSeen[hb.SourceIP] = time.Now()
					fs.mu.Unlock()
				}
			}
		})
	}
}

func (fs *faultSystem) request(i int) string {
	fs.t.Helper()
	id := uuid.NewString()
	data, err := message.Encode(&message.BuildRequest{SchemaVersion: message.SchemaVersion, RequestID: id, RunnerGroup: "debian",
		Action: message.ActionPackageRebuild, Project: "projects/Fault/" + faultPackage(i),
		Package: &message.PackageTarget{Dist: "bookworm", Arch: "x86_64"}})
	if err != nil {
		fs.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := fs.kcl.ProduceSync(ctx, &kgo.Record{Topic: "debian", Value: data}).FirstErr(); err != nil {
		fs.t.Fatalf("send request: %v", err)
	}
	return id
}

func (fs *faultSystem) waitHeartbeat(i int, after time.Time) {
	fs.t.Helper()
	host := fmt.Sprintf("runner%d", i)
	waitFor(fs.t, 3*time.Minute, "a heartbeat of "+host, func() bool {
		if r := fs.runners[i]; r != nil && !fs.dead[i] {
			select {
			case <-r.done:
				// A scheduler that exited will never beat: say so now
				// rather than after the timeout.
				fs.t.Fatalf("scheduler of %s exited before its first heartbeat:\n%s", host, r.log.String())
			default:
			}
		}
		fs.mu.Lock()
		defer fs.mu.Unlock()
		return fs.hbSeen[host].After(after)
	})
}

func (fs *faultSystem) waitAllHeartbeats(after time.Time) {
	for i := 1; i <= 3; i++ {
		if !fs.dead[i] {
			fs.waitHeartbeat(i, after)
		}
	}
}

func (fs *faultSystem) waitRunning(n int) {
	fs.t.Helper()
	waitFor(fs.t, 5*time.Minute, fmt.Sprintf("%d running builds", n), func() bool {
		total := 0
		for i := 1; i <= 3; i++ {
			if !fs.dead[i] {
				total += len(fs.jobPIDs(i))
			}
		}
		return total >= n
	})
}

// waitRunningOnAny returns a live runner with a running build.
func (fs *faultSystem) waitRunningOnAny() int {
	fs.t.Helper()
	found := 0
	waitFor(fs.t, 5*time.Minute, "a build on any runner", func() bool {
		for i := 1; i <= 3; i++ {
			if !fs.dead[i] && len(fs.jobPIDs(i)) > 0 {
				found = i
				return true
			}
		}
		return false
	})
	return found
}

func (fs *faultSystem) waitRunningOn(i int) {
	fs.t.Helper()
	waitFor(fs.t, 5*time.Minute, fmt.Sprintf("a build on runner %d", i), func() bool { return len(fs.jobPIDs(i)) > 0 })
}

// buildingOn returns the requests whose job on runner i is alive with its
// journal entry "running".
func (fs *faultSystem) buildingOn(i int) []string {
	var out []string
	for id := range fs.buildingJobs(i) {
		out = append(out, id)
	}
	sort.Strings(out)
	return out
}

// buildingJobs returns the job pids of runner i whose journal entry is
// "running", by request id.
func (fs *faultSystem) buildingJobs(i int) map[string]int {
	out := map[string]int{}
	for id, pid := range fs.jobPIDs(i) {
		entry, err := os.ReadFile(filepath.Join(fs.runnerRoot(i), "journal", id+".yml"))
		if err == nil && journalRunning.Match(entry) {
			out[id] = pid
		}
	}
	return out
}

var journalRunning = regexp.MustCompile(`(?m)^state: running$`)

// unansweredOf returns the requests host accepted that have no final
// response yet.
func (fs *faultSystem) unansweredOf(host string) []string {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	accepted := map[string]bool{}
	final := map[string]bool{}
	for _, r := range fs.records {
		if message.IsFinal(r.ResponseCode) {
			final[r.RequestID] = true
		} else if r.ResponseCode == message.PackageRequestAccepted && message.IdentityHost(r.Identity) == host {
			accepted[r.RequestID] = true
		}
	}
	var out []string
	for id := range accepted {
		if !final[id] {
			out = append(out, id)
		}
	}
	return out
}

// acceptedBy returns, per request, the runners that accepted it.
func (fs *faultSystem) acceptedBy() map[string]map[string]bool {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	out := map[string]map[string]bool{}
	for _, r := range fs.records {
		if r.ResponseCode == message.PackageRequestAccepted {
			if out[r.RequestID] == nil {
				out[r.RequestID] = map[string]bool{}
			}
			out[r.RequestID][message.IdentityHost(r.Identity)] = true
		}
	}
	return out
}

// waitAcceptedElsewhere waits until a runner other than host accepted
// each of ids.
func (fs *faultSystem) waitAcceptedElsewhere(ids []string, host string, timeout time.Duration) {
	fs.t.Helper()
	waitFor(fs.t, timeout, fmt.Sprintf("%d requests of %s accepted elsewhere", len(ids), host), func() bool {
		by := fs.acceptedBy()
		for _, id := range ids {
			n := len(by[id])
			if by[id][host] {
				n--
			}
			if n == 0 {
				return false
			}
		}
		return true
	})
}

// movedRequests counts requests accepted by more than one runner: built
// again after their runner died, was cut off or its job was killed.
func (fs *faultSystem) movedRequests(ids []string) int {
	by := fs.acceptedBy()
	n := 0
	for _, id := range ids {
		if len(by[id]) > 1 {
			n++
		}
	}
	return n
}

func (fs *faultSystem) waitFinals(ids []string, timeout time.Duration) {
	fs.t.Helper()
	waitFor(fs.t, timeout, fmt.Sprintf("final responses of %d requests", len(ids)), func() bool {
		c, _, _ := fs.countFinals(ids)
		for _, id := range ids {
			if c[id] == 0 {
				return false
			}
		}
		return true
	})
}

// countFinals counts final responses per request and lists the packages
// whose build succeeded.
func (fs *faultSystem) countFinals(ids []string) (counts map[string]int, succeeded, failed []string) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	want := map[string]bool{}
	for _, id := range ids {
		want[id] = true
	}
	c := map[string]int{}
	var ok []string
	for _, r := range fs.records {
		if want[r.RequestID] && message.IsFinal(r.ResponseCode) {
			c[r.RequestID]++
			if r.ResponseCode == message.PackageBuildSucceeded {
				ok = append(ok, filepath.Base(r.Project))
			} else {
				failed = append(failed, fmt.Sprintf("%s (%s by %s): %s", filepath.Base(r.Project), r.ResponseCode, r.Identity, r.Message))
			}
		}
	}
	return c, ok, failed
}

// jobSpan is one stretch of samples in which a runner's job of a request
// was alive with its journal entry "running": first and last sample seen,
// and the sample number of the last one.
type jobSpan struct {
	first, last time.Time
	pid         int
	sample      int
}

// sampleJobs records, every 200ms, which runner builds which request: a
// live job whose journal entry is running. A job that released its
// request (fenced) or recorded its final response may still be ending
// (its broker client closing); it builds nothing any more.
func (fs *faultSystem) sampleJobs(ctx context.Context) {
	for n := 1; ctx.Err() == nil; n++ {
		now := time.Now()
		for i := 1; i <= 3; i++ {
			for id, pid := range fs.buildingJobs(i) {
				fs.mu.Lock()
				m := fs.jobs[id]
				if m == nil {
					m = map[string][]jobSpan{}
					fs.jobs[id] = m
				}
				host := fmt.Sprintf("runner%d", i)
				spans := m[host]
				// A span goes on only if the same job was seen in the
				// sample before: a job that ended and a later one of the
				// same request on the same runner are two spans, not one.
				if k := len(spans) - 1; k >= 0 && spans[k].pid == pid && spans[k].sample == n-1 {
					spans[k].last, spans[k].sample = now, n
				} else {
					spans = append(spans, jobSpan{first: now, last: now, pid: pid, sample: n})
				}
				m[host] = spans
				fs.mu.Unlock()
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// overlaps lists requests whose jobs were seen building on two runners at
// the same time.
func (fs *faultSystem) overlaps() []string {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	var out []string
	for id, m := range fs.jobs {
		var hosts []string
		for h := range m {
			hosts = append(hosts, h)
		}
		sort.Strings(hosts)
		for a := 0; a < len(hosts); a++ {
			for b := a + 1; b < len(hosts); b++ {
				for _, x := range m[hosts[a]] {
					for _, y := range m[hosts[b]] {
						if !x.first.After(y.last) && !y.first.After(x.last) {
							out = append(out, fmt.Sprintf("%s on %s %s–%s (pid %d) and %s %s–%s (pid %d)", id,
								hosts[a], x.first.Format("15:04:05.0"), x.last.Format("15:04:05.0"), x.pid,
								hosts[b], y.first.Format("15:04:05.0"), y.last.Format("15:04:05.0"), y.pid))
						}
					}
				}
			}
		}
	}
	return out
}

func (fs *faultSystem) waitInRepository(packages []string) {
	fs.t.Helper()
	dir := filepath.Join(fs.repoRoot, "projects", "Fault", "bookworm")
	var missing []string
	waitFor(fs.t, 5*time.Minute, "every successful build in the repository index", func() bool {
		idx := repoIndex(fs.t, dir)
		missing = missing[:0]
		for _, p := range packages {
			if !strings.Contains(idx, "Package: "+p+"\n") {
				missing = append(missing, p)
			}
		}
		return len(missing) == 0
	})
}

func (fs *faultSystem) stopAll() {
	for i := 1; i <= 3; i++ {
		if fs.runners[i] != nil {
			fs.runners[i].stop(time.Minute)
		}
	}
}

// checkNothingLeft fails when a process of the suite still runs or a
// mount below its directory remains.
func (fs *faultSystem) checkNothingLeft() {
	fs.t.Helper()
	time.Sleep(2 * time.Second)
	for i := 1; i <= 3; i++ {
		if jobs := fs.jobPIDs(i); len(jobs) > 0 {
			fs.t.Errorf("runner %d left job processes: %v", i, jobs)
		}
		out, _ := exec.Command("ip", "netns", "pids", fs.net.member(i)).Output()
		if len(bytes.TrimSpace(out)) > 0 {
			fs.t.Errorf("processes left in runner %d's namespace: %s", i, strings.Fields(string(out)))
		}
	}
	if m := mounts(fs.t, fs.dir); len(m) > 0 {
		fs.t.Errorf("mounts left: %v", m)
	}
}

// startProxy serves plain-HTTP proxy requests on addr in the hub and
// forwards them from this (host) namespace.
func (fs *faultSystem) startProxy(addr string) {
	ln, err := fs.net.hubNS.listen(addr)
	if err != nil {
		fs.t.Fatal(err)
	}
	srv := &http.Server{Handler: &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		r.Out.URL = r.In.URL // absolute in a proxy request
		r.Out.Host = r.In.URL.Host
	}}, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	fs.t.Cleanup(func() { _ = srv.Close() })
}
