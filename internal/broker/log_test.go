package broker

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kslog"
)

func TestQuietKafkaLogger(t *testing.T) {
	for _, tc := range []struct {
		level      slog.Level
		kgoLevel   kgo.LogLevel
		want, hide []string
	}{
		{slog.LevelInfo, kgo.LogLevelWarn, []string{"level=WARN msg=warn", "level=ERROR msg=error"}, []string{"msg=info", "msg=debug"}},
		{slog.LevelDebug, kgo.LogLevelInfo, []string{"level=DEBUG msg=info", "level=WARN msg=warn"}, []string{"msg=debug"}},
		{kafkaDebug, kgo.LogLevelDebug, []string{"level=DEBUG-4 msg=debug", "level=DEBUG msg=info"}, nil},
	} {
		t.Run(tc.level.String(), func(t *testing.T) {
			var buf bytes.Buffer
			l := kslog.New(quietKafkaLogger(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: tc.level}))))
			if got := l.Level(); got != tc.kgoLevel {
				t.Errorf("client log level = %v, want %v", got, tc.kgoLevel)
			}
			for _, m := range []struct {
				l kgo.LogLevel
				s string
			}{{kgo.LogLevelDebug, "debug"}, {kgo.LogLevelInfo, "info"}, {kgo.LogLevelWarn, "warn"}, {kgo.LogLevelError, "error"}} {
				if m.l <= l.Level() {
					l.Log(m.l, m.s)
				}
			}
			out := buf.String()
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("missing %q in\n%s", w, out)
				}
			}
			for _, h := range tc.hide {
				if strings.Contains(out, h) {
					t.Errorf("%q should be hidden:\n%s", h, out)
				}
			}
		})
	}
}
