package cli

import (
	"context"
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
	fs, common := newFlagSet(env, "broker", "[--listen host:port] [--data-dir DIR] [--partitions N] [--runner-group NAME ...]")
	dataDir := defaultBrokerDataDir
	if d := env.Getenv(envBrokerDataDir); d != "" {
		dataDir = d
	}
	listen := fs.String("listen", config.DefaultBrokerHost, "address to listen on (port 0 picks a free one)")
	advertise := fs.String("advertise", "", "host clients are told to connect to (default: the listen host, or this host's name when listening on all interfaces)")
	fs.StringVar(&dataDir, "data-dir", dataDir, "directory that keeps topics, records and committed offsets across restarts (env "+envBrokerDataDir+")")
	partitions := fs.Int("partitions", 4, "partitions of the topics created at start: the number of runners a group can spread over")
	fsync := fs.Bool("fsync", false, "fsync every write before acknowledging it (survives power loss, slower)")
	var groups topicList
	fs.Var(&groups, "runner-group", "runner group topic to create (repeatable; runner.group of the broker config is added)")
	brokerConfig := fs.String("broker-config", env.Paths().BrokerConfig, "broker config file (env "+config.EnvBrokerConfig+")")
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
	if code, ok := c.report(env, "broker"); !ok {
		return code
	}
	logger := common.Logger(env.Stderr, "broker")
	cfg, err := loadConfig(logger, *brokerConfig, "")
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

	e, err := broker.StartEmbedded(broker.EmbeddedOptions{
		Listen:     *listen,
		Advertise:  *advertise,
		DataDir:    dataDir,
		Fsync:      *fsync,
		Partitions: int32(*partitions),
		Topics:     groups,
		Logger:     logger,
	})
	if err != nil {
		return fail(env, "broker", err)
	}
	metricsDone := make(chan error, 1)
	if *metricsListen != "" {
		// Healthy while a client of its own can reach the broker.
		client, err := broker.New(broker.Options{Brokers: e.Addrs(), Logger: logger})
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
