package message

import (
	"strings"
	"testing"
	"time"
)

func TestHeartbeatRoundTrip(t *testing.T) {
	h := &Heartbeat{
		SchemaVersion: SchemaVersion, Identity: "CBScheduler:10.0.0.5:42:(system)", RunnerGroup: "debian",
		SourceIP: "10.0.0.5", ArtifactURL: "https://10.0.0.5:8081", BuildLimit: 4, Interval: 10,
		QueueLag: 3, Running: []string{"projects/Debian/cb-hello@bookworm.x86_64"}, Waiting: 1,
		Time: FormatTime(time.Date(2026, 11, 30, 9, 0, 0, 0, time.UTC)),
	}
	data, err := Encode(h)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeHeartbeat(data)
	if err != nil {
		t.Fatalf("decode %s: %v", data, err)
	}
	if got.Identity != h.Identity || got.RunnerGroup != "debian" || got.BuildLimit != 4 || got.QueueLag != 3 ||
		got.Waiting != 1 || len(got.Running) != 1 || got.Running[0] != h.Running[0] || got.ArtifactURL != h.ArtifactURL ||
		got.Interval != 10 || !got.SentAt().Equal(time.Date(2026, 11, 30, 9, 0, 0, 0, time.UTC)) {
		t.Errorf("round trip: got %+v, want %+v", got, h)
	}
}

func TestHeartbeatRejectsBadFields(t *testing.T) {
	good := "schema_version: 0.2\nidentity: CBScheduler:h:1:(system)\nrunner_group: debian\nsource_ip: h\ninterval: 10\nutc_time: '2026-11-30 09:00:00.000000'\n"
	if _, err := DecodeHeartbeat([]byte(good)); err != nil {
		t.Fatalf("good heartbeat refused: %v", err)
	}
	for name, tc := range map[string]struct{ old, new, field string }{
		"group with slash": {"runner_group: debian", "runner_group: ../x", "runner_group"},
		"no identity":      {"identity: CBScheduler:h:1:(system)\n", "", "identity"},
		"interval zero":    {"interval: 10", "interval: 0", "interval"},
		"bad time":         {"'2026-11-30 09:00:00.000000'", "yesterday", "utc_time"},
		"running not list": {"interval: 10", "interval: 10\nrunning: x", "running"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := DecodeHeartbeat([]byte(strings.Replace(good, tc.old, tc.new, 1)))
			if err == nil || !strings.Contains(err.Error(), tc.field) {
				t.Errorf("got %v, want an error naming %s", err, tc.field)
			}
		})
	}
}

func TestHeartbeatBuildsRoundTrip(t *testing.T) {
	h := &Heartbeat{SchemaVersion: SchemaVersion, Identity: "CBScheduler:runner1:42:(system)", RunnerGroup: "suse", SourceIP: "runner1",
		Interval: 10, Time: FormatTime(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)),
		Builds: []HeartbeatBuild{{RequestID: "r1", Project: "projects/MS/xclock", Target: "TW.x86_64", State: HeartbeatRunning, PID: 7,
			LastOutput: FormatTime(time.Date(2026, 1, 2, 3, 4, 0, 0, time.UTC))}}}
	data, err := Encode(h)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeHeartbeat(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Builds) != 1 || got.Builds[0] != h.Builds[0] {
		t.Fatalf("builds %+v, want %+v", got.Builds, h.Builds)
	}
}

func TestHeartbeatBuildsRejectBadFields(t *testing.T) {
	base := "schema_version: 0.2\nidentity: CBScheduler:h:1:(system)\nrunner_group: debian\nsource_ip: h\ninterval: 10\nutc_time: '2026-11-30 09:00:00.000000'\n"
	for name, tc := range map[string]struct{ doc, want string }{
		"request id with a slash": {base + "builds:\n  - {request_id: ../x, state: running}\n", "builds[0].request_id"},
		"no state":                {base + "builds:\n  - {request_id: r1}\n", "builds[0].state"},
		"bad last output":         {base + "builds:\n  - {request_id: r1, state: running, last_output: soon}\n", "builds[0].last_output"},
		"builds not a list":       {base + "builds: many\n", "builds"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := DecodeHeartbeat([]byte(tc.doc))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to name %q", err, tc.want)
			}
		})
	}
}

func TestIdentityHost(t *testing.T) {
	for in, want := range map[string]string{
		"CBRun:runner1:42:projects/MS/xclock": "runner1",
		"CBScheduler:10.0.0.5:1:(system)":     "10.0.0.5",
		"garbage":                             "",
		"a:b":                                 "",
	} {
		if got := IdentityHost(in); got != want {
			t.Errorf("IdentityHost(%q) = %q, want %q", in, got, want)
		}
	}
}
