// Package config reads Cloud Builder's configuration files (SPEC §7):
// the broker config /etc/cloud_builder_broker.yml, the client config
// ~/.config/cb/cbctl.yml and the shell-style service settings
// /etc/cloud_builder, all as the original services define them, plus the
// runner config /etc/cloud_builder_runner.yml that holds what only this
// implementation knows (SASL, artifact and collector endpoints). Every
// path has an environment override so tests and demos never need /etc or
// /var.
//
// The original's files are shared with the original tools, which refuse
// any key their schema does not know; so those files hold exactly the
// original's keys, and every extension lives in the runner config.
//
// Decoding is strict: an unknown key is an error, because a misspelt key in
// a config file silently falling back to a default is worse than a refusal.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"time"

	"github.com/cloud-builder/cb/internal/atomicfile"
	"github.com/cloud-builder/cb/internal/cachebudget"
	"go.yaml.in/yaml/v3"
)

// Environment variables that override paths.
const (
	EnvBrokerConfig = "CB_BROKER_CONFIG"
	EnvRunnerConfig = "CB_RUNNER_CONFIG"
	EnvCtlConfig    = "CB_CTL_CONFIG"
	EnvSettings     = "CB_SETTINGS"
	EnvRunnerRoot   = "CB_RUNNER_ROOT"
	EnvRepoRoot     = "CB_REPO_ROOT"
	EnvSources      = "CB_SOURCES"
)

// DefaultRunnerConfig is where the runner config is unless
// CB_RUNNER_CONFIG says otherwise.
const DefaultRunnerConfig = "/etc/cloud_builder_runner.yml"

// Paths are the locations of configuration and state, after environment
// overrides.
type Paths struct {
	BrokerConfig string
	RunnerConfig string
	CtlConfig    string
	Settings     string
	RunnerRoot   string
	RepoRoot     string
	Sources      string
}

// DefaultPaths returns the paths of SPEC §7, overridden by getenv.
func DefaultPaths(getenv func(string) string) Paths {
	home := getenv("HOME")
	if home == "" {
		home = "/root"
	}
	p := Paths{
		BrokerConfig: "/etc/cloud_builder_broker.yml",
		RunnerConfig: DefaultRunnerConfig,
		CtlConfig:    filepath.Join(home, ".config/cb/cbctl.yml"),
		Settings:     "/etc/cloud_builder",
		RunnerRoot:   "/var/tmp/CB",
		RepoRoot:     "/srv/www/projects",
		Sources:      filepath.Join(home, "cloud_builder_sources"),
	}
	for _, o := range []struct {
		env string
		dst *string
	}{
		{EnvBrokerConfig, &p.BrokerConfig}, {EnvRunnerConfig, &p.RunnerConfig}, {EnvCtlConfig, &p.CtlConfig},
		{EnvSettings, &p.Settings}, {EnvRunnerRoot, &p.RunnerRoot},
		{EnvRepoRoot, &p.RepoRoot}, {EnvSources, &p.Sources},
	} {
		if v := getenv(o.env); v != "" {
			*o.dst = v
		}
	}
	return p
}

// TLS is broker.tls: the client certificate setup of the original.
type TLS struct {
	CAFile   string `yaml:"ssl_cafile"`
	CertFile string `yaml:"ssl_certfile"`
	KeyFile  string `yaml:"ssl_keyfile"`
}

// SASL is broker.sasl of the runner config.
type SASL struct {
	Mechanism string `yaml:"mechanism"` // PLAIN, SCRAM-SHA-256, SCRAM-SHA-512
	Username  string `yaml:"username"`
	Password  string `yaml:"password"`
}

// BrokerSection is the broker: block.
type BrokerSection struct {
	Host string `yaml:"host"`
	TLS  *TLS   `yaml:"tls,omitempty"`
	// SASL comes from the runner config (see [Broker.LoadRunnerFile]).
	SASL *SASL `yaml:"-"`
}

// RunnerSection is the runner: block.
type RunnerSection struct {
	Group string `yaml:"group"`
}

// Sandbox is sandbox: of the runner config: how builds are confined. Zero
// values mean the runner's defaults (see docs/cluster.md).
type Sandbox struct {
	// IDs is the host id range builds run as (root inside = UID).
	IDs struct {
		UID   uint32 `yaml:"uid"`
		GID   uint32 `yaml:"gid"`
		Count uint32 `yaml:"count"`
	} `yaml:"ids"`
	Memory    int64         `yaml:"memory"`     // bytes of RAM per build
	Pids      int64         `yaml:"pids"`       // processes and threads per build
	CPUWeight int64         `yaml:"cpu_weight"` // 1..10000, 100 = fair share
	MaxWrite  int64         `yaml:"max_write"`  // bytes a build may write
	LogIdle   time.Duration `yaml:"log_idle"`   // no output this long ends a build
	// PrepareTimeout bounds the creation of a buildroot.
	PrepareTimeout time.Duration `yaml:"prepare_timeout"`
	// AllowRepositories are repository URLs (prefixes) a build_root.kiwi
	// or an image description may name besides the runner's apt sources
	// and the collector.
	AllowRepositories []string `yaml:"allow_repositories"`
}

// Cache is cache: of the runner config: the runner's caches (cached
// buildroots, downloaded packages, kiwi's shared cache).
type Cache struct {
	// Budget caps the disk they take together: bytes ("200G", "1.5T",
	// plain bytes) or a percentage of the file system the cache directory
	// is on ("50%"); empty means cachebudget.DefaultPercent.
	Budget string `yaml:"budget,omitempty"`
}

// Endpoint is an HTTP service location with its credentials (runner
// config): the runner's artifact endpoint and the collector's upload
// endpoint.
type Endpoint struct {
	Listen    string `yaml:"listen,omitempty"`     // where a server listens
	URL       string `yaml:"url,omitempty"`        // how clients reach it
	Token     string `yaml:"token,omitempty"`      // shared bearer token
	TokenFile string `yaml:"token_file,omitempty"` // or read it from a file
	TLSCert   string `yaml:"tls_cert,omitempty"`
	TLSKey    string `yaml:"tls_key,omitempty"`
	ClientCA  string `yaml:"client_ca,omitempty"`
	// AllowPlainHTTP lets a server of this endpoint serve, and its
	// clients send the token over, plain HTTP on an address that is not
	// loopback. Without it they refuse: a token on the wire in clear is
	// everyone's token.
	AllowPlainHTTP bool `yaml:"allow_plain_http,omitempty"`
	// KeyFile is the collector's public signing key, with which runners
	// verify the project repositories added to buildroots.
	KeyFile string `yaml:"key_file,omitempty"`
}

// ReadToken returns Token, or the trimmed content of TokenFile.
func (e Endpoint) ReadToken() (string, error) {
	if e.Token != "" || e.TokenFile == "" {
		return e.Token, nil
	}
	b, err := os.ReadFile(e.TokenFile)
	if err != nil {
		return "", fmt.Errorf("read token file: %w", err)
	}
	return string(bytes.TrimSpace(b)), nil
}

// Broker is /etc/cloud_builder_broker.yml, the original's keys only, with
// the settings of the runner config merged in by [Broker.LoadRunnerFile].
type Broker struct {
	Broker   BrokerSection `yaml:"broker"`
	Runner   RunnerSection `yaml:"runner"`
	ThisHost string        `yaml:"this_host"`

	// From the runner config.
	Artifacts Endpoint `yaml:"-"`
	Collector Endpoint `yaml:"-"`
	Sandbox   Sandbox  `yaml:"-"`
	Cache     Cache    `yaml:"-"`

	// File is the broker config that was read; "" when it did not exist
	// and the defaults are in effect. RunnerFile likewise.
	File       string `yaml:"-"`
	RunnerFile string `yaml:"-"`
}

// Runner is /etc/cloud_builder_runner.yml: the settings of this
// implementation that the original's files cannot hold.
type Runner struct {
	Broker struct {
		SASL *SASL `yaml:"sasl,omitempty"`
	} `yaml:"broker,omitempty"`
	// Artifacts is cb-info's artifact endpoint on a runner.
	Artifacts Endpoint `yaml:"artifacts,omitempty"`
	// Collector is the collector's upload endpoint: where runners send
	// results, and what cb-collect serves.
	Collector Endpoint `yaml:"collector,omitempty"`
	// Sandbox confines the runner's builds.
	Sandbox Sandbox `yaml:"sandbox,omitempty"`
	// Cache sets the disk budget of the runner's caches.
	Cache Cache `yaml:"cache,omitempty"`
	// CtlArtifacts are cb-ctl's credentials for the runners' artifact
	// endpoints (cbctl.artifacts).
	Ctl struct {
		Artifacts Endpoint `yaml:"artifacts,omitempty"`
	} `yaml:"cbctl,omitempty"`
}

// moved names the keys that earlier versions accepted in the original's
// files and that now belong to the runner config.
var moved = map[string]string{"broker.sasl": "broker.sasl", "artifacts": "artifacts", "collector": "collector"}

// LoadRunner decodes a runner config strictly.
func LoadRunner(r io.Reader) (*Runner, error) {
	c := &Runner{}
	if err := decodeStrict(r, c, nil); err != nil {
		return nil, err
	}
	if s := c.Broker.SASL; s != nil {
		switch s.Mechanism {
		case "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512":
		default:
			return nil, fmt.Errorf("broker.sasl.mechanism: %q is not PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", s.Mechanism)
		}
	}
	if _, err := cachebudget.ParseSize(c.Cache.Budget); err != nil {
		return nil, fmt.Errorf("cache.budget: %w", err)
	}
	return c, nil
}

// LoadRunnerFile reads path; a missing file yields no settings and found
// false.
func LoadRunnerFile(path string) (c *Runner, found bool, err error) {
	c, err = loadFile(path, LoadRunner)
	if errors.Is(err, os.ErrNotExist) {
		return &Runner{}, false, nil
	}
	return c, err == nil, err
}

// LoadRunnerFile merges the runner config at path into b.
func (b *Broker) LoadRunnerFile(path string) error {
	r, found, err := LoadRunnerFile(path)
	if err != nil {
		return err
	}
	if found {
		b.RunnerFile = path
	}
	b.Broker.SASL = r.Broker.SASL
	b.Artifacts = r.Artifacts
	b.Collector = r.Collector
	b.Sandbox = r.Sandbox
	b.Cache = r.Cache
	return nil
}

// DefaultBrokerHost is used when the config names no broker: the embedded
// broker that `cb broker` and `cb up` start.
const DefaultBrokerHost = "127.0.0.1:9092"

// LoadBroker decodes a broker config strictly.
func LoadBroker(r io.Reader) (*Broker, error) {
	b := &Broker{}
	if err := decodeStrict(r, b, moved); err != nil {
		return nil, err
	}
	if b.Broker.Host == "" {
		b.Broker.Host = DefaultBrokerHost
	}
	if b.ThisHost == "" {
		b.ThisHost, _ = os.Hostname()
	}
	if t := b.Broker.TLS; t != nil {
		if (t.CertFile == "") != (t.KeyFile == "") {
			return nil, errors.New("broker.tls: ssl_certfile and ssl_keyfile go together")
		}
	}
	return b, nil
}

// LoadBrokerFile reads path; a missing file yields the defaults (embedded
// broker on this machine), any other problem an error naming the file.
func LoadBrokerFile(path string) (*Broker, error) {
	b, err := loadFile(path, LoadBroker)
	if errors.Is(err, os.ErrNotExist) {
		return LoadBroker(bytes.NewReader(nil))
	}
	if err == nil {
		b.File = path
	}
	return b, err
}

// Cluster is the cluster: block of cbctl.yml.
type Cluster struct {
	SSHUser      string `yaml:"ssh_user,omitempty"`
	SSHPkeyFile  string `yaml:"ssh_pkey_file,omitempty"`
	RunnerCount  int    `yaml:"runner_count"`
	ControlPlane string `yaml:"controlplane,omitempty"`
}

// CtlSettings is the settings: block of cbctl.yml.
type CtlSettings struct {
	UseControlPlaneAsProxy bool `yaml:"use_control_plane_as_proxy,omitempty"`
}

// Ctl is ~/.config/cb/cbctl.yml. cb-ctl's artifact credentials are in
// the runner config (cbctl.artifacts).
type Ctl struct {
	Cluster  Cluster     `yaml:"cluster"`
	Settings CtlSettings `yaml:"settings,omitempty"`
}

// LoadCtl decodes a cbctl.yml strictly.
func LoadCtl(r io.Reader) (*Ctl, error) {
	c := &Ctl{}
	if err := decodeStrict(r, c, map[string]string{"artifacts": "cbctl.artifacts"}); err != nil {
		return nil, err
	}
	if c.Cluster.RunnerCount < 0 {
		return nil, errors.New("cluster.runner_count: must not be negative")
	}
	return c, nil
}

// LoadCtlFile reads path; a missing file yields the defaults.
func LoadCtlFile(path string) (*Ctl, error) {
	c, err := loadFile(path, LoadCtl)
	if errors.Is(err, os.ErrNotExist) {
		return &Ctl{}, nil
	}
	return c, err
}

func loadFile[T any](path string, load func(io.Reader) (T, error)) (T, error) {
	var zero T
	f, err := os.Open(path)
	if err != nil {
		return zero, err
	}
	defer f.Close()
	v, err := load(f)
	if err != nil {
		return zero, fmt.Errorf("%s: %w", path, err)
	}
	return v, nil
}

// decodeStrict decodes r into v, refusing keys v has no field for. A key in
// moved gets an error that says it belongs to the runner config.
func decodeStrict(r io.Reader, v any, moved map[string]string) error {
	data, err := io.ReadAll(io.LimitReader(r, 1<<20))
	if err != nil {
		return err
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return nil
	}
	// Unknown keys are found on the node tree first, so the error names
	// the key's path (broker.hots) rather than a Go type.
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return fmt.Errorf("invalid config: %s", oneLine(err.Error()))
	}
	if len(root.Content) == 0 {
		return nil
	}
	if err := checkKeys(root.Content[0], reflect.TypeOf(v).Elem(), "", moved); err != nil {
		return err
	}
	if err := root.Content[0].Decode(v); err != nil {
		return fmt.Errorf("invalid config: %s", oneLine(err.Error()))
	}
	return nil
}

// checkKeys reports the first mapping key of n that the struct type t has
// no yaml field for, by its dotted path.
func checkKeys(n *yaml.Node, t reflect.Type, prefix string, moved map[string]string) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if n.Kind != yaml.MappingNode || t.Kind() != reflect.Struct {
		return nil
	}
	fields := map[string]reflect.Type{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name != "" && name != "-" {
			fields[name] = f.Type
		}
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		key := n.Content[i].Value
		path := key
		if prefix != "" {
			path = prefix + "." + key
		}
		ft, ok := fields[key]
		if to, isMoved := moved[path]; !ok && isMoved {
			return fmt.Errorf("%s (line %d) belongs in the runner config now, as %s (%s, env %s): the original tools read this file too and refuse keys they do not know",
				path, n.Content[i].Line, to, DefaultRunnerConfig, EnvRunnerConfig)
		}
		if !ok {
			return fmt.Errorf("unknown key %s (line %d)", path, n.Content[i].Line)
		}
		if err := checkKeys(n.Content[i+1], ft, path, moved); err != nil {
			return err
		}
	}
	return nil
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", " ")), " ")
}

// WriteFile writes a configuration (a *Broker, *Runner or *Ctl) to path
// as YAML that the loaders read back, with only the keys that are set (so
// the original's files pass the original's schemas), mode 0600 (it may
// name token files or carry credentials), atomically.
func WriteFile(path string, v any) error {
	data, err := yaml.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s: %w", path, err)
	}
	if err := atomicfile.WriteFile(path, data, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
