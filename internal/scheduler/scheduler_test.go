package scheduler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cloud-builder/cb/internal/artifact"
	"github.com/cloud-builder/cb/internal/broker"
	"github.com/cloud-builder/cb/internal/journal"
	"github.com/cloud-builder/cb/internal/message"
	"github.com/cloud-builder/cb/internal/target"
)

// These tests run the scheduler without root on the embedded broker. The
// job command is a small shell script that does what a job does to the
// runner state, steered per request id by files in a control directory:
//
//	<id>.mode    "finish" (default), "die", or "wait" for <id>.go
//	<id>.go      what a waiting job does next: "finish" or "die"
//	<id>.result  the final response a finishing job records
//	<id>.target  the result file path of the request's target
//
// It counts its starts in <id>.starts and leaves its pid in <id>.pid.
// A finishing job records its result file and marks its journal entry
// finished; the scheduler then publishes the response (as recovery
// does after a job crashed between the two), so the script needs no
// broker client.
const jobScript = `#!/bin/sh
set -eu
[ "$1" = --journal ] || { echo "usage: job --journal FILE" >&2; exit 2; }
j=$2
id=$(basename "$j" .yml)
c="$CB_TEST_CONTROL/$id"
echo x >> "$c.starts"
echo $$ > "$c.pid"
attempts=$(sed -n 's/^attempts: //p' "$j")
sed -i -e '/^pid:/d' -e 's/^state: .*/state: running/' -e "s/^attempts: .*/attempts: $((attempts + 1))/" "$j"
echo "pid: $$" >> "$j"
mode=finish
[ -e "$c.mode" ] && mode=$(cat "$c.mode")
if [ "$mode" = wait ]; then
	while [ ! -e "$c.go" ]; do sleep 0.05; done
	mode=$(cat "$c.go")
fi
case "$mode" in
finish)
	cp "$c.result" "$(cat "$c.target")"
	code=$(sed -n 's/^response_code: //p' "$c.result")
	sed -i -e 's/^state: .*/state: finished/' -e '/^response_code:/d' "$j"
	echo "response_code: $code" >> "$j"
	exit 0;;
die)
	exit 3;;
esac
echo "unknown mode $mode" >&2
exit 2
`

// rig is a scheduler under test: the broker, the runner root, the control
// directory of the job script and a reader of the response topic.
type rig struct {
	t        *testing.T
	opts     broker.Options
	client   *broker.Client
	root     string
	sources  string
	control  string
	script   string
	limit    int
	resp     *broker.Consumer
	received []*message.Response
	// artifactURL is the scheduler's ArtifactURL; artifactHeaders the
	// cb-artifact-url header of each response received, by request id
	// and code.
	artifactURL     string
	artifactHeaders map[string]string
}

const testGroup = "suse"

func newRig(t *testing.T) *rig {
	t.Helper()
	e, err := broker.StartEmbedded(broker.EmbeddedOptions{Listen: "127.0.0.1:0", DataDir: t.TempDir(), Partitions: 1,
		Topics: []string{testGroup}, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	r := &rig{t: t, opts: broker.Options{Brokers: e.Addrs(), Logger: quietLogger()}, root: t.TempDir(),
		sources: sourceTree(t), control: t.TempDir(), limit: 10}
	r.script = filepath.Join(t.TempDir(), "job")
	if err := os.WriteFile(r.script, []byte(jobScript), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("CB_TEST_CONTROL", r.control)
	if r.client, err = broker.New(r.opts); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.client.Close)
	r.resp, err = broker.NewConsumer(r.opts, broker.ConsumerConfig{Topics: []string{message.TopicResponse}, Start: broker.Earliest})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.resp.Close)
	return r
}

func quietLogger() *slog.Logger {
	level := slog.LevelError
	if os.Getenv("CB_TEST_LOG") != "" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

// start runs a scheduler until the test ends (or stop is called).
func (r *rig) start() (stop func()) {
	r.t.Helper()
	consumer, err := broker.NewConsumer(r.opts, broker.ConsumerConfig{Group: testGroup, Topics: []string{testGroup}, Start: broker.Earliest})
	if err != nil {
		r.t.Fatal(err)
	}
	s, err := New(Config{RunnerGroup: testGroup, RunnerRoot: r.root, Sources: r.sources, ThisHost: "runner-1",
		HostArch: "x86_64", BuildLimit: r.limit, PollTimeout: 200 * time.Millisecond, JobCommand: []string{r.script},
		Consumer: consumer, Publisher: r.client, Logger: quietLogger(), StopGrace: 2 * time.Second, ArtifactURL: r.artifactURL})
	if err != nil {
		r.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			r.t.Errorf("scheduler: %v", err)
		}
		consumer.Close()
	}
	r.t.Cleanup(stop)
	return stop
}

// request publishes a build request. mode steers its job; final is the
// response code a finishing job records.
func (r *rig) request(req *message.BuildRequest, mode string) {
	r.t.Helper()
	r.control1(req, mode)
	data, err := message.Encode(req)
	if err != nil {
		r.t.Fatal(err)
	}
	if err := r.client.Publish(context.Background(), testGroup, data); err != nil {
		r.t.Fatal(err)
	}
}

// control1 writes the control files of req's job.
func (r *rig) control1(req *message.BuildRequest, mode string) {
	r.t.Helper()
	t, err := target.ForRequest(r.root, req)
	if err != nil {
		r.t.Fatal(err)
	}
	code := message.PackageBuildSucceeded
	if req.IsImage() {
		code = message.ImageBuildSucceeded
	}
	final, err := message.Encode(&message.Response{SchemaVersion: message.SchemaVersion, RequestID: req.RequestID,
		Identity: message.Identity(message.ServiceRun, "runner-1", req.Name()), Project: req.Project,
		ResponseCode: code, Message: "built by the test job"})
	if err != nil {
		r.t.Fatal(err)
	}
	r.write(req.RequestID+".result", string(final))
	r.write(req.RequestID+".target", t.ResultFile())
	r.write(req.RequestID+".mode", mode)
}

func (r *rig) write(name, content string) {
	r.t.Helper()
	if err := os.WriteFile(filepath.Join(r.control, name), []byte(content), 0o644); err != nil {
		r.t.Fatal(err)
	}
}

// release tells a waiting job what to do next.
func (r *rig) release(id, what string) { r.write(id+".go", what) }

func (r *rig) starts(id string) int {
	b, _ := os.ReadFile(filepath.Join(r.control, id+".starts"))
	return strings.Count(string(b), "x")
}

// waitStarted waits until the job of id has started n times in all.
func (r *rig) waitStarted(id string, n int) {
	r.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for r.starts(id) < n {
		if time.Now().After(deadline) {
			r.t.Fatalf("job %s started %d times, want %d", id, r.starts(id), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// expect reads responses until one for id with code arrives and returns
// it; responses read on the way are kept for later expectations.
func (r *rig) expect(id string, code message.ResponseCode) *message.Response {
	r.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		for i, m := range r.received {
			if m.RequestID == id && m.ResponseCode == code {
				r.received = append(r.received[:i], r.received[i+1:]...)
				return m
			}
		}
		if time.Now().After(deadline) {
			var got []string
			for _, m := range r.received {
				got = append(got, m.RequestID+": "+string(m.ResponseCode)+" ("+m.Message+")")
			}
			r.t.Fatalf("no %q response for %s; received %q", code, id, got)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		recs, _ := r.resp.Poll(ctx)
		cancel()
		for _, rec := range recs {
			m, err := message.DecodeResponse(rec.Value)
			if err != nil {
				r.t.Fatalf("undecodable response %q: %v", rec.Value, err)
			}
			r.received = append(r.received, m)
			if r.artifactHeaders == nil {
				r.artifactHeaders = map[string]string{}
			}
			r.artifactHeaders[m.RequestID+"/"+string(m.ResponseCode)] = rec.Header(broker.HeaderArtifactURL)
		}
	}
}

// noResponse checks that no response for id arrives within d.
func (r *rig) noResponse(id string, d time.Duration) {
	r.t.Helper()
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		recs, _ := r.resp.Poll(ctx)
		cancel()
		for _, rec := range recs {
			m, err := message.DecodeResponse(rec.Value)
			if err != nil {
				r.t.Fatal(err)
			}
			r.received = append(r.received, m)
		}
	}
	for _, m := range r.received {
		if m.RequestID == id {
			r.t.Fatalf("unexpected response for %s: %s (%s)", id, m.ResponseCode, m.Message)
		}
	}
}

func (r *rig) entry(id string) *journal.Entry {
	r.t.Helper()
	e, err := journal.Load(filepath.Join(r.root, "journal", id+".yml"))
	if err != nil {
		r.t.Fatal(err)
	}
	return e
}

// waitState waits until the journal entry of id reaches state.
func (r *rig) waitState(id string, state journal.State) *journal.Entry {
	r.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		e, err := journal.Load(filepath.Join(r.root, "journal", id+".yml"))
		if err == nil && e.State == state {
			return e
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("journal entry %s: %+v, %v; want state %s", id, e, err, state)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func req(id string, base *message.BuildRequest) *message.BuildRequest {
	c := *base
	c.RequestID = id
	c.SchemaVersion = message.SchemaVersion
	return &c
}

// TestSchedulerValidationChain sends one request per step of the chain
// through the broker: each rejected one gets its code and no job, the
// valid ones are journaled, built and answered.
func TestSchedulerValidationChain(t *testing.T) {
	r := newRig(t)
	r.start()
	for _, tc := range []struct {
		id   string
		req  *message.BuildRequest
		code message.ResponseCode
	}{
		{"r-missing", pkgRequest("projects/MS/nothere", "TW", "x86_64"), message.ProjectDoesNotExist},
		{"r-nometa", pkgRequest("projects/MS/nometa", "TW", "x86_64"), message.ProjectMetadataDoesNotExist},
		{"r-broken", pkgRequest("projects/MS/broken", "TW", "x86_64"), message.InvalidPackageMetadata},
		{"r-nodist", pkgRequest("projects/MS/xclock", "SLE", "x86_64"), message.PackageTargetNotConfigured},
		{"r-arch", pkgRequest("projects/MS/xclock", "TW", "aarch64"), message.IncompatibleBuildArch},
		{"r-evil", imgRequest("projects/images/disk", "evil", "x86_64"), message.InvalidPackageMetadata},
	} {
		r.request(req(tc.id, tc.req), "finish")
		r.expect(tc.id, tc.code)
		if n := r.starts(tc.id); n != 0 {
			t.Errorf("%s: rejected request started %d jobs", tc.id, n)
		}
	}
	other := req("r-group", pkgRequest("projects/MS/xclock", "TW", "x86_64"))
	other.RunnerGroup = "debian"
	r.request(other, "finish")
	r.expect("r-group", message.PackageTargetNotConfigured)

	// Garbage with a request id is answered; without one it is skipped
	// and does not block the requests behind it.
	for _, raw := range []string{"schema_version: 0.2\nrequest_id: r-garbage\naction: nonsense\n", "\x00\x01 not yaml at all"} {
		if err := r.client.Publish(context.Background(), testGroup, []byte(raw)); err != nil {
			t.Fatal(err)
		}
	}
	r.expect("r-garbage", message.InvalidRequest)

	r.request(req("r-pkg", pkgRequest("projects/MS/xclock", "TW", "x86_64")), "finish")
	r.expect("r-pkg", message.PackageRequestAccepted)
	final := r.expect("r-pkg", message.PackageBuildSucceeded)
	if final.Message != "built by the test job" {
		t.Errorf("final response %+v is not the job's", final)
	}
	r.request(req("r-img", imgRequest("projects/images/disk", "standard", "x86_64")), "finish")
	r.expect("r-img", message.ImageRequestAccepted)
	r.expect("r-img", message.ImageBuildSucceeded)
	for _, id := range []string{"r-pkg", "r-img"} {
		e := r.waitState(id, journal.Responded)
		if r.starts(id) != 1 || e.Attempts != 1 {
			t.Errorf("%s: %d starts, %d attempts; want 1", id, r.starts(id), e.Attempts)
		}
	}
	tg, _ := target.ForRequest(r.root, req("r-pkg", pkgRequest("projects/MS/xclock", "TW", "x86_64")))
	if script, err := os.ReadFile(tg.Script()); err != nil || !strings.Contains(string(script), "exec "+r.script+" --journal ") {
		t.Errorf("%s: %q, %v", tg.Script(), script, err)
	}
}

// TestSchedulerBuildLimit: with a limit of one, a second request is not
// even consumed while the first builds; it is once the first ended.
func TestSchedulerBuildLimit(t *testing.T) {
	r := newRig(t)
	r.limit = 1
	r.start()
	r.request(req("r-first", pkgRequest("projects/MS/xclock", "TW", "x86_64")), "wait")
	r.expect("r-first", message.PackageRequestAccepted)
	r.waitStarted("r-first", 1)
	r.request(req("r-second", imgRequest("projects/images/disk", "standard", "x86_64")), "finish")
	// Paused: not accepted, not journaled, not started.
	r.noResponse("r-second", 1500*time.Millisecond)
	if _, err := os.Stat(filepath.Join(r.root, "journal", "r-second.yml")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("second request journaled while the limit was reached: %v", err)
	}
	scheduled, _ := filepath.Glob(filepath.Join(r.root, "scheduled", "*.pid"))
	if len(scheduled) != 1 {
		t.Errorf("scheduled files %q, want one", scheduled)
	}
	r.release("r-first", "finish")
	r.expect("r-first", message.PackageBuildSucceeded)
	r.expect("r-second", message.ImageRequestAccepted)
	r.expect("r-second", message.ImageBuildSucceeded)
	if r.starts("r-second") != 1 {
		t.Errorf("second job started %d times", r.starts("r-second"))
	}
}

// TestSchedulerReset: a request for a target that is building kills the
// old job's process group and answers for both requests.
func TestSchedulerReset(t *testing.T) {
	r := newRig(t)
	r.start()
	base := pkgRequest("projects/MS/xclock", "TW", "x86_64")
	r.request(req("r-old", base), "wait")
	r.expect("r-old", message.PackageRequestAccepted)
	r.waitStarted("r-old", 1)
	oldPID := r.pidOf("r-old")
	r.request(req("r-new", base), "finish")
	r.expect("r-new", message.PackageRequestAccepted)
	reset := r.expect("r-new", message.ResetRunningBuild)
	if !strings.Contains(reset.Message, fmt.Sprint(oldPID)) {
		t.Errorf("reset response %q does not name the old job %d", reset.Message, oldPID)
	}
	old := r.expect("r-old", message.PackageBuildFailed)
	if !strings.Contains(old.Message, "reset by a newer request") {
		t.Errorf("old request's final response: %q", old.Message)
	}
	r.expect("r-new", message.PackageBuildSucceeded)
	if err := syscall.Kill(oldPID, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("old job %d still exists after the reset: %v", oldPID, err)
	}
	if e := r.entry("r-old"); e.State != journal.Responded || e.Code != string(message.PackageBuildFailed) {
		t.Errorf("old entry %+v", e)
	}
	if r.starts("r-old") != 1 {
		t.Errorf("old job started %d times", r.starts("r-old"))
	}
}

func (r *rig) pidOf(id string) int {
	r.t.Helper()
	b, err := os.ReadFile(filepath.Join(r.control, id+".pid"))
	if err != nil {
		r.t.Fatal(err)
	}
	var pid int
	fmt.Sscan(string(b), &pid)
	return pid
}

// journalEntry journals req as the scheduler would have before a crash.
func (r *rig) journalEntry(req *message.BuildRequest) *journal.Entry {
	r.t.Helper()
	j, err := journal.Open(r.root)
	if err != nil {
		r.t.Fatal(err)
	}
	e, _, err := j.Add(req, false)
	if err != nil {
		r.t.Fatal(err)
	}
	return e
}

// TestSchedulerRecovery restarts on a journal a crashed scheduler left:
// a job that still runs is adopted (not started again), a job that died
// is started again, and a recorded final response is sent without a
// build.
func TestSchedulerRecovery(t *testing.T) {
	r := newRig(t)

	// Live: its job still runs from before the crash.
	live := req("r-live", pkgRequest("projects/MS/xclock", "TW", "x86_64"))
	liveEntry := r.journalEntry(live)
	r.control1(live, "wait")
	cmd := exec.Command(r.script, "--journal", liveEntry.Path())
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	r.waitState("r-live", journal.Running)

	// Dead: running, but its process is gone.
	dead := req("r-dead", imgRequest("projects/images/disk", "standard", "x86_64"))
	deadEntry := r.journalEntry(dead)
	r.control1(dead, "finish")
	gone := exec.Command("true")
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	deadEntry.PID, deadEntry.Attempts = gone.Process.Pid, 1
	if err := deadEntry.Advance(journal.Running); err != nil {
		t.Fatal(err)
	}

	// Finished: the result is recorded, the response was not sent.
	sent := req("r-sent", pkgRequest("projects/MS/other", "TW", "x86_64"))
	sentEntry := r.journalEntry(sent)
	st, _ := target.ForRequest(r.root, sent)
	if err := os.MkdirAll(filepath.Dir(st.ResultFile()), 0o755); err != nil {
		t.Fatal(err)
	}
	recorded := &message.Response{SchemaVersion: message.SchemaVersion, RequestID: "r-sent", Project: sent.Project,
		Identity: message.Identity(message.ServiceRun, "runner-1", "other"), ResponseCode: message.PackageBuildFailed,
		Message: "Package build failed with exit code 2"}
	data, err := message.Encode(recorded)
	if err != nil {
		t.Fatal(err)
	}
	if err := journal.WriteResult(st, data); err != nil {
		t.Fatal(err)
	}
	sentEntry.Code = string(recorded.ResponseCode)
	if err := sentEntry.Advance(journal.Finished); err != nil {
		t.Fatal(err)
	}

	r.start()
	got := r.expect("r-sent", message.PackageBuildFailed)
	if got.Message != recorded.Message {
		t.Errorf("resent %q, want the recorded %q", got.Message, recorded.Message)
	}
	r.waitState("r-sent", journal.Responded)
	r.expect("r-dead", message.ImageBuildSucceeded)
	if n := r.starts("r-dead"); n != 1 {
		t.Errorf("dead job started %d times by recovery, want 1", n)
	}
	if e := r.waitState("r-dead", journal.Responded); e.Attempts != 2 {
		t.Errorf("dead job: %d attempts, want 2", e.Attempts)
	}

	// The live job is adopted: it is not started a second time and its
	// result is answered once it ends.
	time.Sleep(300 * time.Millisecond)
	if n := r.starts("r-live"); n != 1 {
		t.Fatalf("live job started %d times, want 1 (adopted)", n)
	}
	if _, err := os.Stat(filepath.Join(r.root, "scheduled", "xclock@TW.x86_64.pid")); err != nil {
		t.Errorf("adopted job not counted against the build limit: %v", err)
	}
	r.noResponse("r-live", 300*time.Millisecond)
	r.release("r-live", "finish")
	if err := <-waited; err != nil {
		t.Fatalf("live job: %v", err)
	}
	r.expect("r-live", message.PackageBuildSucceeded)
	r.waitState("r-live", journal.Responded)
}

// TestSchedulerAbandon: a job that dies three times ends its request with
// a failure response naming the reason.
func TestSchedulerAbandon(t *testing.T) {
	r := newRig(t)
	r.start()
	r.request(req("r-dies", pkgRequest("projects/MS/xclock", "TW", "x86_64")), "die")
	r.expect("r-dies", message.PackageRequestAccepted)
	final := r.expect("r-dies", message.PackageBuildFailed)
	if !strings.Contains(final.Message, "the build job died 3 times") {
		t.Errorf("final response %q", final.Message)
	}
	if n := r.starts("r-dies"); n != 3 {
		t.Errorf("job started %d times, want 3", n)
	}
	e := r.waitState("r-dies", journal.Responded)
	tg, _ := target.ForRequest(r.root, &e.Request)
	data, err := os.ReadFile(tg.ResultFile())
	if err != nil || !strings.Contains(string(data), "the build job died 3 times") {
		t.Errorf("result file: %q, %v", data, err)
	}
}

// TestAbandonKeepsReasonWhenPublishFails is the regression test of a lost
// reason: abandon used to mark the entry finished without a result file,
// so when the publish failed, recovery found no result and abandoned the
// request again with "result file lost", and the real reason was gone.
func TestAbandonKeepsReasonWhenPublishFails(t *testing.T) {
	r := newRig(t)
	// A broker that is away: a real client whose seed does not listen.
	away, err := broker.New(broker.Options{Brokers: []string{"127.0.0.1:1"}, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer away.Close()
	s, err := New(Config{RunnerGroup: testGroup, RunnerRoot: r.root, Sources: r.sources, HostArch: "x86_64",
		JobCommand: []string{r.script}, Publisher: away, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	e := r.journalEntry(req("r-lost", pkgRequest("projects/MS/xclock", "TW", "x86_64")))
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	s.abandon(ctx, e, "the build job died 3 times")
	cancel()
	if got := r.entry("r-lost"); got.State != journal.Finished {
		t.Fatalf("entry after a failed publish: %s, want finished", got.State)
	}

	// Recovery with the broker back sends the original reason, and names
	// the runner's artifact endpoint for the target as the job would.
	r.artifactURL = "http://10.1.2.3:8081"
	r.start()
	final := r.expect("r-lost", message.PackageBuildFailed)
	if !strings.Contains(final.Message, "the build job died 3 times") {
		t.Errorf("recovered final response %q lost the reason", final.Message)
	}
	tg, err := target.ForRequest(r.root, &e.Request)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := r.artifactHeaders["r-lost/"+string(message.PackageBuildFailed)], artifact.TargetURL(r.artifactURL, tg); got != want {
		t.Errorf("recovered final response has %s %q, want %q", broker.HeaderArtifactURL, got, want)
	}
	r.waitState("r-lost", journal.Responded)
	if n := r.starts("r-lost"); n != 0 {
		t.Errorf("abandoned request built %d times", n)
	}
}
