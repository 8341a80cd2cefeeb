package broker

import (
	"context"
	"log/slog"
)

// quietKafkaLogger returns l with franz-go's levels moved down one step:
// the client logs every group join, rebalance and metadata refresh at
// info, which is detail for whoever debugs the client, not news for an
// operator. Client info becomes debug and client debug goes below debug;
// warnings and errors stay. Run a service with --log-level debug to see
// the client's info lines again.
func quietKafkaLogger(l *slog.Logger) *slog.Logger {
	return slog.New(levelShift{l.Handler()})
}

// kafkaDebug is where the client's own debug lines end up.
const kafkaDebug = slog.LevelDebug - 4

type levelShift struct{ h slog.Handler }

func shift(l slog.Level) slog.Level {
	switch {
	case l >= slog.LevelWarn:
		return l
	case l >= slog.LevelInfo:
		return slog.LevelDebug
	}
	return kafkaDebug
}

func (s levelShift) Enabled(ctx context.Context, l slog.Level) bool {
	return s.h.Enabled(ctx, shift(l))
}

func (s levelShift) Handle(ctx context.Context, r slog.Record) error {
	r.Level = shift(r.Level)
	return s.h.Handle(ctx, r)
}

func (s levelShift) WithAttrs(as []slog.Attr) slog.Handler { return levelShift{s.h.WithAttrs(as)} }
func (s levelShift) WithGroup(n string) slog.Handler       { return levelShift{s.h.WithGroup(n)} }
