package cli

import (
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/cloud-builder/cb/internal/cachebudget"
	"github.com/cloud-builder/cb/internal/config"
)

// checks collects what is wrong with a service's numeric flags and config
// values, so that a service refuses nonsense at start (exit 2) instead of
// running with it.
type checks struct{ errs []string }

func (c *checks) add(format string, a ...any) { c.errs = append(c.errs, fmt.Sprintf(format, a...)) }

// atLeast: limits, counts.
func (c *checks) atLeast(name string, v, lowest int) {
	if v < lowest {
		c.add("%s %d: must be at least %d", name, v, lowest)
	}
}

// positive: intervals and timeouts.
func (c *checks) positive(name string, d time.Duration) {
	if d <= 0 {
		c.add("%s %s: must be greater than 0", name, d)
	}
}

// size: a disk budget (cachebudget.ParseSize); empty is the default.
func (c *checks) size(name, v string) {
	if _, err := cachebudget.ParseSize(v); err != nil {
		c.add("%s: %v", name, err)
	}
}

// addr: a host:port to listen on or connect to; port 0 to 65535 (0 picks a
// free port). Empty means unset and is not checked.
func (c *checks) addr(name, v string) {
	if v == "" {
		return
	}
	if err := checkAddr(v); err != nil {
		c.add("%s %q: %v", name, v, err)
	}
}

func checkAddr(v string) error {
	_, port, err := net.SplitHostPort(v)
	if err != nil {
		return fmt.Errorf("want host:port")
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("port %q is not a number from 0 to 65535", port)
	}
	return nil
}

// report prints every problem, one line each, and returns ExitUsage, or
// ok=true when there is none.
func (c *checks) report(env *Env, service string) (code int, ok bool) {
	if len(c.errs) == 0 {
		return 0, true
	}
	for _, e := range c.errs {
		fmt.Fprintf(env.Stderr, "cb-%s: %s\n", service, e)
	}
	return ExitUsage, false
}

// badConfig reports a configuration file that cannot be used (unreadable,
// unknown or moved keys, values out of range) like a bad flag: one line,
// exit status 2.
func badConfig(env *Env, service string, err error) int {
	fmt.Fprintf(env.Stderr, "cb-%s: %v\n", service, err)
	return ExitUsage
}

// configFile is one file a service reads its configuration from.
type configFile struct {
	key, path string
	found     bool
}

// logConfig writes a service's first log line: the configuration files
// it read, and for a missing broker config the defaults that are in
// effect instead, so that "connecting to 127.0.0.1:9092" never comes as a
// surprise.
func logConfig(logger *slog.Logger, cfg *config.Broker, files ...configFile) {
	var attrs []any
	missing := 0
	for _, f := range files {
		v := f.path
		if !f.found {
			v += " (not found)"
			missing++
		}
		attrs = append(attrs, f.key, v)
	}
	msg := "configuration read"
	if cfg != nil && cfg.File == "" {
		msg = "no broker config file, defaults in effect"
		group := cfg.Runner.Group
		if group == "" {
			group = "cb-build-request"
		}
		attrs = append(attrs, "broker.host", cfg.Broker.Host, "this_host", cfg.ThisHost, "runner.group", group)
	} else if missing == len(files) {
		msg = "no configuration file, defaults in effect"
	}
	logger.Info(msg, attrs...)
}

// brokerFiles are the broker and runner config of cfg for logConfig.
func brokerFiles(cfg *config.Broker, brokerPath, runnerPath string) []configFile {
	files := []configFile{{"broker_config", brokerPath, cfg.File != ""}}
	if runnerPath != "" {
		files = append(files, configFile{"runner_config", runnerPath, cfg.RunnerFile != ""})
	}
	return files
}

// loadConfig reads the broker config and, when runnerPath is set, the
// runner config, and logs the service's first line about them.
func loadConfig(logger *slog.Logger, brokerPath, runnerPath string, more ...configFile) (*config.Broker, error) {
	cfg, err := config.LoadBrokerFile(brokerPath)
	if err != nil {
		return nil, err
	}
	if runnerPath != "" {
		if err := cfg.LoadRunnerFile(runnerPath); err != nil {
			return nil, err
		}
	}
	logConfig(logger, cfg, append(brokerFiles(cfg, brokerPath, runnerPath), more...)...)
	return cfg, nil
}

// validLogFlags checks --log-level and --log-format.
func validLogFlags(level, format string) error {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	if f := strings.ToLower(format); f != "text" && f != "json" {
		return fmt.Errorf("--log-format %q: want text or json", format)
	}
	return nil
}
