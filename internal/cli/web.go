package cli

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/cloud-builder/cb/internal/broker"
	"github.com/cloud-builder/cb/internal/config"
	"github.com/cloud-builder/cb/internal/web"
)

func init() {
	register(&Command{Name: "web", Summary: "serve the status web UI: builds, logs, repositories, runners", Run: runWeb})
}

// runWeb is cb-web, the UI as a service of its own (a cluster's control
// plane). cb up serves the same UI on the collector's address.
func runWeb(ctx context.Context, env *Env, args []string) int {
	fs, common := newFlagSet(env, "web", "[--listen ADDR] [flags]")
	brokerConfig := fs.String("broker-config", env.Paths().BrokerConfig, "broker config file (env CB_BROKER_CONFIG)")
	runnerConfig := fs.String("runner-config", env.Paths().RunnerConfig, "runner config file: SASL, collector.url, the artifact token (cbctl.artifacts, else artifacts) (env "+config.EnvRunnerConfig+")")
	listen := fs.String("listen", "127.0.0.1:8090", "address to serve on")
	groups := fs.String("runner-groups", "", "comma-separated runner groups whose request topics are shown as queued (default: runner.group of the broker config)")
	collectorURL := fs.String("collector-url", "", "collector whose /api/v1/status lists the repositories (default: collector.url of the broker config)")
	repoURL := fs.String("repo-url", "", "repository base URL in the apt/dnf snippets (default: --collector-url)")
	tokenFile := fs.String("token-file", "", "file holding the UI token: needed to read from elsewhere than loopback and to rebuild")
	tlsCert := fs.String("tls-cert", "", "serve HTTPS with this certificate")
	tlsKey := fs.String("tls-key", "", "key of --tls-cert")
	clientCA := fs.String("client-ca", "", "accept client certificates signed by this CA as credentials")
	artifactCA := fs.String("artifact-ca", "", "CA of the runners' https artifact endpoints (default: system roots)")
	artifactCert := fs.String("artifact-cert", "", "client certificate for the runners' artifact endpoints")
	artifactKey := fs.String("artifact-key", "", "key of --artifact-cert")
	checkConfig := fs.Bool("check-config", false, "validate the configuration and exit")
	if code, done := parse(fs, args); done {
		return code
	}
	logger := common.Logger(env.Stderr, "web")
	cfg, err := loadConfig(logger, *brokerConfig, *runnerConfig)
	if err != nil {
		return fail(env, "web", err)
	}
	rcfg, _, err := config.LoadRunnerFile(*runnerConfig)
	if err != nil {
		return fail(env, "web", err)
	}
	opts, err := brokerOptions(cfg, logger, "cb-web")
	if err != nil {
		return fail(env, "web", fmt.Errorf("%s: %w", *brokerConfig, err))
	}
	gl := splitList(*groups)
	if len(gl) == 0 && cfg.Runner.Group != "" {
		gl = []string{cfg.Runner.Group}
	}
	if *collectorURL == "" {
		*collectorURL = cfg.Collector.URL
	}
	if *repoURL == "" {
		*repoURL = *collectorURL
	}
	token := ""
	if *tokenFile != "" {
		b, err := os.ReadFile(*tokenFile)
		if err != nil {
			return fail(env, "web", fmt.Errorf("token file: %w", err))
		}
		if token = strings.TrimSpace(string(b)); token == "" {
			return fail(env, "web", fmt.Errorf("token file %s is empty", *tokenFile))
		}
	}
	// The UI reads the runners' artifact endpoints as a client, like cb-ctl.
	artifactToken, err := rcfg.Ctl.Artifacts.ReadToken()
	allowPlain := rcfg.Ctl.Artifacts.AllowPlainHTTP
	if err == nil && artifactToken == "" {
		artifactToken, err = cfg.Artifacts.ReadToken()
		allowPlain = cfg.Artifacts.AllowPlainHTTP
	}
	if err != nil {
		return fail(env, "web", fmt.Errorf("%s: artifact token: %w", *runnerConfig, err))
	}
	var artifactTLS *tls.Config
	if *artifactCA != "" || *artifactCert != "" {
		if artifactTLS, err = broker.TLSConfig(*artifactCA, *artifactCert, *artifactKey); err != nil {
			return fail(env, "web", fmt.Errorf("artifact TLS: %w", err))
		}
	}
	serverTLS, err := webServerTLS(*tlsCert, *tlsKey, *clientCA)
	if err != nil {
		return fail(env, "web", err)
	}
	if *checkConfig {
		fmt.Fprintln(env.Stdout, "configuration ok")
		return ExitOK
	}
	client, err := broker.New(opts)
	if err != nil {
		return fail(env, "web", err)
	}
	defer client.Close()
	wcfg := web.Config{Publisher: client, Token: token, RepoURL: *repoURL, ArtifactToken: artifactToken,
		ArtifactAllowPlainHTTP: allowPlain, ArtifactTLS: artifactTLS, Logger: logger}
	if *collectorURL != "" {
		wcfg.Status = web.StatusFrom(*collectorURL, &http.Client{Timeout: 10 * time.Second})
	}
	if err := serveWeb(ctx, opts, gl, wcfg, logger, func(ui *web.Server) error {
		return listenWeb(ctx, *listen, serverTLS, ui, logger)
	}); err != nil {
		return fail(env, "web", err)
	}
	return ExitOK
}

// serveWeb runs the UI's feed and serve (which serves the UI's handler)
// until ctx is done or either fails.
func serveWeb(ctx context.Context, opts broker.Options, groups []string, cfg web.Config, logger *slog.Logger, serve func(*web.Server) error) error {
	cfg.Model = web.NewModel()
	ui, err := web.New(cfg)
	if err != nil {
		return err
	}
	defer ui.Close()
	cons, err := web.NewConsumer(opts, groups)
	if err != nil {
		return err
	}
	defer cons.Close()
	g, gctx := newGroup(ctx)
	stop := context.AfterFunc(gctx, ui.Close)
	defer stop()
	g.Go("feed", func() error { return web.Follow(gctx, cons, cfg.Model, logger) })
	g.Go("serve", func() error { return serve(ui) })
	return g.Wait()
}

func listenWeb(ctx context.Context, addr string, tc *tls.Config, ui *web.Server, logger *slog.Logger) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", addr, err)
	}
	scheme := "http"
	if tc != nil {
		ln = tls.NewListener(ln, tc)
		scheme = "https"
	}
	srv := &http.Server{Handler: ui.Handler(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
		ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelWarn)}
	logger.Info("web UI serving", "url", scheme+"://"+ln.Addr().String()+"/ui/")
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	ui.Close()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err = srv.Shutdown(sctx)
	if errors.Is(err, context.DeadlineExceeded) {
		err = srv.Close()
	}
	if e := <-errc; e != nil && !errors.Is(e, http.ErrServerClosed) {
		err = errors.Join(err, e)
	}
	return err
}

func webServerTLS(cert, key, clientCA string) (*tls.Config, error) {
	if cert == "" && key == "" {
		if clientCA != "" {
			return nil, errors.New("--client-ca needs --tls-cert and --tls-key")
		}
		return nil, nil
	}
	if cert == "" || key == "" {
		return nil, errors.New("--tls-cert and --tls-key go together")
	}
	c, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		return nil, fmt.Errorf("load TLS certificate: %w", err)
	}
	tc := &tls.Config{Certificates: []tls.Certificate{c}, MinVersion: tls.VersionTLS12}
	if clientCA != "" {
		pem, err := os.ReadFile(clientCA)
		if err != nil {
			return nil, fmt.Errorf("read client CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("no certificate in client CA %s", clientCA)
		}
		tc.ClientCAs, tc.ClientAuth = pool, tls.VerifyClientCertIfGiven
	}
	return tc, nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
