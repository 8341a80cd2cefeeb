package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cloud-builder/cb/internal/config"
)

// Nonsense numbers are refused at start with exit 2 and one clear line,
// before anything runs.
func TestServicesRefuseNonsenseFlags(t *testing.T) {
	for _, tc := range []struct {
		args  []string
		want  string
		files map[string]string
	}{
		{[]string{"cb-scheduler", "--build-limit", "-3"}, "--build-limit -3: must be at least 1", nil},
		{[]string{"cb-scheduler", "--poll-timeout", "0"}, "--poll-timeout 0: must be at least 1", nil},
		{[]string{"cb-scheduler", "--update-interval", "-1"}, "--update-interval -1", nil},
		{[]string{"cb-scheduler", "--build-timeout", "0s"}, "--build-timeout 0s: must be greater than 0", nil},
		{[]string{"cb-scheduler", "--metrics-listen", "127.0.0.1:99999"}, "0 to 65535", nil},
		{[]string{"cb-info", "--poll-timeout", "0"}, "--poll-timeout 0s: must be greater than 0", nil},
		{[]string{"cb-info", "--update-interval", "0"}, "--update-interval 0s", nil},
		{[]string{"cb-info", "--artifact-listen", "127.0.0.1:http-ish"}, "--artifact-listen", nil},
		{[]string{"cb-collect", "--update-interval", "0"}, "--update-interval 0: must be at least 1", nil},
		{[]string{"cb-collect", "--listen", "nowhere"}, "--listen \"nowhere\": want host:port", nil},
		{[]string{"cb-fetch", "--project", "file:///x", "--update-interval", "-5"}, "negative duration", nil},
		{[]string{"cb-fetch", "--project", "file:///x", "--update-interval", "0"}, "--update-interval 0s", nil},
		{[]string{"cb-broker", "--partitions", "-1"}, "--partitions -1", nil},
		{[]string{"cb", "up", "--build-limit", "0"}, "--build-limit 0: must be at least 1", nil},
		{[]string{"cb", "up", "--update-interval", "0s"}, "--update-interval 0s", nil},
		{[]string{"cb", "up", "--repo-listen", ":65536"}, "--repo-listen", nil},
		{[]string{"cb-prepare", "--build-timeout", "-1m"}, "--build-timeout -1m0s", nil},
		{[]string{"cb-scheduler", "--cache-budget", "0%"}, "--cache-budget: cache budget \"0%\"", nil},
		{[]string{"cb-prepare", "--cache-budget", "much"}, "--cache-budget", nil},
		{[]string{"cb-scheduler"}, "cache.budget", map[string]string{config.EnvRunnerConfig: "cache:\n  budget: 200%\n"}},
		{[]string{"cb-run", "--log-format", "xml"}, "--log-format \"xml\"", nil},
		// Config values are checked like flags.
		{[]string{"cb-ctl", "--watch"}, "cluster.runner_count: must not be negative", map[string]string{config.EnvCtlConfig: "cluster:\n  runner_count: -1\n"}},
		{[]string{"cb-info"}, "collector (line 1) belongs in the runner config", map[string]string{config.EnvBrokerConfig: "collector:\n  url: http://x\n"}},
		{[]string{"cb-scheduler"}, "broker.sasl.mechanism", map[string]string{config.EnvRunnerConfig: "broker:\n  sasl:\n    mechanism: MD5\n"}},
		// Plain HTTP for the artifact endpoint off loopback needs TLS or an explicit allowance.
		{[]string{"cb-info", "--check-config"}, "artifacts.listen \"0.0.0.0:8081\" is not loopback: set tls_cert and tls_key, or allow_plain_http: true",
			map[string]string{config.EnvRunnerConfig: "artifacts:\n  listen: 0.0.0.0:8081\n  token: t\n"}},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			env, _, stderr := serviceTestEnv(t)
			for k, doc := range tc.files {
				if err := os.WriteFile(env.Getenv(k), []byte(doc), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			if code := Run(t.Context(), env, tc.args); code != ExitUsage {
				t.Errorf("exit %d, want %d; stderr:\n%s", code, ExitUsage, stderr)
			}
			if !strings.Contains(stderr.String(), tc.want) {
				t.Errorf("stderr does not say %q:\n%s", tc.want, stderr)
			}
		})
	}
}

// The first log line of a service names the configuration files it read,
// or says which defaults are in effect.
func TestServicesLogTheirConfigurationFirst(t *testing.T) {
	env, stdout, stderr := serviceTestEnv(t)
	if code := Run(t.Context(), env, []string{"cb-scheduler", "--check-config"}); code != ExitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	first, _, _ := strings.Cut(stderr.String(), "\n")
	for _, w := range []string{"no broker config file, defaults in effect", "broker.host=127.0.0.1:9092", "this_host=", "runner.group=cb-build-request", "(not found)"} {
		if !strings.Contains(first, w) {
			t.Errorf("first line %q does not contain %q", first, w)
		}
	}
	if !strings.Contains(stdout.String(), "configuration ok") {
		t.Errorf("stdout %q", stdout)
	}

	broker, runner := env.Getenv(config.EnvBrokerConfig), env.Getenv(config.EnvRunnerConfig)
	if err := os.WriteFile(broker, []byte("broker:\n  host: 10.1.1.1:9092\nrunner:\n  group: suse\nthis_host: 10.1.1.2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(runner, []byte("collector:\n  url: http://repo:8080\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"cb-scheduler", "--check-config"}, {"cb-info", "--check-config"}} {
		env, _, stderr := serviceTestEnv(t)
		env.Getenv = func(k string) string {
			switch k {
			case config.EnvBrokerConfig:
				return broker
			case config.EnvRunnerConfig:
				return runner
			}
			return ""
		}
		if code := Run(t.Context(), env, args); code != ExitOK {
			t.Fatalf("%s: exit %d: %s", args[0], code, stderr)
		}
		first, _, _ := strings.Cut(stderr.String(), "\n")
		want := "msg=\"configuration read\" component=" + strings.TrimPrefix(args[0], "cb-") + " broker_config=" + broker + " runner_config=" + runner
		if !strings.Contains(first, want) {
			t.Errorf("%s: first line\n%s\ndoes not contain\n%s", args[0], first, want)
		}
	}
}

func TestParseSince(t *testing.T) {
	now := time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Time{
		"":                     {},
		"90m":                  now.Add(-90 * time.Minute),
		"2026-11-30T08:00:00Z": time.Date(2026, 11, 30, 8, 0, 0, 0, time.UTC),
	} {
		if got, err := parseSince(in, now); err != nil || !got.Equal(want) {
			t.Errorf("parseSince(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"-1h", "0s", "yesterday", "2026-13-01"} {
		if _, err := parseSince(bad, now); err == nil {
			t.Errorf("parseSince(%q) accepted", bad)
		}
	}
}

// serviceTestEnv points every configuration path into a fresh temp dir,
// where no file exists yet.
func serviceTestEnv(t *testing.T) (*Env, *lockedBuffer, *lockedBuffer) {
	t.Helper()
	dir := t.TempDir()
	files := map[string]string{
		config.EnvBrokerConfig: filepath.Join(dir, "broker.yml"),
		config.EnvRunnerConfig: filepath.Join(dir, "runner.yml"),
		config.EnvCtlConfig:    filepath.Join(dir, "cbctl.yml"),
		config.EnvSettings:     filepath.Join(dir, "cloud_builder"),
		config.EnvRunnerRoot:   filepath.Join(dir, "runner"),
		config.EnvRepoRoot:     filepath.Join(dir, "repo"),
		config.EnvSources:      filepath.Join(dir, "sources"),
		"HOME":                 dir,
	}
	stdout, stderr := &lockedBuffer{}, &lockedBuffer{}
	return &Env{Stdout: stdout, Stderr: stderr, Getenv: func(k string) string { return files[k] }, Exe: "/bin/false"}, stdout, stderr
}

// An artifact endpoint off loopback passes the check with TLS or with the
// explicit allowance.
func TestInfoPlainHTTPAllowance(t *testing.T) {
	for _, doc := range []string{
		"artifacts:\n  listen: 0.0.0.0:8081\n  token: t\n  allow_plain_http: true\n",
		"artifacts:\n  listen: 127.0.0.1:8081\n  token: t\n",
		"artifacts:\n  listen: 0.0.0.0:8081\n  token: t\n  tls_cert: /c.pem\n  tls_key: /k.pem\n",
	} {
		env, _, stderr := serviceTestEnv(t)
		if err := os.WriteFile(env.Getenv(config.EnvRunnerConfig), []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
		if code := Run(t.Context(), env, []string{"cb-info", "--check-config"}); code != ExitOK {
			t.Errorf("%q: exit %d: %s", doc, code, stderr)
		}
	}
}
