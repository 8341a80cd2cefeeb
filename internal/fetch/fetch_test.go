package fetch_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloud-builder/cb/internal/broker"
	"github.com/cloud-builder/cb/internal/fetch"
	"github.com/cloud-builder/cb/internal/message"
	"github.com/cloud-builder/cb/internal/source/sourcetest"
)

const (
	xclock = "projects/MS/xclock"
	xsnow  = "projects/Debian/xsnow"
	leap   = "projects/images/leap/test-image"
)

func baseTree() map[string]string {
	return map[string]string{
		"README.md":                       "sources",
		xclock + "/.cb/cloud_builder.yml": sourcetest.PackageMetadata("xclock", "suse", "TW.x86_64", "TW.aarch64"),
		xclock + "/.cb/build_root.kiwi":   "<image/>",
		xclock + "/xclock.spec":           "Name: xclock",
		xsnow + "/.cb/cloud_builder.yml":  sourcetest.PackageMetadata("xsnow", "debian", "bookworm.x86_64"),
		xsnow + "/.cb/build_root.kiwi":    "<image/>",
		xsnow + "/debian/control":         "Source: xsnow",
		leap + "/.cb/cloud_builder.yml":   sourcetest.ImageMetadata("test-image", "suse", "standard.x86_64"),
		leap + "/appliance.kiwi":          "<image/>",
	}
}

// fixture is a sources repository, an embedded broker and a cb-fetch
// configuration that has already recorded the base commit.
type fixture struct {
	t      *testing.T
	repo   *sourcetest.Repo
	base   string
	cfg    fetch.Config
	client *broker.Client
	reader *broker.Consumer
	logs   *syncBuffer
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	repo := sourcetest.New(t)
	base := repo.CommitAndPush("base", baseTree())
	e, err := broker.StartEmbedded(broker.EmbeddedOptions{
		Listen: "127.0.0.1:0", DataDir: t.TempDir(), Partitions: 1, Topics: []string{"suse", "debian"},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	opts := broker.Options{Brokers: e.Addrs()}
	client, err := broker.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(client.Close)
	reader, err := broker.NewConsumer(opts, broker.ConsumerConfig{
		Topics: []string{"suse", "debian", message.TopicResponse}, Start: broker.Earliest, MaxWait: 100 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(reader.Close)
	logs := &syncBuffer{}
	dir := filepath.Join(t.TempDir(), "cloud_builder_sources")
	f := &fixture{t: t, repo: repo, base: base, client: client, reader: reader, logs: logs, cfg: fetch.Config{
		URL: repo.URL(), Branch: "main", Dir: dir, ThisHost: "testhost",
		Interval: 100 * time.Millisecond, Publisher: client,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}}
	// First start: the head is recorded, nothing is requested.
	f.poll(0)
	return f
}

// poll runs one poll and checks the number of requests it reports.
func (f *fixture) poll(want int) {
	f.t.Helper()
	n, err := fetch.Once(f.t.Context(), f.cfg)
	if err != nil {
		f.t.Fatalf("poll: %v\nlog:\n%s", err, f.logs)
	}
	if n != want {
		f.t.Fatalf("poll sent %d requests, want %d\nlog:\n%s", n, want, f.logs)
	}
}

// sent is what one poll put on the broker.
type sent struct {
	requests  []*message.BuildRequest
	responses []*message.Response
	topics    map[string]string // request id -> topic
}

// read reads the records published since the last read: at least n, and
// then whatever else arrives within a short quiet period, so a test sees
// extra messages too.
func (f *fixture) read(n int) sent {
	f.t.Helper()
	s := sent{topics: map[string]string{}}
	deadline := time.Now().Add(20 * time.Second)
	quiet := time.Time{}
	count := 0
	for {
		if count >= n {
			if quiet.IsZero() {
				quiet = time.Now().Add(700 * time.Millisecond)
			}
			if time.Now().After(quiet) {
				break
			}
		} else if time.Now().After(deadline) {
			f.t.Fatalf("read %d of %d records", count, n)
		}
		ctx, cancel := context.WithTimeout(f.t.Context(), 300*time.Millisecond)
		recs, err := f.reader.Poll(ctx)
		cancel()
		if err != nil && !errors.Is(err, context.DeadlineExceeded) {
			f.t.Fatalf("read: %v", err)
		}
		for _, r := range recs {
			count++
			if r.Topic == message.TopicResponse {
				resp, err := message.DecodeResponse(r.Value)
				if err != nil {
					f.t.Fatalf("response does not decode: %v\n%s", err, r.Value)
				}
				s.responses = append(s.responses, resp)
				continue
			}
			req, err := message.DecodeBuildRequest(r.Value)
			if err != nil {
				f.t.Fatalf("request does not decode: %v\n%s", err, r.Value)
			}
			if bytes.Contains(r.Value, []byte("fresh_build_root")) {
				f.t.Errorf("request body carries the fresh_build_root extension; it belongs in a header:\n%s", r.Value)
			}
			req.FreshBuildRoot = r.Header(broker.HeaderFreshBuildRoot) == "true"
			s.requests = append(s.requests, req)
			s.topics[req.RequestID] = r.Topic
		}
	}
	return s
}

// summary renders the requests as sorted lines "topic project profile
// action fresh", and checks that every request has exactly one matching
// update response.
func (f *fixture) summary(s sent) []string {
	f.t.Helper()
	byID := map[string]*message.Response{}
	for _, r := range s.responses {
		if r.ResponseCode == message.InvalidPackageMetadata {
			continue
		}
		if byID[r.RequestID] != nil {
			f.t.Errorf("two responses for request %s", r.RequestID)
		}
		byID[r.RequestID] = r
	}
	var lines []string
	for _, r := range s.requests {
		if r.SchemaVersion != message.SchemaVersion || r.RequestID == "" || r.RunnerGroup != s.topics[r.RequestID] {
			f.t.Errorf("malformed request %+v on topic %s", r, s.topics[r.RequestID])
		}
		resp := byID[r.RequestID]
		if resp == nil {
			f.t.Errorf("no response for request %s (%s %s)", r.RequestID, r.Project, r.Profile())
		} else {
			delete(byID, r.RequestID)
			wantMsg := "Package update request scheduled"
			wantTarget := message.Target{Arch: r.Arch()}
			if r.IsImage() {
				wantMsg = "Image update request scheduled"
				wantTarget.Selection = r.Image.Selection
			} else {
				wantTarget.Dist = r.Package.Dist
			}
			if resp.Message != wantMsg || resp.ResponseCode != r.Action || resp.Project != r.Project ||
				resp.Target == nil || *resp.Target != wantTarget ||
				!strings.HasPrefix(resp.Identity, "CBFetch:testhost:") || !strings.HasSuffix(resp.Identity, ":"+r.Name()) {
				f.t.Errorf("response %+v (target %+v) does not match request %+v", resp, resp.Target, r)
			}
		}
		lines = append(lines, fmt.Sprintf("%s %s %s %s fresh=%v", s.topics[r.RequestID], r.Project, r.Profile(), r.Action, r.FreshBuildRoot))
	}
	for id := range byID {
		f.t.Errorf("response %s without a request", id)
	}
	sort.Strings(lines)
	return lines
}

func (f *fixture) expect(s sent, want ...string) {
	f.t.Helper()
	got := f.summary(s)
	sort.Strings(want)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		f.t.Fatalf("requests:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

const (
	pkgChange = "package rebuild due to source change"
	imgChange = "image rebuild due to source change"
)

func TestSourceChanges(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(r *sourcetest.Repo)
		want   []string
	}{
		{"package source file", func(r *sourcetest.Repo) {
			r.CommitAndPush("spec", map[string]string{xclock + "/xclock.spec": "Name: xclock\nVersion: 2"})
		}, []string{
			"suse projects/MS/xclock TW.x86_64 " + pkgChange + " fresh=false",
			"suse projects/MS/xclock TW.aarch64 " + pkgChange + " fresh=false",
		}},
		{"build_root.kiwi forces a fresh buildroot", func(r *sourcetest.Repo) {
			r.CommitAndPush("kiwi", map[string]string{xclock + "/.cb/build_root.kiwi": "<image schemaversion='7.4'/>"})
		}, []string{
			"suse projects/MS/xclock TW.x86_64 " + pkgChange + " fresh=true",
			"suse projects/MS/xclock TW.aarch64 " + pkgChange + " fresh=true",
		}},
		{"two packages and nothing else", func(r *sourcetest.Repo) {
			r.CommitAndPush("two", map[string]string{xclock + "/xclock.spec": "v2", xsnow + "/debian/control": "v2"})
		}, []string{
			"suse projects/MS/xclock TW.x86_64 " + pkgChange + " fresh=false",
			"suse projects/MS/xclock TW.aarch64 " + pkgChange + " fresh=false",
			"debian projects/Debian/xsnow bookworm.x86_64 " + pkgChange + " fresh=false",
		}},
		{"image", func(r *sourcetest.Repo) {
			r.CommitAndPush("image", map[string]string{leap + "/config.sh": "#!/bin/sh"})
		}, []string{
			"suse projects/images/leap/test-image standard.x86_64 " + imgChange + " fresh=false",
		}},
		{"commit outside projects", func(r *sourcetest.Repo) {
			r.CommitAndPush("readme", map[string]string{"README.md": "changed", "tools/x": "y"})
		}, nil},
		{"deleted package", func(r *sourcetest.Repo) {
			r.Remove(xsnow)
			r.Commit("rm xsnow")
			r.Push()
		}, nil},
		{"new target in the metadata", func(r *sourcetest.Repo) {
			r.CommitAndPush("target", map[string]string{xsnow + "/.cb/cloud_builder.yml": sourcetest.PackageMetadata("xsnow", "debian", "bookworm.x86_64", "trixie.x86_64")})
		}, []string{
			"debian projects/Debian/xsnow bookworm.x86_64 " + pkgChange + " fresh=true",
			"debian projects/Debian/xsnow trixie.x86_64 " + pkgChange + " fresh=true",
		}},
		{"target listed twice is built once", func(r *sourcetest.Repo) {
			r.CommitAndPush("dup", map[string]string{xsnow + "/.cb/cloud_builder.yml": sourcetest.PackageMetadata("xsnow", "debian", "bookworm.x86_64", "bookworm.x86_64")})
		}, []string{
			"debian projects/Debian/xsnow bookworm.x86_64 " + pkgChange + " fresh=true",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			tc.change(f.repo)
			f.poll(len(tc.want))
			f.expect(f.read(2*len(tc.want)), tc.want...)
			// The change is handled: the next poll sends nothing.
			f.poll(0)
		})
	}
}

func TestForcePush(t *testing.T) {
	f := newFixture(t)
	f.repo.CommitAndPush("old", map[string]string{xclock + "/xclock.spec": "old"})
	f.poll(2)
	f.read(4)

	// History is rewritten: the xclock change is dropped, an xsnow change
	// takes its place. Both trees differ from what was built; the image
	// does not.
	f.repo.Git("reset", "--quiet", "--hard", f.base)
	f.repo.Write(map[string]string{xsnow + "/debian/control": "rewritten"})
	f.repo.Commit("rewritten")
	f.repo.ForcePush()
	f.poll(3)
	f.expect(f.read(6),
		"suse projects/MS/xclock TW.x86_64 "+pkgChange+" fresh=false",
		"suse projects/MS/xclock TW.aarch64 "+pkgChange+" fresh=false",
		"debian projects/Debian/xsnow bookworm.x86_64 "+pkgChange+" fresh=false",
	)
	f.poll(0)
}

func TestRestart(t *testing.T) {
	f := newFixture(t)
	// cb-fetch is stopped (no poll runs) while two commits land.
	f.repo.CommitAndPush("1", map[string]string{xclock + "/xclock.spec": "v2"})
	f.repo.CommitAndPush("2", map[string]string{xsnow + "/.cb/build_root.kiwi": "v2"})

	// A new process with the same state file.
	restarted := f.cfg
	restarted.Logger = slog.New(slog.NewTextHandler(f.logs, nil))
	n, err := fetch.Once(t.Context(), restarted)
	if err != nil || n != 3 {
		t.Fatalf("poll after restart = %d, %v; want 3 requests", n, err)
	}
	f.expect(f.read(6),
		"suse projects/MS/xclock TW.x86_64 "+pkgChange+" fresh=false",
		"suse projects/MS/xclock TW.aarch64 "+pkgChange+" fresh=false",
		"debian projects/Debian/xsnow bookworm.x86_64 "+pkgChange+" fresh=true",
	)
	// Restarting again repeats nothing.
	f.poll(0)
	f.expect(f.read(0))
}

// failingPublisher passes the first ok messages to the broker and then
// fails, as a broker connection lost in the middle of a poll does.
type failingPublisher struct {
	fetch.Publisher
	ok int
}

func (p *failingPublisher) PublishHeaders(ctx context.Context, topic string, value []byte, headers []broker.Header) error {
	if p.ok == 0 {
		return errors.New("broker connection lost")
	}
	p.ok--
	return p.Publisher.PublishHeaders(ctx, topic, value, headers)
}

func TestCrashInTheMiddleRepeats(t *testing.T) {
	f := newFixture(t)
	f.repo.CommitAndPush("two", map[string]string{xclock + "/xclock.spec": "v2", xsnow + "/debian/control": "v2"})
	broken := f.cfg
	broken.Publisher = &failingPublisher{Publisher: f.client, ok: 2} // one request + its response
	if _, err := fetch.Once(t.Context(), broken); err == nil {
		t.Fatal("poll with a failing broker succeeded")
	}
	f.read(2)
	// The commit was not stored: the next poll sends every request of the
	// change (the one already sent again: at least once, never lost).
	f.poll(3)
	f.expect(f.read(6),
		"suse projects/MS/xclock TW.x86_64 "+pkgChange+" fresh=false",
		"suse projects/MS/xclock TW.aarch64 "+pkgChange+" fresh=false",
		"debian projects/Debian/xsnow bookworm.x86_64 "+pkgChange+" fresh=false",
	)
	f.poll(0)
}

func TestInvalidMetadata(t *testing.T) {
	for _, tc := range []struct {
		name, meta, field string
	}{
		{"missing field", "schema_version: 0.1\nname: xsnow\ndistributions:\n  - dist: bookworm\n    runner_group: debian\n", "distributions[0].arch"},
		{"name differs from directory", sourcetest.PackageMetadata("other", "debian", "bookworm.x86_64"), "name"},
		{"runner group unusable as topic", sourcetest.PackageMetadata("xsnow", "deb+ian", "bookworm.x86_64"), "distributions[0].runner_group"},
		{"not YAML", "{{{", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			f.repo.CommitAndPush("broken", map[string]string{
				xsnow + "/.cb/cloud_builder.yml": tc.meta,
				xclock + "/xclock.spec":          "v2",
			})
			f.poll(2)
			s := f.read(5)
			var invalid []*message.Response
			for _, r := range s.responses {
				if r.ResponseCode == message.InvalidPackageMetadata {
					invalid = append(invalid, r)
				}
			}
			if len(invalid) != 1 {
				t.Fatalf("%d invalid metadata responses, want 1", len(invalid))
			}
			r := invalid[0]
			if r.Project != xsnow || !strings.Contains(r.Message, xsnow+"/.cb/cloud_builder.yml") ||
				!strings.Contains(r.Message, tc.field) || !strings.HasPrefix(r.Identity, "CBFetch:testhost:") || r.RequestID == "" {
				t.Fatalf("invalid metadata response %+v does not name the file and field %q", r, tc.field)
			}
			t.Logf("message: %s", r.Message)
			// The other package of the same commit is still built.
			f.expect(s,
				"suse projects/MS/xclock TW.x86_64 "+pkgChange+" fresh=false",
				"suse projects/MS/xclock TW.aarch64 "+pkgChange+" fresh=false",
			)
			f.poll(0)
		})
	}
}

func TestServerDown(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- fetch.Run(ctx, f.cfg) }()

	away := f.repo.Bare + ".away"
	if err := os.Rename(f.repo.Bare, away); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return strings.Contains(f.logs.String(), "poll failed") })
	select {
	case err := <-done:
		t.Fatalf("Run returned while the server was down: %v", err)
	default:
	}
	if err := os.Rename(away, f.repo.Bare); err != nil {
		t.Fatal(err)
	}
	f.repo.CommitAndPush("after", map[string]string{leap + "/config.sh": "v2"})
	f.expect(f.read(2), "suse projects/images/leap/test-image standard.x86_64 "+imgChange+" fresh=false")
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run after cancel: %v", err)
	}
}

func TestHugeCommit(t *testing.T) {
	f := newFixture(t)
	files := map[string]string{}
	for i := range 3000 {
		files[fmt.Sprintf("%s/src/d%02d/file%05d.c", xclock, i%50, i)] = fmt.Sprint("int x", i, ";")
	}
	f.repo.CommitAndPush("huge", files)
	start := time.Now()
	f.poll(2)
	t.Logf("poll of a 3000-file commit: %v", time.Since(start))
	f.expect(f.read(4),
		"suse projects/MS/xclock TW.x86_64 "+pkgChange+" fresh=false",
		"suse projects/MS/xclock TW.aarch64 "+pkgChange+" fresh=false",
	)
}

func TestInitialBuild(t *testing.T) {
	f := newFixture(t)
	cfg := f.cfg
	cfg.StateFile = filepath.Join(t.TempDir(), "fresh-state")
	cfg.InitialBuild = true
	n, err := fetch.Once(t.Context(), cfg)
	if err != nil || n != 4 {
		t.Fatalf("initial build = %d, %v; want 4 requests", n, err)
	}
	f.expect(f.read(8),
		"suse projects/MS/xclock TW.x86_64 "+pkgChange+" fresh=true",
		"suse projects/MS/xclock TW.aarch64 "+pkgChange+" fresh=true",
		"debian projects/Debian/xsnow bookworm.x86_64 "+pkgChange+" fresh=true",
		"suse projects/images/leap/test-image standard.x86_64 "+imgChange+" fresh=true",
	)
	// Only the first start builds everything.
	if n, err := fetch.Once(t.Context(), cfg); err != nil || n != 0 {
		t.Fatalf("second poll with --initial-build = %d, %v; want 0", n, err)
	}
}

func TestCorruptStateBuildsEverything(t *testing.T) {
	f := newFixture(t)
	if err := os.WriteFile(f.cfg.Dir+".fetch-state", []byte("garbage\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	f.poll(4)
	f.read(8)
	f.poll(0)
}

func TestSingleShot(t *testing.T) {
	repo := sourcetest.New(t)
	repo.CommitAndPush("base", baseTree())
	dir := filepath.Join(t.TempDir(), "sources")
	err := fetch.Run(t.Context(), fetch.Config{URL: repo.URL(), Dir: dir, SingleShot: true})
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, xclock, "xclock.spec"))
	if err != nil || string(b) != "Name: xclock" {
		t.Fatalf("checkout after --single-shot: %q, %v", b, err)
	}
	// It only clones: no state, so the farm's cb-fetch stays the only one
	// that requests builds.
	if _, err := os.Stat(dir + ".fetch-state"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("--single-shot wrote state: %v", err)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  fetch.Config
	}{
		{"no URL", fetch.Config{Dir: "/tmp/x", Publisher: nopPublisher{}}},
		{"no dir", fetch.Config{URL: "file:///x", Publisher: nopPublisher{}}},
		{"no publisher", fetch.Config{URL: "file:///x", Dir: "/tmp/x"}},
		{"bad URL", fetch.Config{URL: "ext::sh", Dir: "/tmp/x", Publisher: nopPublisher{}}},
		{"bad branch", fetch.Config{URL: "file:///x", Branch: "-x", Dir: "/tmp/x", Publisher: nopPublisher{}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := fetch.Once(t.Context(), tc.cfg); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

type nopPublisher struct{}

func (nopPublisher) PublishHeaders(context.Context, string, []byte, []broker.Header) error {
	return nil
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for range 300 {
		if cond() {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("condition not reached in 15s")
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
