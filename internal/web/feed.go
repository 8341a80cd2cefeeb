package web

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/cloud-builder/cb/internal/broker"
	"github.com/cloud-builder/cb/internal/message"
)

// Poller is what Follow reads records from; *broker.Consumer satisfies it.
type Poller interface {
	Poll(ctx context.Context) ([]broker.Record, error)
}

// Topics are the topics the UI reads: every response, every heartbeat and
// the request topics of the given runner groups.
func Topics(groups []string) []string {
	t := []string{message.TopicResponse, message.TopicHeartbeat}
	for _, g := range groups {
		if g != "" && g != message.TopicResponse && g != message.TopicHeartbeat {
			t = append(t, g)
		}
	}
	return t
}

// NewConsumer reads the UI's topics from their start without a consumer
// group: the UI keeps no offsets, it replays the retained history into a
// fresh model on every start, and it takes nothing from the runners'
// shared queues.
func NewConsumer(opts broker.Options, groups []string) (*broker.Consumer, error) {
	return broker.NewConsumer(opts, broker.ConsumerConfig{Topics: Topics(groups), Start: broker.Earliest, MaxWait: 250 * time.Millisecond})
}

// Follow folds every record p delivers into m until ctx is done. A record
// that does not decode is logged and skipped: it is somebody else's bug
// and must not stop the page.
func Follow(ctx context.Context, p Poller, m *Model, logger *slog.Logger) error {
	for {
		recs, err := p.Poll(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			if errors.Is(err, broker.ErrClosed) {
				return fmt.Errorf("web feed: %w", err)
			}
			logger.Warn("poll failed, retrying", "err", err)
			continue
		}
		for _, r := range recs {
			if err := m.Apply(r.Topic, r.Value, r.Timestamp); err != nil {
				logger.Debug("record skipped", "topic", r.Topic, "offset", r.Offset, "err", err)
			}
		}
	}
}

// Apply decodes one record of topic and folds it in.
func (m *Model) Apply(topic string, value []byte, at time.Time) error {
	switch topic {
	case message.TopicResponse:
		r, err := message.DecodeResponse(value)
		if err != nil {
			return err
		}
		m.ApplyResponse(r, at)
	case message.TopicHeartbeat:
		h, err := message.DecodeHeartbeat(value)
		if err != nil {
			return err
		}
		m.ApplyHeartbeat(h, at)
	default:
		r, err := message.DecodeBuildRequest(value)
		if err != nil {
			return err
		}
		m.ApplyRequest(r, at)
	}
	return nil
}
