package cli

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/cloud-builder/cb/internal/artifact"
	"github.com/cloud-builder/cb/internal/bearer"
	"github.com/cloud-builder/cb/internal/config"
	"github.com/cloud-builder/cb/internal/info"
	"github.com/cloud-builder/cb/internal/metrics"
)

func init() {
	register(&Command{Name: "info", Summary: "answer build info requests and serve build artifacts (logs, binaries)", Run: runInfo})
}

// infoDefaultArtifactListen is where the artifact endpoint listens unless
// configured: loopback only. Clients elsewhere need an address set
// explicitly, and TLS or artifacts.allow_plain_http. It always requires a
// token or a client certificate.
const infoDefaultArtifactListen = artifact.DefaultListen

func runInfo(ctx context.Context, env *Env, args []string) int {
	fs, common := newFlagSet(env, "info", "[flags]")
	brokerConfig := fs.String("broker-config", env.Paths().BrokerConfig, "broker config file (env "+config.EnvBrokerConfig+")")
	runnerConfig := fs.String("runner-config", env.Paths().RunnerConfig, "runner config file: artifacts endpoint, SASL (env "+config.EnvRunnerConfig+")")
	runnerRoot := fs.String("runner-root", env.Paths().RunnerRoot, "runner root holding the build targets (env "+config.EnvRunnerRoot+")")
	thisHost := fs.String("this-host", "", "this runner's address in answers (default: this_host of the broker config)")
	updateInterval := infoDuration{d: time.Second, unit: time.Second}
	fs.Var(&updateInterval, "update-interval", "pause after a broker error before polling again (seconds, or a duration like 2s)")
	pollTimeout := infoDuration{d: 5 * time.Second, unit: time.Millisecond}
	fs.Var(&pollTimeout, "poll-timeout", "bound of one broker poll (milliseconds, or a duration like 5000ms)")
	respondAlways := fs.Bool("respond-always", false, "answer every request, also for targets never built here, so clients can stop at runner_count answers")
	artifactListen := fs.String("artifact-listen", "", "artifact endpoint address (default: artifacts.listen of the runner config, else "+infoDefaultArtifactListen+"); \"off\" disables it")
	artifactURL := fs.String("artifact-url", "", "artifact endpoint URL as clients reach it (default: artifacts.url, else http(s)://<this_host>:<port>)")
	metricsListen := fs.String("metrics-listen", "", "serve /healthz and /metrics here too (the artifact endpoint serves them as well)")
	checkConfig := fs.Bool("check-config", false, "validate the configuration and exit")
	if code, done := parse(fs, args); done {
		return code
	}
	var c checks
	c.positive("--update-interval", updateInterval.d)
	c.positive("--poll-timeout", pollTimeout.d)
	if *artifactListen != "off" {
		c.addr("--artifact-listen", *artifactListen)
	}
	c.addr("--metrics-listen", *metricsListen)
	if code, ok := c.report(env, "info"); !ok {
		return code
	}
	logger := common.Logger(env.Stderr, "info")
	cfg, err := loadConfig(logger, *brokerConfig, *runnerConfig)
	if err != nil {
		return badConfig(env, "info", err)
	}
	opts, err := brokerOptions(cfg, logger, "cb-info")
	if err != nil {
		return fail(env, "info", fmt.Errorf("%s: %w", *brokerConfig, err))
	}
	host := *thisHost
	if host == "" {
		host = cfg.ThisHost
	}
	ep := cfg.Artifacts
	token, err := ep.ReadToken()
	if err != nil {
		return fail(env, "info", fmt.Errorf("%s: artifacts: %w", *runnerConfig, err))
	}
	listen := *artifactListen
	if listen == "" {
		listen = ep.Listen
	}
	if listen == "" {
		listen = infoDefaultArtifactListen
	}
	if listen != "off" {
		if err := checkAddr(listen); err != nil {
			fmt.Fprintf(env.Stderr, "cb-info: %s: artifacts.listen %q: %v\n", *runnerConfig, listen, err)
			return ExitUsage
		}
	}
	url := *artifactURL
	if url == "" {
		url = ep.URL
	}
	acfg := artifact.Config{Root: *runnerRoot, Token: token, ClientCA: ep.ClientCA, TLSCert: ep.TLSCert, TLSKey: ep.TLSKey,
		Listen: listen, AllowPlainHTTP: ep.AllowPlainHTTP, Logger: logger}
	serveArtifacts := listen != "off"
	if serveArtifacts && token == "" && ep.ClientCA == "" {
		logger.Warn("artifact endpoint disabled: set artifacts.token, token_file or client_ca in the runner config", "config", *runnerConfig)
		serveArtifacts = false
	}
	// What ListenAndServe refuses at start, named before it: only a
	// literal loopback address or localhost passes here.
	if h, _, _ := net.SplitHostPort(listen); serveArtifacts && ep.TLSCert == "" && !ep.AllowPlainHTTP && !bearer.Loopback(h) {
		fmt.Fprintf(env.Stderr, "cb-info: %s: artifacts.listen %q is not loopback: set tls_cert and tls_key, or allow_plain_http: true\n", *runnerConfig, listen)
		return ExitUsage
	}
	if *checkConfig {
		fmt.Fprintln(env.Stdout, "configuration ok")
		return ExitOK
	}

	g, gctx := newGroup(ctx)
	if serveArtifacts {
		ready := make(chan net.Addr, 1)
		g.Go("artifacts", func() error {
			return artifact.ListenAndServe(gctx, acfg, func(a net.Addr) { ready <- a })
		})
		select {
		case a := <-ready:
			if url == "" {
				url = infoArtifactURL(host, a, acfg.TLSCert != "")
			}
			logger.Info("artifact endpoint listening", "addr", a.String(), "url", url)
		case <-gctx.Done():
		}
	} else {
		url = ""
	}
	if *metricsListen != "" {
		g.Go("metrics", func() error { return metrics.Serve(gctx, *metricsListen, metrics.Mux(nil), logger, nil) })
	}
	g.Go("info", func() error {
		return info.Run(gctx, info.Config{Broker: opts, Root: *runnerRoot, ThisHost: host, RespondAlways: *respondAlways,
			ArtifactURL: url, PollTimeout: pollTimeout.d, UpdateInterval: updateInterval.d, Logger: logger})
	})
	if err := g.Wait(); err != nil {
		return fail(env, "info", err)
	}
	return ExitOK
}

// infoArtifactURL is the default artifact URL: this_host with the port the
// endpoint listens on.
func infoArtifactURL(host string, a net.Addr, tls bool) string {
	scheme := "http"
	if tls {
		scheme = "https"
	}
	port := "8081"
	if ta, ok := a.(*net.TCPAddr); ok {
		port = strconv.Itoa(ta.Port)
	}
	return scheme + "://" + net.JoinHostPort(host, port)
}

// infoDuration accepts the original's plain numbers (in unit) and Go
// durations ("5000ms", "2s").
type infoDuration struct {
	d    time.Duration
	unit time.Duration
}

func (v *infoDuration) String() string { return v.d.String() }

func (v *infoDuration) Set(s string) error {
	if n, err := strconv.ParseFloat(strings.TrimSpace(s), 64); err == nil {
		if n < 0 {
			return fmt.Errorf("negative duration %q", s)
		}
		v.d = time.Duration(n * float64(v.unit))
		return nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return fmt.Errorf("invalid duration %q", s)
	}
	v.d = d
	return nil
}
