package cli

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"slices"
	"strings"

	"github.com/cloud-builder/cb/internal/broker"
	"github.com/cloud-builder/cb/internal/config"
	"github.com/cloud-builder/cb/internal/metrics"
)

func init() {
	register(&Command{Name: "broker", Summary: "run the embedded Kafka-protocol broker", Run: runBroker})
}

// envBrokerDataDir overrides the default data directory of `cb broker`.
const envBrokerDataDir = "CB_BROKER_DATA_DIR"

const defaultBrokerDataDir = "/var/lib/cloud_builder/broker"

// topicList is a repeatable flag; a comma-separated value adds several.
type topicList []string

func (l *topicList) String() string { return strings.Join(*l, ",") }

func (l *topicList) Set(v string) error {
	for _, t := range strings.Split(v, ",") {
		if t = strings.TrimSpace(t); t != "" {
			if err := broker.ValidateTopic(t); err != nil {
				return err
			}
			if !slices.Contains(*l, t) {
				*l = append(*l, t)
			}
		}
	}
	return nil
}

func runBroker(ctx context.Context, env *Env, args []string) int {
	fs, common := newFlagSet(env, "broker", "[--listen host:port] [--data-dir DIR] [--partitions N] [--runner-group NAME ...] [--tls-cert FILE --tls-key FILE]\n\nWith broker.sasl in the runner config, clients must authenticate with those\ncredentials.")
	dataDir := defaultBrokerDataDir
	if d := env.Getenv(envBrokerDataDir); d != "" {
		dataDir = d
	}
	listen := fs.String("listen", config.DefaultBrokerHost, "address to listen on (port 0 picks a free one); loopback unless told otherwise")
	advertise := fs.String("advertise", "", "host clients are told to connect to (default: the listen host, or this host's name when listening on all interfaces)")
	fs.StringVar(&dataDir, "data-dir", dataDir, "directory that keeps topics, records and committed offsets across restarts (env "+envBrokerDataDir+")")
	partitions := fs.Int("partitions", 4, "partitions of the topics created at start: the number of runners a group can spread over")
	fsync := fs.Bool("fsync", false, "fsync every write before acknowledging it (survives power loss, slower)")
	var groups topicList
	fs.Var(&groups, "runner-group", "runner group topic to create (repeatable; runner.group of the broker config is added)")
	brokerConfig := fs.String("broker-config", env.Paths().BrokerConfig, "broker config file; broker.tls.ssl_cafile is what the broker's own client trusts (env "+config.EnvBrokerConfig+")")
	runnerConfig := fs.String("runner-config", env.Paths().RunnerConfig, "runner config file: broker.sasl, the credentials clients must present (env "+config.EnvRunnerConfig+")")
	tlsCert := fs.String("tls-cert", "", "certificate (PEM, with its chain) to speak TLS only; needs --tls-key")
	tlsKey := fs.String("tls-key", "", "private key of --tls-cert")
	maxRequest := fs.Int64("max-request-bytes", broker.DefaultMaxRequestBytes, "largest request a client may send; a larger one closes its connection")
	maxConns := fs.Int("max-connections", broker.DefaultMaxConnections, "open client connections at most; more are closed at once")
	checkConfig := fs.Bool("check-config", false, "validate the configuration and exit")
	metricsListen := fs.String("metrics-listen", "", "serve /healthz and /metrics on this address")
	if code, done := parse(fs, args); done {
		return code
	}
	var c checks
	if dataDir == "" {
		c.add("--data-dir is empty: the broker keeps requests on disk")
	}
	if *partitions < 1 || *partitions > 10000 {
		c.add("--partitions %d: want 1 to 10000", *partitions)
	}
	c.addr("--listen", *listen)
	c.addr("--metrics-listen", *metricsListen)
	if (*tlsCert == "") != (*tlsKey == "") {
		c.add("--tls-cert and --tls-key go together")
	}
	if *maxRequest < 1024 || *maxRequest > 1<<31-1 {
		c.add("--max-request-bytes %d: want 1024 to %d", *maxRequest, 1<<31-1)
	}
	c.atLeast("--max-connections", *maxConns, 1)
	if code, ok := c.report(env, "broker"); !ok {
		return code
	}
	logger := common.Logger(env.Stderr, "broker")
	cfg, err := loadConfig(logger, *brokerConfig, *runnerConfig)
	if err != nil {
		return badConfig(env, "broker", err)
	}
	security, err := embeddedSecurity(cfg, *tlsCert, *tlsKey)
	if err != nil {
		return badConfig(env, "broker", err)
	}
	if g := cfg.Runner.Group; g != "" {
		if err := groups.Set(g); err != nil {
			return fail(env, "broker", fmt.Errorf("runner.group of %s: %w", *brokerConfig, err))
		}
	}
	if *checkConfig {
		fmt.Fprintln(env.Stdout, "configuration ok")
		return ExitOK
	}

	eo := broker.EmbeddedOptions{
		Listen:          *listen,
		Advertise:       *advertise,
		DataDir:         dataDir,
		Fsync:           *fsync,
		Partitions:      int32(*partitions),
		Topics:          groups,
		Logger:          logger,
		MaxRequestBytes: *maxRequest,
		MaxConnections:  *maxConns,
	}
	security.apply(&eo)
	if len(eo.Users) == 0 && !isLoopback(*listen) {
		logger.Warn("the broker listens beyond this machine and anyone who reaches it may use it; set broker.sasl in the runner config to require credentials", "listen", *listen)
	}
	e, err := broker.StartEmbedded(eo)
	if err != nil {
		return fail(env, "broker", err)
	}
	metricsDone := make(chan error, 1)
	if *metricsListen != "" {
		// Healthy while a client of its own can reach the broker.
		client, err := broker.New(e.ClientOptions("cb-broker", logger))
		if err != nil {
			e.Close()
			return fail(env, "broker", err)
		}
		defer client.Close()
		go func() {
			metricsDone <- metrics.Serve(ctx, *metricsListen, metrics.Mux(client.Ping), logger, func(a net.Addr) {
				logger.Info("metrics and health", "url", "http://"+a.String()+"/metrics")
			})
		}()
	} else {
		metricsDone <- nil
	}
	<-ctx.Done()
	if err := <-metricsDone; err != nil {
		logger.Warn("metrics server", "err", err)
	}
	logger.Info("stopping embedded broker", "cause", context.Cause(ctx))
	if err := e.Close(); err != nil {
		return fail(env, "broker", err)
	}
	logger.Info("embedded broker stopped; state saved", "data_dir", dataDir)
	return ExitOK
}

// brokerSecurity is what the embedded broker requires of clients.
type brokerSecurity struct {
	users     []broker.SASL
	tls       *tls.Config
	clientTLS *tls.Config
}

func (s brokerSecurity) apply(o *broker.EmbeddedOptions) {
	o.Users, o.TLS, o.ClientTLS = s.users, s.tls, s.clientTLS
}

// embeddedSecurity reads the embedded broker's security settings: the
// runner config's broker.sasl is the account clients must use (the one
// every service of this installation presents), --tls-cert/--tls-key turn
// on TLS, and broker.tls of the broker config is what the broker's own
// client trusts.
func embeddedSecurity(cfg *config.Broker, certFile, keyFile string) (brokerSecurity, error) {
	var s brokerSecurity
	if a := cfg.Broker.SASL; a != nil {
		if a.Username == "" || a.Password == "" {
			return s, fmt.Errorf("broker.sasl of %s: username and password are required to protect the broker", cfg.RunnerFile)
		}
		s.users = []broker.SASL{{Mechanism: a.Mechanism, User: a.Username, Password: a.Password}}
	}
	if certFile == "" {
		return s, nil
	}
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return s, fmt.Errorf("broker certificate: %w", err)
	}
	s.tls = &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}
	if t := cfg.Broker.TLS; t != nil {
		if s.clientTLS, err = broker.TLSConfig(t.CAFile, t.CertFile, t.KeyFile); err != nil {
			return s, fmt.Errorf("broker.tls: %w", err)
		}
	}
	return s, nil
}

// isLoopback reports whether a listen address is on this machine only.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
