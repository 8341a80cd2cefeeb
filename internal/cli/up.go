package cli

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	osuser "os/user"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/cloud-builder/cb/internal/artifact"
	"github.com/cloud-builder/cb/internal/broker"
	"github.com/cloud-builder/cb/internal/buildroot"
	"github.com/cloud-builder/cb/internal/collect"
	"github.com/cloud-builder/cb/internal/config"
	"github.com/cloud-builder/cb/internal/depsolver"
	"github.com/cloud-builder/cb/internal/fetch"
	"github.com/cloud-builder/cb/internal/info"
	"github.com/cloud-builder/cb/internal/message"
	"github.com/cloud-builder/cb/internal/metrics"
	"github.com/cloud-builder/cb/internal/mirror"
	"github.com/cloud-builder/cb/internal/web"
)

func init() {
	register(&Command{Name: "up", Summary: "run the whole build service on this machine (embedded broker, fetch, runner, collector)", Run: runUp})
}

// upFlags are the options of cb up.
type upFlags struct {
	project, branch, stateDir, examples, group, backend string
	brokerListen, repoListen, artifactListen, metrics   string
	depsolverListen, brokerSASL                         string
	buildLimit                                          int
	interval, baseInterval                              time.Duration
	noDepsolver                                         bool
	allowPlainHTTP                                      bool
}

func runUp(ctx context.Context, env *Env, args []string) int {
	fs, common := newFlagSet(env, "up", "[--project URL] [--state-dir DIR] [flags]\n\nThe terminal shows a banner and one line per build event; --log-level info\nadds the services' own lines, --log-level debug the Kafka client's as well.")
	// The build event lines are what a person at the terminal follows;
	// the services' info lines would bury them.
	_ = fs.Set("log-level", "warn")
	fs.Lookup("log-level").DefValue = "warn"
	var f upFlags
	fs.StringVar(&f.project, "project", "", "git URL of the source repository (default: the shipped examples, as a local git repository in the state dir)")
	fs.StringVar(&f.branch, "branch", "", "branch of --project (default: the remote's default branch)")
	fs.StringVar(&f.stateDir, "state-dir", defaultStateDir(), "all state: broker data, sources, runner root, repositories")
	fs.StringVar(&f.examples, "examples", "", "examples directory served when --project is not given (default: next to the cb binary or in the working directory)")
	fs.StringVar(&f.group, "runner-group", "debian", "runner group this machine's runner serves")
	fs.StringVar(&f.backend, "backend", "auto", "buildroot backend: auto (native for apt), native, kiwi")
	fs.StringVar(&f.brokerListen, "broker-listen", config.DefaultBrokerHost, "embedded broker address (loopback unless told otherwise)")
	fs.StringVar(&f.brokerSASL, "broker-sasl", "", "make the embedded broker require SASL with this mechanism (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512); the password is generated into the state dir and the services and cb-ctl use it through runner.yml")
	fs.StringVar(&f.repoListen, "repo-listen", "127.0.0.1:8080", "collector: repositories, uploads, status")
	fs.StringVar(&f.artifactListen, "artifact-listen", "127.0.0.1:8081", "runner artifact endpoint: logs and binaries")
	fs.BoolVar(&f.allowPlainHTTP, "allow-plain-http", false, "let the artifact endpoint serve, and token clients send tokens over, plain HTTP on an --artifact-listen that is not loopback")
	fs.StringVar(&f.metrics, "metrics-listen", "127.0.0.1:9100", "/healthz and /metrics of every service")
	fs.StringVar(&f.depsolverListen, "depsolver-listen", DefaultDepsolverListen, "cb-depsolver API: dependency graph and target states")
	fs.DurationVar(&f.baseInterval, "base-interval", 10*time.Minute, "cb-depsolver: shortest time between base repository checks (0: off)")
	fs.BoolVar(&f.noDepsolver, "no-depsolver", false, "run without cb-depsolver: cb-fetch requests builds directly, in no particular order")
	fs.IntVar(&f.buildLimit, "build-limit", 2, "builds running at once")
	fs.DurationVar(&f.interval, "update-interval", 30*time.Second, "how often the source repository is checked for changes")
	if code, done := parse(fs, args); done {
		return code
	}
	var c checks
	c.atLeast("--build-limit", f.buildLimit, 1)
	c.positive("--update-interval", f.interval)
	c.addr("--broker-listen", f.brokerListen)
	switch f.brokerSASL {
	case "", "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512":
	default:
		c.add("--broker-sasl %q: want PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", f.brokerSASL)
	}
	c.addr("--repo-listen", f.repoListen)
	c.addr("--artifact-listen", f.artifactListen)
	c.addr("--metrics-listen", f.metrics)
	if f.stateDir == "" {
		c.add("--state-dir is empty")
	}
	if code, ok := c.report(env, "up"); !ok {
		return code
	}
	logger := common.Logger(env.Stderr, "up")
	if err := up(ctx, env, common, logger, &f); err != nil {
		return fail(env, "up", err)
	}
	return ExitOK
}

func defaultStateDir() string {
	if os.Geteuid() == 0 {
		return "/var/lib/cloud-builder"
	}
	return ".cb-state"
}

// upState are the paths below the state dir.
type upState struct {
	root, broker, sources, runner, repo, collector, cache, origin, work string
	brokerConfig, runnerConfig, ctlConfig, artifactToken, uiToken       string
	brokerPassword                                                      string
}

func newUpState(dir string) upState {
	j := func(p string) string { return filepath.Join(dir, p) }
	return upState{root: dir, broker: j("broker"), sources: j("sources"), runner: j("runner"), repo: j("repo"),
		collector: j("collector"), cache: j("cache/buildroot"), origin: j("examples.git"), work: j("examples-work"),
		brokerConfig: j("broker.yml"), runnerConfig: j("runner.yml"), ctlConfig: j("cbctl.yml"), artifactToken: j("artifact.token"),
		uiToken: j("ui.token"), brokerPassword: j("broker.password")}
}

func up(ctx context.Context, env *Env, common *Common, logger *slog.Logger, f *upFlags) error {
	abs, err := filepath.Abs(f.stateDir)
	if err != nil {
		return err
	}
	st := newUpState(abs)
	for _, d := range []string{st.root, st.runner, st.repo, st.collector, st.cache} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("state dir: %w", err)
		}
	}
	project := f.project
	if project == "" {
		examples, err := findExamples(env, f.examples)
		if err != nil {
			return err
		}
		if err := syncExamples(ctx, examples, st, logger); err != nil {
			return fmt.Errorf("examples repository: %w", err)
		}
		project = "file://" + st.origin
		f.branch = "main"
	}

	events := newBuildEvents(env.Stdout)
	eventsFrom := time.Now()

	// The broker first: every other part talks through it. With
	// --broker-sasl it requires an account whose password is made once
	// and kept in the state dir; runner.yml hands it to every service.
	var account *config.SASL
	eo := broker.EmbeddedOptions{
		Listen: f.brokerListen, DataDir: st.broker, Partitions: 1, Topics: []string{f.group, message.TopicDepsolverRequests}, Logger: logger,
	}
	if f.brokerSASL != "" {
		password, err := readOrCreateToken(st.brokerPassword)
		if err != nil {
			return fmt.Errorf("broker password: %w", err)
		}
		account = &config.SASL{Mechanism: f.brokerSASL, Username: "cloud-builder", Password: password}
		eo.Users = []broker.SASL{{Mechanism: account.Mechanism, User: account.Username, Password: account.Password}}
	}
	emb, err := broker.StartEmbedded(eo)
	if err != nil {
		return fmt.Errorf("embedded broker: %w", err)
	}
	defer emb.Close()
	brokerHost := strings.Join(emb.Addrs(), ",")
	artifactToken, err := readOrCreateToken(st.artifactToken)
	if err != nil {
		return err
	}

	// The web UI shares the collector's address (below /ui/ and /api/v1/,
	// beside the repositories) and has a broker client of its own.
	uiToken, err := readOrCreateToken(st.uiToken)
	if err != nil {
		return err
	}
	uiOpts := emb.ClientOptions("cb-web", logger.With("component", "web"))
	uiClient, err := broker.New(uiOpts)
	if err != nil {
		return err
	}
	defer uiClient.Close()
	var coll *collect.Server
	model := web.NewModel()
	ui, err := web.New(web.Config{Model: model, Publisher: uiClient, Token: uiToken, ArtifactToken: artifactToken, ArtifactAllowPlainHTTP: f.allowPlainHTTP,
		Status: func(context.Context) (*collect.Status, error) { return coll.Status(), nil },
		Logger: logger.With("component", "web")})
	if err != nil {
		return err
	}
	defer ui.Close()
	uiFeed, err := web.NewConsumer(uiOpts, []string{f.group})
	if err != nil {
		return err
	}
	defer uiFeed.Close()

	depEvents := &lazyPublisher{}
	collCfg := collect.Config{
		RepoRoot: st.repo, StateDir: st.collector, Listen: f.repoListen, ThisHost: "127.0.0.1",
		Project: project, Branch: f.branch, UpdateInterval: f.interval, Logger: logger.With("component", "collect"),
		Published: events.published,
		Mount:     ui.Mount,
	}
	if !f.noDepsolver {
		collCfg.Events = depEvents
	}
	coll, err = collect.New(collCfg)
	if err != nil {
		return err
	}
	uploadTokenFile := filepath.Join(st.collector, "upload.token")
	if err := os.WriteFile(uploadTokenFile, []byte(coll.Token()+"\n"), 0o600); err != nil {
		return err
	}
	repoURL := localURL(f.repoListen)
	artifactURL := localURL(f.artifactListen)

	// Configuration files for the job processes and for the user's
	// cb-ctl, ours and the original's: broker.yml and cbctl.yml hold only
	// the original's keys, so its tools can share them.
	keyFile := filepath.Join(st.repo, "repo.gpg")
	for p, c := range upConfigs(st, brokerHost, account, f.group, repoURL, uploadTokenFile, f.artifactListen, artifactURL, f.allowPlainHTTP) {
		if err := config.WriteFile(p, c); err != nil {
			return err
		}
	}
	cfg, err := config.LoadBrokerFile(st.brokerConfig)
	if err != nil {
		return err
	}
	if err := cfg.LoadRunnerFile(st.runnerConfig); err != nil {
		return err
	}
	opts, err := brokerOptions(cfg, logger, "cb-up")
	if err != nil {
		return err
	}
	client, err := broker.New(opts)
	if err != nil {
		return err
	}
	defer client.Close()
	depEvents.set(client)

	// The collector listens before anything is started, so its address is
	// known; the other servers report theirs when they listen.
	collLn, err := net.Listen("tcp", f.repoListen)
	if err != nil {
		coll.Close()
		return fmt.Errorf("collector: listen %s: %w", f.repoListen, err)
	}
	type place struct {
		name string
		addr net.Addr
	}
	listening := make(chan place, 2)
	ready := func(name string, a net.Addr) { listening <- place{name, a} }
	g, gctx := newGroup(ctx)
	g.Go("collect", func() error { return coll.Serve(gctx, collLn) })
	stopUI := context.AfterFunc(gctx, ui.Close)
	defer stopUI()
	g.Go("web", func() error { return web.Follow(gctx, uiFeed, model, logger.With("component", "web")) })
	g.Go("artifacts", func() error {
		return artifact.ListenAndServe(gctx, artifact.Config{Root: st.runner, Token: artifactToken, Listen: f.artifactListen,
			AllowPlainHTTP: f.allowPlainHTTP, Logger: logger.With("component", "artifacts")}, func(a net.Addr) { ready("artifacts", a) })
	})
	g.Go("info", func() error {
		return info.Run(gctx, info.Config{Broker: opts, Root: st.runner, ThisHost: "127.0.0.1", ArtifactURL: artifactURL,
			Logger: logger.With("component", "info")})
	})
	rf := &runnerFlags{runnerConfig: st.runnerConfig, runnerRoot: st.runner, sources: st.sources, thisHost: "127.0.0.1", group: f.group,
		brokerHosts: brokerHost, collectorURL: repoURL, collectorTokenFile: uploadTokenFile, collectorKeyFile: keyFile, backend: f.backend,
		cacheDir: st.cache, buildTimeout: 4 * time.Hour}
	g.Go("scheduler", func() error {
		return runRunner(gctx, env, logger.With("component", "scheduler"), cfg, rf, runnerOptions{
			brokerConfig: st.brokerConfig, buildLimit: f.buildLimit, pollTimeout: 2 * time.Second,
		})
	})
	fcfg := fetch.Config{URL: project, Branch: f.branch, Dir: st.sources, Interval: f.interval,
		InitialBuild: true, ThisHost: "127.0.0.1", Publisher: client, Logger: logger.With("component", "fetch")}
	if !f.noDepsolver {
		fcfg.RequestTopic = message.TopicDepsolverRequests
		ds, err := depsolver.New(depsolver.Config{Broker: opts, URL: project, Branch: f.branch,
			Dir: filepath.Join(st.root, "depsolver", "sources"), StateFile: filepath.Join(st.root, "depsolver", "state.json"),
			CollectorURL: repoURL, Listen: f.depsolverListen, BaseInterval: f.baseInterval, RunnerRoot: st.runner, ArtifactToken: artifactToken, ArtifactAllowPlainHTTP: f.allowPlainHTTP,
			Substitute: mirror.Substitute, ThisHost: "127.0.0.1", Logger: logger.With("component", "depsolver"),
			OnListen: func(a net.Addr) { ready("dependencies", a) }})
		if err != nil {
			return err
		}
		g.Go("depsolver", func() error { return ds.Run(gctx) })
	}
	g.Go("fetch", func() error { return fetch.Run(gctx, fcfg) })
	g.Go("events", func() error { return events.run(gctx, opts, eventsFrom) })
	g.Go("metrics", func() error {
		return metrics.Serve(gctx, f.metrics, metrics.Mux(client.Ping), logger, func(a net.Addr) { ready("health and metrics", a) })
	})
	go func() {
		// Print where everything is once the servers listen.
		var places []string
		for len(places) < cap(listening) {
			select {
			case <-gctx.Done():
				return
			case p := <-listening:
				places = append(places, fmt.Sprintf("  %-22s %s", p.name, p.addr))
			}
		}
		defer events.release()
		fmt.Fprintf(env.Stdout, "Cloud Builder is up (state in %s)\n", st.root)
		fmt.Fprintf(env.Stdout, "  %-22s %s\n", "broker", brokerHost)
		fmt.Fprintf(env.Stdout, "  %-22s %s/  (status: %s/api/v1/status)\n", "repositories", repoURL, repoURL)
		fmt.Fprintf(env.Stdout, "  %-22s %s/ui/  (token for rebuilds and remote reading: %s)\n", "web UI", repoURL, st.uiToken)
		for _, p := range places {
			fmt.Fprintln(env.Stdout, p)
		}
		fmt.Fprintf(env.Stdout, "  %-22s %s\n", "source repository", project)
		fmt.Fprintf(env.Stdout, "\nTalk to it with cb-ctl:\n  export CB_BROKER_CONFIG=%s CB_RUNNER_CONFIG=%s CB_CTL_CONFIG=%s\n  cb-ctl --watch\n", st.brokerConfig, st.runnerConfig, st.ctlConfig)
		if !f.noDepsolver {
			fmt.Fprintf(env.Stdout, "  cb-ctl --dependency-graph --depsolver-url http://%s\n", f.depsolverListen)
		}
		fmt.Fprintf(env.Stdout, "\nBuild events (more detail: --log-level info):\n")
	}()
	err = g.Wait()
	logger.Info("stopped", "cause", context.Cause(ctx))
	// The last clients go before the broker, or they would warn about the
	// broker being gone on the way out.
	client.Close()
	uiFeed.Close()
	uiClient.Close()
	return errors.Join(err, emb.Close())
}

// lazyPublisher lets the collector, created before the broker client,
// publish through it once it exists; events before that are dropped (the
// depsolver also reacts to the builds' final responses).
type lazyPublisher struct {
	mu sync.Mutex
	c  *broker.Client
}

func (l *lazyPublisher) set(c *broker.Client) {
	l.mu.Lock()
	l.c = c
	l.mu.Unlock()
}

func (l *lazyPublisher) Publish(ctx context.Context, topic string, value []byte) error {
	l.mu.Lock()
	c := l.c
	l.mu.Unlock()
	if c == nil {
		return errors.New("broker client not ready")
	}
	return c.Publish(ctx, topic, value)
}

// findExamples locates the shipped examples directory.
func findExamples(env *Env, flagValue string) (string, error) {
	candidates := []string{flagValue}
	if flagValue == "" {
		candidates = []string{
			filepath.Join(filepath.Dir(filepath.Dir(env.Exe)), "examples"),
			"examples",
			"/usr/share/cloud-builder/examples",
		}
	}
	for _, c := range candidates {
		if c == "" {
			continue
		}
		if fi, err := os.Stat(filepath.Join(c, "projects")); err == nil && fi.IsDir() {
			return filepath.Abs(c)
		}
	}
	return "", fmt.Errorf("no examples directory with projects/ found (tried %s); use --examples or --project", strings.Join(candidates, ", "))
}

// syncExamples makes the examples a git repository (bare origin plus a
// work tree) and commits whatever changed since the last start, so
// cb-fetch sees exactly the changed examples.
func syncExamples(ctx context.Context, examples string, st upState, logger *slog.Logger) error {
	gitc := func(dir string, args ...string) error {
		cmd := exec.CommandContext(ctx, "git", append([]string{"-c", "user.name=Cloud Builder", "-c", "user.email=cloud-builder@localhost", "-c", "init.defaultBranch=main"}, args...)...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("git %s: %w: %s", args[0], err, strings.TrimSpace(string(out)))
		}
		return nil
	}
	if _, err := os.Stat(filepath.Join(st.origin, "HEAD")); err != nil {
		if err := gitc(st.root, "init", "-q", "--bare", st.origin); err != nil {
			return err
		}
	}
	if _, err := os.Stat(filepath.Join(st.work, ".git")); err != nil {
		if err := os.RemoveAll(st.work); err != nil {
			return err
		}
		if err := gitc(st.root, "init", "-q", st.work); err != nil {
			return err
		}
		if err := gitc(st.work, "remote", "add", "origin", st.origin); err != nil {
			return err
		}
	}
	// Replace the work tree's projects/ with the shipped ones.
	if err := os.RemoveAll(filepath.Join(st.work, "projects")); err != nil {
		return err
	}
	if err := buildroot.CopyTree(filepath.Join(examples, "projects"), filepath.Join(st.work, "projects"), ".git"); err != nil {
		return err
	}
	if err := gitc(st.work, "add", "-A"); err != nil {
		return err
	}
	if err := gitc(st.work, "diff", "--cached", "--quiet"); err == nil {
		return nil // unchanged since the last start
	}
	if err := gitc(st.work, "commit", "-q", "-m", "Update the shipped examples"); err != nil {
		return err
	}
	logger.Info("examples committed to the local source repository", "repo", st.origin)
	return gitc(st.work, "push", "-q", "origin", "HEAD:main")
}

// readOrCreateToken returns the token in path, creating a random one.
func readOrCreateToken(path string) (string, error) {
	if b, err := os.ReadFile(path); err == nil && len(strings.TrimSpace(string(b))) > 0 {
		return strings.TrimSpace(string(b)), nil
	}
	buf := make([]byte, 24)
	if _, err := rand.Read(buf); err != nil {
		return "", err
	}
	tok := hex.EncodeToString(buf)
	if err := os.WriteFile(path, []byte(tok+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("write token: %w", err)
	}
	return tok, nil
}

// upConfigs returns the configuration files cb up writes, by path. The
// broker config and cbctl.yml pass the original's schemas
// (cloud_builder_broker_schema, cbctl_config_schema); what only this
// implementation knows goes to the runner config.
// localURL is the plain HTTP URL this machine reaches a server listening
// on listen at: an unspecified host (every interface) is reached on
// loopback, so the token clients of cb up stay on loopback too.
func localURL(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "http://" + listen
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port)
}

func upConfigs(st upState, brokerHost string, account *config.SASL, group, repoURL, uploadTokenFile, artifactListen, artifactURL string, allowPlainHTTP bool) map[string]any {
	user, home := "root", os.Getenv("HOME")
	if u, err := osuser.Current(); err == nil {
		user, home = u.Username, u.HomeDir
	}
	runner := &config.Runner{
		Collector: config.Endpoint{URL: repoURL, TokenFile: uploadTokenFile},
		Artifacts: config.Endpoint{Listen: artifactListen, URL: artifactURL, TokenFile: st.artifactToken, AllowPlainHTTP: allowPlainHTTP},
	}
	runner.Ctl.Artifacts = config.Endpoint{TokenFile: st.artifactToken, AllowPlainHTTP: allowPlainHTTP}
	runner.Broker.SASL = account
	return map[string]any{
		st.brokerConfig: &config.Broker{Broker: config.BrokerSection{Host: brokerHost}, Runner: config.RunnerSection{Group: group}, ThisHost: "127.0.0.1"},
		st.runnerConfig: runner,
		// ssh_user and ssh_pkey_file are required by the original's
		// schema, which fetches logs over ssh; this cb-ctl uses the
		// artifact endpoint instead.
		st.ctlConfig: &config.Ctl{Cluster: config.Cluster{SSHUser: user, SSHPkeyFile: filepath.Join(home, ".ssh", "id_rsa"), RunnerCount: 1}},
	}
}
