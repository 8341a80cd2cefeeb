package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Publisher sends one message to a topic and returns once the broker has
// it; *Client satisfies it.
type Publisher interface {
	Publish(ctx context.Context, topic string, value []byte) error
}

var _ Publisher = (*Client)(nil)

// PublishRetry publishes value to topic, retrying with backoff (0.5 s
// doubling to 30 s) while the broker is away, until it is accepted or ctx
// ends. A nil pub publishes nothing: a build without a broker.
func PublishRetry(ctx context.Context, pub Publisher, topic string, value []byte, logger *slog.Logger) error {
	if pub == nil {
		return nil
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	backoff := 500 * time.Millisecond
	for {
		err := pub.Publish(ctx, topic, value)
		if err == nil {
			return nil
		}
		logger.Warn("publish failed, retrying", "topic", topic, "err", err, "in", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("publish to %s: %w", topic, errors.Join(err, context.Cause(ctx)))
		case <-t.C:
		}
		backoff = min(backoff*2, 30*time.Second)
	}
}
