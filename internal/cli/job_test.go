package cli

import (
	"context"
	"flag"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/cloud-builder/cb/internal/broker"
	"github.com/cloud-builder/cb/internal/collect"
	"github.com/cloud-builder/cb/internal/config"
	"github.com/cloud-builder/cb/internal/message"
	"github.com/cloud-builder/cb/internal/upload"
)

// The scheduler starts `cb job` with jobArgs; the job parses them with
// register. Both sides must agree on every runner flag.
func TestJobArgsRoundTrip(t *testing.T) {
	env := &Env{Stdout: io.Discard, Stderr: io.Discard, Getenv: func(string) string { return "" }}
	for _, in := range []runnerFlags{
		{runnerConfig: "/etc/cloud_builder_runner.yml", runnerRoot: "/var/tmp/CB", sources: "/srv/src", thisHost: "runner-1", group: "debian",
			brokerHosts: "b1:9092,b2:9092", collectorURL: "https://repo:8080", collectorTokenFile: "/etc/cb/token",
			backend: "native", cacheDir: "/var/cache/cb", cacheBudget: "200G", buildTimeout: 90 * time.Minute},
		{runnerConfig: "/r/runner.yml", runnerRoot: "/r o/o't", sources: "/s", thisHost: "h", group: "g", brokerHosts: "127.0.0.1:9092",
			backend: "auto", buildTimeout: time.Hour},
	} {
		fs := flag.NewFlagSet("job", flag.ContinueOnError)
		var out runnerFlags
		out.register(fs, env)
		brokerConfig := fs.String("broker-config", "", "")
		if err := fs.Parse(in.jobArgs("/etc/cloud_builder_broker.yml")); err != nil {
			t.Fatal(err)
		}
		// The job gets no upload token: the scheduler mints it a ticket.
		in.collectorTokenFile = ""
		if !reflect.DeepEqual(out, in) {
			t.Errorf("round trip:\n got %+v\nwant %+v", out, in)
		}
		if *brokerConfig != "/etc/cloud_builder_broker.yml" || fs.NArg() != 0 {
			t.Errorf("broker config %q, rest %q", *brokerConfig, fs.Args())
		}
	}
}

// A job's responses carry this runner's artifact URL of the target in
// the cb-artifact-url header, where cb-depsolver reads the solver file.
func TestJobResponsesNameArtifactURL(t *testing.T) {
	e, err := broker.StartEmbedded(broker.EmbeddedOptions{Listen: "127.0.0.1:0", DataDir: t.TempDir(), Partitions: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	opts := broker.Options{Brokers: e.Addrs()}
	client, err := broker.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := client.EnsureTopics(ctx, 1, time.Hour, message.TopicResponse); err != nil {
		t.Fatal(err)
	}
	rf := &runnerFlags{runnerRoot: "/var/tmp/CB", thisHost: "10.0.0.7"}
	req := &message.BuildRequest{RequestID: "r1", Project: "projects/T/cb-tool", Package: &message.PackageTarget{Dist: "bookworm", Arch: "x86_64"}}
	cfg := &config.Broker{Artifacts: config.Endpoint{Listen: "0.0.0.0:8081", TLSCert: "/etc/cb/tls.crt"}}
	if err := broker.PublishRetry(ctx, rf.responsePublisher(client, cfg, req), message.TopicResponse, []byte("final"), nil); err != nil {
		t.Fatal(err)
	}
	// Without an artifact endpoint the response goes out without one.
	if err := broker.PublishRetry(ctx, rf.responsePublisher(client, &config.Broker{}, req), message.TopicResponse, []byte("plain"), nil); err != nil {
		t.Fatal(err)
	}
	cons, err := broker.NewConsumer(opts, broker.ConsumerConfig{Topics: []string{message.TopicResponse}, Start: broker.Earliest, MaxWait: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	got := map[string]string{}
	for len(got) < 2 && ctx.Err() == nil {
		recs, _ := cons.Poll(ctx)
		for _, r := range recs {
			got[string(r.Value)] = r.Header(broker.HeaderArtifactURL)
		}
	}
	want := map[string]string{"final": "https://10.0.0.7:8081/v1/targets/projects/T/cb-tool@bookworm.x86_64/", "plain": ""}
	if !maps.Equal(got, want) {
		t.Fatalf("artifact url headers %q, want %q", got, want)
	}
}

// A job's upload ticket outlives the longest the job may take.
func TestTicketTTL(t *testing.T) {
	for _, tt := range []struct{ build, prepare, want time.Duration }{
		{4 * time.Hour, 0, 24 * time.Hour},
		{30 * time.Hour, 0, 32 * time.Hour},
		{30 * time.Hour, 3 * time.Hour, 34 * time.Hour},
	} {
		if got := ticketTTL(tt.build, tt.prepare); got != tt.want {
			t.Errorf("ticketTTL(%s, %s) = %s, want %s", tt.build, tt.prepare, got, tt.want)
		}
	}
}

// A job uploads with the ticket the scheduler gave it; started by hand
// without one, it mints its own from the token, bound to its request.
func TestJobUploadsWithTicket(t *testing.T) {
	tokenFile := filepath.Join(t.TempDir(), "upload.token")
	if err := os.WriteFile(tokenFile, []byte("group-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	req := &message.BuildRequest{RequestID: "r-1", Project: "projects/MS/xclock", Package: &message.PackageTarget{Dist: "TW", Arch: "x86_64"}}
	cfg := &config.Broker{}
	cfg.Collector.TokenFile = tokenFile
	f := &runnerFlags{runnerRoot: t.TempDir(), collectorURL: "http://127.0.0.1:1"}
	for name, envs := range map[string]map[string]string{
		"from the scheduler": {upload.EnvTicket: "cbt1.given"},
		"minted by hand":     {},
	} {
		env := &Env{Getenv: func(k string) string { return envs[k] }}
		up, err := f.uploader(env, cfg, req, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		c := up.(*collect.Client)
		if given := envs[upload.EnvTicket]; given != "" {
			if c.Token != given {
				t.Errorf("%s: token %q, want the given ticket", name, c.Token)
			}
			continue
		}
		claims, err := upload.VerifyTicket([]byte("group-secret"), c.Token, time.Now())
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if err := claims.Covers(upload.Upload{RequestID: "r-1", Project: "projects/MS/xclock", RepoPath: "projects/MS/TW", Arch: "x86_64"}); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}
