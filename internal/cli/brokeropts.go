package cli

import (
	"fmt"
	"log/slog"
	"strings"

	"github.com/cloud-builder/cb/internal/broker"
	"github.com/cloud-builder/cb/internal/config"
)

// brokerOptions turns the broker config into client options: broker.host
// is a comma-separated list of host:port seeds, broker.tls the original's
// ssl_* files, broker.sasl the optional credentials.
func brokerOptions(cfg *config.Broker, logger *slog.Logger, clientID string) (broker.Options, error) {
	o := broker.Options{ClientID: clientID, Logger: logger}
	for _, h := range strings.Split(cfg.Broker.Host, ",") {
		if h = strings.TrimSpace(h); h != "" {
			o.Brokers = append(o.Brokers, h)
		}
	}
	if len(o.Brokers) == 0 {
		return broker.Options{}, fmt.Errorf("broker.host: no broker address")
	}
	if t := cfg.Broker.TLS; t != nil {
		tc, err := broker.TLSConfig(t.CAFile, t.CertFile, t.KeyFile)
		if err != nil {
			return broker.Options{}, fmt.Errorf("broker.tls: %w", err)
		}
		o.TLS = tc
	}
	if s := cfg.Broker.SASL; s != nil {
		o.SASL = &broker.SASL{Mechanism: s.Mechanism, User: s.Username, Password: s.Password}
	}
	return o, nil
}
