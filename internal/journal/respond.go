package journal

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/cloud-builder/cb/internal/atomicfile"
	"github.com/cloud-builder/cb/internal/broker"
	"github.com/cloud-builder/cb/internal/message"
	"github.com/cloud-builder/cb/internal/target"
)

// Finish gives the entry its final response: it is written to the
// target's result file (which cb-info reads and recovery re-publishes),
// the entry is marked finished, then the response is published and the
// entry marked responded. The order makes a crash at any point
// recoverable without a second build and without losing the reason: a
// finished entry always has its result file. t may be nil when the request
// names no valid target; then there is no result file and a failed publish
// leaves nothing to resend but the reason the target was invalid.
func (e *Entry) Finish(ctx context.Context, pub broker.Publisher, t *target.Target, final *message.Response, logger *slog.Logger) error {
	data, err := message.Encode(final)
	if err != nil {
		return fmt.Errorf("encode final response: %w", err)
	}
	if t != nil {
		if err := WriteResult(*t, data); err != nil {
			return err
		}
	}
	e.Code = final.ResponseCode
	if err := e.Advance(Finished); err != nil {
		return err
	}
	return e.Respond(ctx, pub, data, logger)
}

// ErrResultFile marks a final response that could not be recorded in the
// result file; nothing was published and the entry did not advance.
var ErrResultFile = errors.New("write result file")

// WriteResult records an encoded final response in t's result file.
func WriteResult(t target.Target, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(t.ResultFile()), 0o755); err != nil {
		return fmt.Errorf("%w: %w", ErrResultFile, err)
	}
	if err := atomicfile.WriteFile(t.ResultFile(), data, 0o644); err != nil {
		return fmt.Errorf("%w: %w", ErrResultFile, err)
	}
	return nil
}

// Respond publishes the entry's recorded final response data, retrying
// while the broker is away, then marks the entry responded.
func (e *Entry) Respond(ctx context.Context, pub broker.Publisher, data []byte, logger *slog.Logger) error {
	if err := broker.PublishRetry(ctx, pub, message.TopicResponse, data, logger); err != nil {
		return err
	}
	if logger != nil {
		logger.Info("final response sent", "response_code", e.Code)
	}
	return e.Advance(Responded)
}
