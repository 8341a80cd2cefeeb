package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

const fullBroker = `broker:
  host: kafka1.example.net:9093,kafka2.example.net:9093
  tls:
    ssl_cafile: /etc/cb/ca.pem
    ssl_certfile: /etc/cb/client.pem
    ssl_keyfile: /etc/cb/client.key
runner:
  group: suse
this_host: 10.0.0.5
`

const fullRunner = `broker:
  sasl:
    mechanism: SCRAM-SHA-512
    username: runner
    password: secret
artifacts:
  listen: 0.0.0.0:8090
  url: https://10.0.0.5:8090
  token_file: /etc/cb/artifacts.token
  tls_cert: /etc/cb/art.pem
  tls_key: /etc/cb/art.key
collector:
  url: https://repo.example.net:8080
  token: upload-token
cbctl:
  artifacts:
    token_file: /etc/cb/client.token
`

func TestLoadBrokerFull(t *testing.T) {
	dir := t.TempDir()
	bp, rp := filepath.Join(dir, "broker.yml"), filepath.Join(dir, "runner.yml")
	for p, c := range map[string]string{bp: fullBroker, rp: fullRunner} {
		if err := os.WriteFile(p, []byte(c), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	b, err := LoadBrokerFile(bp)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.LoadRunnerFile(rp); err != nil {
		t.Fatal(err)
	}
	want := &Broker{
		File: bp, RunnerFile: rp,
		Broker: BrokerSection{
			Host: "kafka1.example.net:9093,kafka2.example.net:9093",
			TLS:  &TLS{CAFile: "/etc/cb/ca.pem", CertFile: "/etc/cb/client.pem", KeyFile: "/etc/cb/client.key"},
			SASL: &SASL{Mechanism: "SCRAM-SHA-512", Username: "runner", Password: "secret"},
		},
		Runner:   RunnerSection{Group: "suse"},
		ThisHost: "10.0.0.5",
		Artifacts: Endpoint{
			Listen: "0.0.0.0:8090", URL: "https://10.0.0.5:8090", TokenFile: "/etc/cb/artifacts.token",
			TLSCert: "/etc/cb/art.pem", TLSKey: "/etc/cb/art.key",
		},
		Collector: Endpoint{URL: "https://repo.example.net:8080", Token: "upload-token"},
	}
	if !reflect.DeepEqual(b, want) {
		t.Errorf("got  %+v\nwant %+v", b, want)
	}
}

// The original's broker file has only broker.host, broker.tls, runner.group
// and this_host; it must load unchanged.
func TestLoadBrokerOriginalFile(t *testing.T) {
	b, err := LoadBroker(strings.NewReader(`broker:
  host: 10.0.0.1:9092
  tls:
    ssl_cafile: /etc/pki/ca.pem
runner:
  group: fedora
this_host: 10.0.0.7
`))
	if err != nil {
		t.Fatal(err)
	}
	if b.Broker.Host != "10.0.0.1:9092" || b.Broker.TLS.CAFile != "/etc/pki/ca.pem" || b.Runner.Group != "fedora" || b.ThisHost != "10.0.0.7" || b.Broker.SASL != nil {
		t.Errorf("got %+v", b)
	}
}

func TestLoadRunnerSandbox(t *testing.T) {
	r, err := LoadRunner(strings.NewReader(`sandbox:
  ids: {uid: 200000, gid: 300000, count: 65536}
  memory: 4294967296
  pids: 2048
  cpu_weight: 50
  max_write: 10737418240
  log_idle: 30m
  prepare_timeout: 2h
  allow_repositories: [https://download.opensuse.org/repositories/]
`))
	if err != nil {
		t.Fatal(err)
	}
	sb := r.Sandbox
	if sb.IDs.UID != 200000 || sb.IDs.GID != 300000 || sb.IDs.Count != 65536 || sb.Memory != 4<<30 || sb.Pids != 2048 ||
		sb.CPUWeight != 50 || sb.MaxWrite != 10<<30 || sb.LogIdle != 30*time.Minute || sb.PrepareTimeout != 2*time.Hour ||
		len(sb.AllowRepositories) != 1 {
		t.Errorf("got %+v", sb)
	}
	if _, err := LoadRunner(strings.NewReader("sandbox:\n  memmory: 1\n")); err == nil {
		t.Error("a misspelt sandbox key was accepted")
	}
	// The original's broker file keeps its schema.
	if _, err := LoadBroker(strings.NewReader("runner:\n  sandbox:\n    memory: 1\n")); err == nil {
		t.Error("the broker config accepted a sandbox")
	}
}

func TestLoadBrokerDefaults(t *testing.T) {
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	for name, doc := range map[string]string{"empty": "", "blank": "\n  \n", "comment": "# nothing configured\n"} {
		t.Run(name, func(t *testing.T) {
			b, err := LoadBroker(strings.NewReader(doc))
			if err != nil {
				t.Fatal(err)
			}
			if b.Broker.Host != DefaultBrokerHost {
				t.Errorf("host %q, want %q", b.Broker.Host, DefaultBrokerHost)
			}
			if b.ThisHost != host {
				t.Errorf("this_host %q, want the host name %q", b.ThisHost, host)
			}
			if b.Broker.TLS != nil || b.Broker.SASL != nil || b.Runner.Group != "" {
				t.Errorf("unexpected settings %+v", b)
			}
		})
	}
}

func TestLoadBrokerRejects(t *testing.T) {
	tests := []struct {
		name, doc string
		want      []string // substrings of the error
	}{
		{"unknown top-level key", "brokr:\n  host: a:9092\n", []string{"brokr"}},
		{"unknown broker key", "broker:\n  hots: a:9092\n", []string{"hots"}},
		{"unknown tls key", "broker:\n  tls:\n    ssl_cafil: /ca\n", []string{"ssl_cafil"}},
		{"sasl moved", "broker:\n  sasl:\n    mechanism: PLAIN\n", []string{"broker.sasl", "runner config", EnvRunnerConfig}},
		{"artifacts moved", "artifacts:\n  listen: :8081\n", []string{"artifacts (line 1)", "runner config"}},
		{"collector moved", "collector:\n  url: http://x\n", []string{"collector", "runner config"}},
		{"unknown runner key", "runner:\n  groups: suse\n", []string{"groups"}},
		{"cert without key", "broker:\n  tls:\n    ssl_certfile: /c.pem\n", []string{"broker.tls", "ssl_keyfile"}},
		{"key without cert", "broker:\n  tls:\n    ssl_keyfile: /c.key\n", []string{"broker.tls", "ssl_certfile"}},
		{"host list", "broker:\n  host: [a, b]\n", []string{"invalid config"}},
		{"not YAML", "broker: [\n", []string{"invalid config"}},
		{"not a mapping", "- broker\n", []string{"invalid config"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := LoadBroker(strings.NewReader(tt.doc))
			if err == nil {
				t.Fatalf("accepted: %+v", b)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestLoadBrokerFile(t *testing.T) {
	dir := t.TempDir()
	b, err := LoadBrokerFile(filepath.Join(dir, "missing.yml"))
	if err != nil {
		t.Fatalf("missing file: %v", err)
	}
	if b.Broker.Host != DefaultBrokerHost {
		t.Errorf("missing file: host %q", b.Broker.Host)
	}

	good := filepath.Join(dir, "good.yml")
	if err := os.WriteFile(good, []byte(fullBroker), 0o600); err != nil {
		t.Fatal(err)
	}
	if b, err := LoadBrokerFile(good); err != nil || b.Runner.Group != "suse" {
		t.Errorf("good file: %+v, %v", b, err)
	}

	bad := filepath.Join(dir, "bad.yml")
	if err := os.WriteFile(bad, []byte("broker:\n  tls:\n    ssl_certfile: /c.pem\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadBrokerFile(bad); err == nil || !strings.Contains(err.Error(), bad) || !strings.Contains(err.Error(), "broker.tls") {
		t.Errorf("bad file: got %v, want an error naming %s and broker.tls", err, bad)
	}

	// A file that exists but cannot be read is an error, not the defaults.
	if os.Geteuid() != 0 {
		unreadable := filepath.Join(dir, "unreadable.yml")
		if err := os.WriteFile(unreadable, []byte(fullBroker), 0o000); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadBrokerFile(unreadable); err == nil {
			t.Error("unreadable file gave defaults")
		}
	}
	if _, err := LoadBrokerFile(dir); err == nil {
		t.Error("a directory as config file gave defaults")
	}
}

func TestLoadCtl(t *testing.T) {
	c, err := LoadCtl(strings.NewReader(`cluster:
  ssh_user: cb
  ssh_pkey_file: /home/cb/.ssh/id_ed25519
  runner_count: 3
  controlplane: 10.0.0.1
settings:
  use_control_plane_as_proxy: true
`))
	if err != nil {
		t.Fatal(err)
	}
	want := &Ctl{
		Cluster:  Cluster{SSHUser: "cb", SSHPkeyFile: "/home/cb/.ssh/id_ed25519", RunnerCount: 3, ControlPlane: "10.0.0.1"},
		Settings: CtlSettings{UseControlPlaneAsProxy: true},
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("got  %+v\nwant %+v", c, want)
	}

	empty, err := LoadCtl(strings.NewReader(""))
	if err != nil || !reflect.DeepEqual(empty, &Ctl{}) {
		t.Errorf("empty: %+v, %v", empty, err)
	}

	for name, tt := range map[string]struct{ doc, want string }{
		"negative runner_count": {"cluster:\n  runner_count: -1\n", "cluster.runner_count"},
		"runner_count string":   {"cluster:\n  runner_count: three\n", "invalid config"},
		"unknown key":           {"cluster:\n  ssh_usr: cb\n", "ssh_usr"},
		"unknown section":       {"clusters: {}\n", "clusters"},
		"proxy not a bool":      {"settings:\n  use_control_plane_as_proxy: maybe\n", "invalid config"},
		"artifacts moved":       {"artifacts:\n  token: t\n", "cbctl.artifacts"},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := LoadCtl(strings.NewReader(tt.doc)); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestLoadCtlFile(t *testing.T) {
	dir := t.TempDir()
	c, err := LoadCtlFile(filepath.Join(dir, "none.yml"))
	if err != nil || !reflect.DeepEqual(c, &Ctl{}) {
		t.Errorf("missing file: %+v, %v", c, err)
	}
	p := filepath.Join(dir, "cbctl.yml")
	if err := os.WriteFile(p, []byte("cluster:\n  runner_count: -2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadCtlFile(p); err == nil || !strings.Contains(err.Error(), p) {
		t.Errorf("got %v, want an error naming %s", err, p)
	}
}

func TestEndpointReadToken(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "token")
	if err := os.WriteFile(file, []byte("  from-file\n\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		e       Endpoint
		want    string
		wantErr bool
	}{
		{"none", Endpoint{}, "", false},
		{"inline", Endpoint{Token: "inline"}, "inline", false},
		{"file", Endpoint{TokenFile: file}, "from-file", false},
		{"inline wins", Endpoint{Token: "inline", TokenFile: file}, "inline", false},
		{"missing file", Endpoint{TokenFile: filepath.Join(dir, "nope")}, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.e.ReadToken()
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("ReadToken() = %q, %v; want %q, error %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestDefaultPaths(t *testing.T) {
	env := func(m map[string]string) func(string) string {
		return func(k string) string { return m[k] }
	}
	got := DefaultPaths(env(map[string]string{"HOME": "/home/cb"}))
	want := Paths{
		BrokerConfig: "/etc/cloud_builder_broker.yml",
		RunnerConfig: "/etc/cloud_builder_runner.yml",
		CtlConfig:    "/home/cb/.config/cb/cbctl.yml",
		Settings:     "/etc/cloud_builder",
		RunnerRoot:   "/var/tmp/CB",
		RepoRoot:     "/srv/www/projects",
		Sources:      "/home/cb/cloud_builder_sources",
	}
	if got != want {
		t.Errorf("defaults:\ngot  %+v\nwant %+v", got, want)
	}

	if p := DefaultPaths(env(nil)); p.CtlConfig != "/root/.config/cb/cbctl.yml" || p.Sources != "/root/cloud_builder_sources" {
		t.Errorf("without HOME: %+v", p)
	}

	over := DefaultPaths(env(map[string]string{
		"HOME":           "/home/cb",
		EnvBrokerConfig:  "/tmp/t/broker.yml",
		EnvRunnerConfig:  "/tmp/t/runner.yml",
		EnvCtlConfig:     "/tmp/t/cbctl.yml",
		EnvSettings:      "/tmp/t/cloud_builder",
		EnvRunnerRoot:    "/tmp/t/runner",
		EnvRepoRoot:      "/tmp/t/repo",
		EnvSources:       "/tmp/t/sources",
		"CB_UNUSED_NAME": "/x",
	}))
	wantOver := Paths{
		BrokerConfig: "/tmp/t/broker.yml",
		RunnerConfig: "/tmp/t/runner.yml",
		CtlConfig:    "/tmp/t/cbctl.yml",
		Settings:     "/tmp/t/cloud_builder",
		RunnerRoot:   "/tmp/t/runner",
		RepoRoot:     "/tmp/t/repo",
		Sources:      "/tmp/t/sources",
	}
	if over != wantOver {
		t.Errorf("overrides:\ngot  %+v\nwant %+v", over, wantOver)
	}

	// Each variable overrides exactly its own path.
	for _, name := range []string{EnvBrokerConfig, EnvRunnerConfig, EnvCtlConfig, EnvSettings, EnvRunnerRoot, EnvRepoRoot, EnvSources} {
		p := DefaultPaths(env(map[string]string{"HOME": "/home/cb", name: "/only"}))
		n := 0
		for _, v := range []string{p.BrokerConfig, p.RunnerConfig, p.CtlConfig, p.Settings, p.RunnerRoot, p.RepoRoot, p.Sources} {
			if v == "/only" {
				n++
			}
		}
		if n != 1 {
			t.Errorf("%s changed %d paths: %+v", name, n, p)
		}
	}

	// The real environment works through os.Getenv, as the commands use it.
	t.Setenv(EnvRunnerRoot, "/tmp/from-env")
	if p := DefaultPaths(os.Getenv); p.RunnerRoot != "/tmp/from-env" {
		t.Errorf("os.Getenv: runner root %q", p.RunnerRoot)
	}
}

func TestLoadRunnerCache(t *testing.T) {
	r, err := LoadRunner(strings.NewReader("cache:\n  budget: 200G\n"))
	if err != nil || r.Cache.Budget != "200G" {
		t.Fatalf("cache.budget: %+v, %v", r.Cache, err)
	}
	b := &Broker{}
	p := filepath.Join(t.TempDir(), "runner.yml")
	if err := os.WriteFile(p, []byte("cache:\n  budget: 40%\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := b.LoadRunnerFile(p); err != nil || b.Cache.Budget != "40%" {
		t.Errorf("merged cache: %+v, %v", b.Cache, err)
	}
}

func TestLoadRunnerRejects(t *testing.T) {
	for name, tt := range map[string]struct{ doc, want string }{
		"unknown key":            {"colector:\n  url: x\n", "colector"},
		"unknown sasl key":       {"broker:\n  sasl:\n    mechanism: PLAIN\n    user: x\n", "broker.sasl.user"},
		"bad sasl mechanism":     {"broker:\n  sasl:\n    mechanism: GSSAPI\n", "GSSAPI"},
		"missing sasl mechanism": {"broker:\n  sasl:\n    username: u\n", "broker.sasl.mechanism"},
		"broker host here":       {"broker:\n  host: a:1\n", "broker.host"},
		"bad cache budget":       {"cache:\n  budget: 150%\n", "cache.budget"},
		"cache budget no size":   {"cache:\n  budget: lots\n", "cache.budget"},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := LoadRunner(strings.NewReader(tt.doc)); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want an error containing %q", err, tt.want)
			}
		})
	}
	r, found, err := LoadRunnerFile(filepath.Join(t.TempDir(), "none.yml"))
	if err != nil || found || r.Collector.URL != "" {
		t.Errorf("missing file: %+v, %v, %v", r, found, err)
	}
}

// The shipped example files load.
func TestShippedExamples(t *testing.T) {
	deploy := filepath.Join("..", "..", "deploy")
	b, err := LoadBrokerFile(filepath.Join(deploy, "cloud_builder_broker.yml"))
	if err != nil || b.File == "" || b.Runner.Group != "suse" {
		t.Errorf("broker example: %+v, %v", b, err)
	}
	if err := b.LoadRunnerFile(filepath.Join(deploy, "cloud_builder_runner.yml")); err != nil || b.RunnerFile == "" || b.Collector.URL == "" || b.Broker.SASL == nil {
		t.Errorf("runner example: %+v, %v", b, err)
	}
	if c, err := LoadCtlFile(filepath.Join(deploy, "cbctl.yml")); err != nil || c.Cluster.RunnerCount != 6 {
		t.Errorf("cbctl example: %+v, %v", c, err)
	}
}

// What WriteFile writes (cb up's configs) the strict loaders read back,
// with only the keys that are set.
func TestWriteFileRoundTrip(t *testing.T) {
	dir := t.TempDir()
	b := &Broker{Broker: BrokerSection{Host: "127.0.0.1:9092"}, Runner: RunnerSection{Group: "debian"}, ThisHost: "127.0.0.1"}
	r := &Runner{Collector: Endpoint{URL: "http://127.0.0.1:8080", TokenFile: "/s/upload.token"},
		Artifacts: Endpoint{Listen: "127.0.0.1:8081", URL: "http://127.0.0.1:8081", TokenFile: "/s/artifact.token"}}
	r.Ctl.Artifacts = Endpoint{TokenFile: "/s/artifact.token"}
	c := &Ctl{Cluster: Cluster{SSHUser: "cb", SSHPkeyFile: "/home/cb/.ssh/id_rsa", RunnerCount: 1}}
	bp, rp, cp := filepath.Join(dir, "broker.yml"), filepath.Join(dir, "runner.yml"), filepath.Join(dir, "cbctl.yml")
	for p, v := range map[string]any{bp: b, rp: r, cp: c} {
		if err := WriteFile(p, v); err != nil {
			t.Fatal(err)
		}
	}
	gb, err := LoadBrokerFile(bp)
	if err != nil {
		t.Fatal(err)
	}
	if gb.File != bp || gb.Broker != b.Broker || gb.Runner != b.Runner || gb.ThisHost != b.ThisHost {
		t.Errorf("broker config round trip: got %+v, want %+v", gb, b)
	}
	gr, found, err := LoadRunnerFile(rp)
	if err != nil || !found || !reflect.DeepEqual(gr, r) {
		t.Errorf("runner config round trip: got %+v, %v, %v; want %+v", gr, found, err, r)
	}
	gc, err := LoadCtlFile(cp)
	if err != nil || !reflect.DeepEqual(gc, c) {
		t.Errorf("ctl config round trip: got %+v, %v; want %+v", gc, err, c)
	}
	data, err := os.ReadFile(bp)
	if err != nil {
		t.Fatal(err)
	}
	// The original's schema refuses null values (tls: null).
	if want := "broker:\n    host: 127.0.0.1:9092\nrunner:\n    group: debian\nthis_host: 127.0.0.1\n"; string(data) != want {
		t.Errorf("broker config:\n%s\nwant only the keys that are set:\n%s", data, want)
	}
	if fi, err := os.Stat(bp); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("broker config mode: %v, %v", fi.Mode(), err)
	}
}
