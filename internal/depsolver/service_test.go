package depsolver_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloud-builder/cb/internal/broker"
	"github.com/cloud-builder/cb/internal/depsolver"
	"github.com/cloud-builder/cb/internal/fetch"
	"github.com/cloud-builder/cb/internal/message"
	"github.com/cloud-builder/cb/internal/source/sourcetest"
)

func control(source, binary, deps string) string {
	return "Source: " + source + "\nBuild-Depends: " + deps + "\n\nPackage: " + binary + "\nArchitecture: any\n"
}

func kiwi(baseURL string) string {
	return `<image schemaversion="7.5" name="b"><profiles><profile name="bookworm.x86_64" description="x"/></profiles>
<preferences><version>1</version><packagemanager>apt</packagemanager><type image="tbz"/></preferences>
<repository type="apt-deb" distribution="bookworm" components="main"><source path="` + baseURL + `"/></repository>
<packages type="image"><package name="build-essential"/></packages></image>`
}

// writePackages writes an apt Packages index of name=version pairs below dir.
func writePackages(t *testing.T, dir string, pkgs ...string) {
	t.Helper()
	p := filepath.Join(dir, "dists", "bookworm", "main", "binary-amd64")
	if err := os.MkdirAll(p, 0o755); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, nv := range pkgs {
		n, v, _ := strings.Cut(nv, "=")
		fmt.Fprintf(&b, "Package: %s\nVersion: %s\nArchitecture: amd64\nFilename: amd64/%s_%s_amd64.deb\nSHA256: %x\n\n", n, v, n, v, len(v)+len(n))
	}
	if err := os.WriteFile(filepath.Join(p, "Packages"), []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "dists", "bookworm", "Release"), []byte(b.String()), 0o644)
}

// runner plays the runners of group debian: it answers every request with
// accepted, publishes the binaries the test set for the target into the
// collector directory, sends the collector's event and the final response.
type runner struct {
	t        *testing.T
	client   *broker.Client
	repoDir  string
	mu       sync.Mutex
	versions map[string]string // binary -> version published on the next build
	order    []string          // projects in the order they were built
	fresh    []bool            // whether each asked for a fresh buildroot
	repo     []string          // binary=version now published
}

func (r *runner) publish(topic string, v any) {
	b, err := message.Encode(v)
	if err != nil {
		r.t.Error(err)
		return
	}
	if err := r.client.Publish(context.Background(), topic, b); err != nil {
		r.t.Error(err)
	}
}

func (r *runner) run(ctx context.Context, opts broker.Options, binaries map[string]string) {
	cons, err := broker.NewConsumer(opts, broker.ConsumerConfig{Group: "debian", Topics: []string{"debian"}, MaxWait: 100 * time.Millisecond})
	if err != nil {
		r.t.Error(err)
		return
	}
	defer cons.Close()
	for ctx.Err() == nil {
		recs, err := cons.Poll(ctx)
		if err != nil {
			continue
		}
		for _, rec := range recs {
			req, err := message.DecodeBuildRequest(rec.Value)
			if err != nil {
				r.t.Error(err)
				continue
			}
			r.publish(message.TopicResponse, &message.Response{Identity: "CBScheduler:test:1:x", RequestID: req.RequestID,
				ResponseCode: message.PackageRequestAccepted, Project: req.Project, SchemaVersion: 0.2,
				Target: &message.Target{Arch: req.Package.Arch, Dist: req.Package.Dist}})
			r.mu.Lock()
			r.order = append(r.order, filepath.Base(req.Project)+": "+req.Action)
			r.fresh = append(r.fresh, rec.Header(broker.HeaderFreshBuildRoot) == "true")
			bin := binaries[filepath.Base(req.Project)]
			var next []string
			for _, nv := range r.repo {
				if !strings.HasPrefix(nv, bin+"=") {
					next = append(next, nv)
				}
			}
			r.repo = append(next, bin+"="+r.versions[bin])
			writePackages(r.t, filepath.Join(r.repoDir, "projects", "T", "bookworm"), r.repo...)
			r.mu.Unlock()
			r.publish(message.TopicResponse, &message.Response{Identity: "CBCollect:test:1:x", RequestID: req.RequestID,
				ResponseCode: message.BinariesPublished, Project: req.Project, SchemaVersion: 0.2,
				Target: &message.Target{Arch: "x86_64", Dist: "bookworm"}})
			r.publish(message.TopicResponse, &message.Response{Identity: "CBRun:test:1:x", RequestID: req.RequestID,
				ResponseCode: message.PackageBuildSucceeded, Project: req.Project, SchemaVersion: 0.2,
				Package: &message.PackageResult{SolverFile: "none"}})
			cons.Ack(ctx, rec)
		}
	}
}

func (r *runner) built() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.order...)
}

// The service with the real broker, a real git repository and cb-fetch:
// a chain of two builds in order, an unresolvable target is never
// requested, and a new library version rebuilds the tool once, saying why.
func TestServiceChain(t *testing.T) {
	base := t.TempDir()
	writePackages(t, base, "build-essential=12.9", "debhelper-compat=13")
	repoDir := t.TempDir()
	src := sourcetest.New(t)
	k := kiwi("file://" + base)
	src.CommitAndPush("base", map[string]string{
		"projects/T/libgreet/.cb/cloud_builder.yml": sourcetest.PackageMetadata("libgreet", "debian", "bookworm.x86_64"),
		"projects/T/libgreet/.cb/build_root.kiwi":   k,
		"projects/T/libgreet/debian/control":        control("libgreet", "libgreet-dev", "debhelper-compat (= 13)"),
		"projects/T/tool/.cb/cloud_builder.yml":     sourcetest.PackageMetadata("tool", "debian", "bookworm.x86_64"),
		"projects/T/tool/.cb/build_root.kiwi":       k,
		"projects/T/tool/debian/control":            control("tool", "greet-tool", "debhelper-compat (= 13), libgreet-dev (>= 1.0)"),
		"projects/T/needy/.cb/cloud_builder.yml":    sourcetest.PackageMetadata("needy", "debian", "bookworm.x86_64"),
		"projects/T/needy/.cb/build_root.kiwi":      k,
		"projects/T/needy/debian/control":           control("needy", "needy", "no-such-dev"),
	})
	e, err := broker.StartEmbedded(broker.EmbeddedOptions{Listen: "127.0.0.1:0", DataDir: t.TempDir(), Partitions: 1,
		Topics: []string{"debian", message.TopicDepsolverRequests}})
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
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	responses, err := broker.NewConsumer(opts, broker.ConsumerConfig{Topics: []string{message.TopicResponse}, MaxWait: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer responses.Close()

	logger := slog.New(slog.DiscardHandler)
	if testing.Verbose() {
		logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	svc, err := depsolver.New(depsolver.Config{Broker: opts, URL: src.URL(), Branch: "main", Dir: filepath.Join(t.TempDir(), "src"),
		CollectorURL: "file://" + repoDir, Logger: logger.With("component", "depsolver")})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	r := &runner{t: t, client: client, repoDir: repoDir, versions: map[string]string{"libgreet-dev": "1.0-1", "greet-tool": "1.0-1"}}
	go r.run(ctx, opts, map[string]string{"libgreet": "libgreet-dev", "tool": "greet-tool", "needy": "needy"})

	fcfg := fetch.Config{URL: src.URL(), Branch: "main", Dir: filepath.Join(t.TempDir(), "fetch"), InitialBuild: true,
		ThisHost: "test", Publisher: client, RequestTopic: message.TopicDepsolverRequests}
	if n, err := fetch.Once(ctx, fcfg); err != nil || n != 3 {
		t.Fatalf("fetch: %d, %v", n, err)
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for ctx.Err() == nil {
			if cond() {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Fatalf("timed out waiting for %s; built %v", what, r.built())
	}
	const src1, dep = "package rebuild due to source change", "package rebuild requested"
	waitFor("first builds", func() bool { return len(r.built()) == 2 })
	if b := r.built(); b[0] != "libgreet: "+src1 || b[1] != "tool: "+src1 {
		t.Fatalf("built %v", b)
	}

	// A new library version rebuilds the tool once.
	r.mu.Lock()
	r.versions["libgreet-dev"] = "1.1-1"
	r.mu.Unlock()
	src.CommitAndPush("new library", map[string]string{"projects/T/libgreet/debian/changelog": "new\n"})
	if n, err := fetch.Once(ctx, fcfg); err != nil || n != 1 {
		t.Fatalf("fetch: %d, %v", n, err)
	}
	waitFor("rebuilds", func() bool { return len(r.built()) == 4 })
	time.Sleep(500 * time.Millisecond)
	if b := r.built(); len(b) != 4 || b[2] != "libgreet: "+src1 || b[3] != "tool: "+dep {
		t.Fatalf("built %v", b)
	}
	// The first builds came from new metadata (fresh buildroots, in a
	// record header as cb-fetch sends it); the rebuilds did not.
	r.mu.Lock()
	if fr := r.fresh; len(fr) != 4 || !fr[0] || !fr[1] || fr[2] || fr[3] {
		t.Errorf("fresh buildroot headers %v", fr)
	}
	r.mu.Unlock()

	// The responses say what happened.
	codes := map[string][]string{}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) && len(codes[message.PackageRebuildDependencyChange]) == 0 {
		pctx, c := context.WithTimeout(ctx, time.Second)
		recs, _ := responses.Poll(pctx)
		c()
		for _, rec := range recs {
			resp, err := message.DecodeResponse(rec.Value)
			if err == nil && strings.HasPrefix(resp.Identity, message.ServiceDepsolver) {
				codes[resp.ResponseCode] = append(codes[resp.ResponseCode], resp.Project+": "+resp.Message)
			}
		}
	}
	if u := codes[message.PackageBuildUnresolvable]; len(u) != 1 || !strings.Contains(u[0], "projects/T/needy: unresolvable: nothing provides no-such-dev") {
		t.Errorf("unresolvable responses %q", u)
	}
	if b := codes[message.PackageBuildBlocked]; len(b) == 0 || !strings.Contains(b[0], "projects/T/tool: blocked by projects/T/libgreet@bookworm.x86_64") {
		t.Errorf("blocked responses %q", b)
	}
	if d := codes[message.PackageRebuildDependencyChange]; len(d) != 1 || d[0] != "projects/T/tool: rebuild due to dependency change: libgreet-dev 1.0-1 -> 1.1-1" {
		t.Errorf("dependency change responses %q", d)
	}

	// The API shows the graph.
	hs := httptest.NewServer(svc.Handler())
	defer hs.Close()
	resp, err := http.Get(hs.URL + "/api/v1/target?id=projects/T/tool@bookworm.x86_64")
	if err != nil {
		t.Fatal(err)
	}
	var v depsolver.TargetView
	json.NewDecoder(resp.Body).Decode(&v)
	resp.Body.Close()
	if v.State != depsolver.StateIdle || len(v.Dependencies) != 1 || v.Dependencies[0] != "projects/T/libgreet@bookworm.x86_64" ||
		len(v.Needs) != 3 || v.Needs[2].Providers[0] != "projects/T/libgreet@bookworm.x86_64" {
		t.Fatalf("target view %+v", v)
	}
	resp, err = http.Get(hs.URL + "/api/v1/graph?project=projects/T&format=dot")
	if err != nil {
		t.Fatal(err)
	}
	var dot strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := resp.Body.Read(buf)
		dot.Write(buf[:n])
		if err != nil {
			break
		}
	}
	resp.Body.Close()
	if !strings.Contains(dot.String(), `"projects/T/tool@bookworm.x86_64" -> "projects/T/libgreet@bookworm.x86_64";`) ||
		!strings.Contains(dot.String(), `fillcolor="grey"`) {
		t.Fatalf("dot:\n%s", dot.String())
	}
	// A malformed request is answered, not forwarded.
	if err := client.Publish(ctx, message.TopicDepsolverRequests, []byte("schema_version: 0.2\nrequest_id: bad-request-1\naction: build everything\n")); err != nil {
		t.Fatal(err)
	}
	invalid := false
	deadline = time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) && !invalid {
		pctx, c := context.WithTimeout(ctx, time.Second)
		recs, _ := responses.Poll(pctx)
		c()
		for _, rec := range recs {
			resp, err := message.DecodeResponse(rec.Value)
			if err == nil && resp.RequestID == "bad-request-1" && resp.ResponseCode == message.InvalidRequest {
				invalid = true
			}
		}
	}
	if !invalid {
		t.Error("no invalid request response")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
