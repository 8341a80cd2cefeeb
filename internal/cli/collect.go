package cli

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/cloud-builder/cb/internal/broker"
	"github.com/cloud-builder/cb/internal/collect"
	"github.com/cloud-builder/cb/internal/config"
	"github.com/cloud-builder/cb/internal/source"
)

func init() {
	register(&Command{Name: "collect", Summary: "serve signed rpm and apt repositories of the build results", Run: runCollect})
}

// runCollect is cb-collect. Defaults come from /etc/cloud_builder
// (CB_PROJECT, CB_BRANCH, CB_UPDATE) and the collector: block of the runner
// config; flags override both.
func runCollect(ctx context.Context, env *Env, args []string) int {
	paths := env.Paths()
	settings, err := config.LoadSettingsFile(paths.Settings)
	if err != nil {
		return badConfig(env, "collect", err)
	}
	interval := 30
	if v := settings["CB_UPDATE"]; v != "" {
		if interval, err = strconv.Atoi(v); err != nil || interval <= 0 {
			fmt.Fprintf(env.Stderr, "cb-collect: %s: CB_UPDATE=%q is not a positive number of seconds\n", paths.Settings, v)
			return ExitUsage
		}
	}
	fs, common := newFlagSet(env, "collect", "[--project=<git url>] [--branch=] [--update-interval=30] [flags]")
	var c collect.Config
	brokerConfig := fs.String("broker-config", paths.BrokerConfig, "broker config file, read only with --publish-events (the collector's own settings are in the runner config)")
	runnerConfig := fs.String("runner-config", paths.RunnerConfig, "runner config file whose collector: block gives defaults (env "+config.EnvRunnerConfig+")")
	fs.StringVar(&c.Project, "project", settings["CB_PROJECT"], "git URL of the sources repository, for cleanup (CB_PROJECT)")
	fs.StringVar(&c.Branch, "branch", settings["CB_BRANCH"], "branch of the sources repository (CB_BRANCH; default: the remote's)")
	fs.IntVar(&interval, "update-interval", interval, "seconds between cleanup passes (CB_UPDATE)")
	fs.StringVar(&c.Listen, "listen", "", "address to serve on (default: collector.listen of the runner config, else 127.0.0.1:8080)")
	fs.StringVar(&c.RepoRoot, "repo-root", paths.RepoRoot, "served repository tree (env CB_REPO_ROOT)")
	fs.StringVar(&c.StateDir, "state-dir", "/var/lib/cloud_builder/collect", "private state: signing key, staging, sources checkout")
	fs.StringVar(&c.Token, "token", "", "upload bearer token (prefer --token-file)")
	fs.StringVar(&c.TokenFile, "token-file", "", "file holding the upload token (default: generated into <state-dir>/upload.token)")
	fs.StringVar(&c.GPGKeyID, "gpg-key-id", "", "signing key (default: the first key in --gnupg-home, generated when there is none)")
	fs.StringVar(&c.GnupgHome, "gnupg-home", "", "GNUPGHOME of the signing key (default <state-dir>/gnupg)")
	fs.BoolVar(&c.SignRPMs, "sign-rpms", false, "also sign every uploaded rpm with the repository key (rpmsign)")
	fs.StringVar(&c.TLSCert, "tls-cert", "", "serve HTTPS with this certificate")
	fs.StringVar(&c.TLSKey, "tls-key", "", "key of --tls-cert")
	fs.StringVar(&c.ClientCA, "client-ca", "", "accept uploads with client certificates signed by this CA")
	events := fs.Bool("publish-events", false, "announce every published build on cb-response (for cb-depsolver); needs the broker of --broker-config")
	checkConfig := fs.Bool("check-config", false, "validate the configuration and exit")
	if code, done := parse(fs, args); done {
		return code
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var chk checks
	chk.atLeast("--update-interval", interval, 1)
	chk.addr("--listen", c.Listen)
	if code, ok := chk.report(env, "collect"); !ok {
		return code
	}
	c.Logger = common.Logger(env.Stderr, "collect")
	rc, found, err := config.LoadRunnerFile(*runnerConfig)
	if err != nil {
		return badConfig(env, "collect", err)
	}
	_, serr := os.Stat(paths.Settings)
	logConfig(c.Logger, nil, configFile{"runner_config", *runnerConfig, found}, configFile{"settings", paths.Settings, serr == nil})
	ep := rc.Collector
	for _, d := range []struct {
		flag     string
		dst, val *string
	}{
		{"listen", &c.Listen, &ep.Listen}, {"token", &c.Token, &ep.Token}, {"token-file", &c.TokenFile, &ep.TokenFile},
		{"tls-cert", &c.TLSCert, &ep.TLSCert}, {"tls-key", &c.TLSKey, &ep.TLSKey}, {"client-ca", &c.ClientCA, &ep.ClientCA},
	} {
		if !set[d.flag] && *d.val != "" {
			*d.dst = *d.val
		}
	}
	if !set["listen"] && ep.Listen != "" {
		if err := checkAddr(ep.Listen); err != nil {
			fmt.Fprintf(env.Stderr, "cb-collect: %s: collector.listen %q: %v\n", *runnerConfig, ep.Listen, err)
			return ExitUsage
		}
	}
	c.UpdateInterval = time.Duration(interval) * time.Second
	if c.Project != "" {
		if err := source.ValidateURL(c.Project); err != nil {
			return fail(env, "collect", err)
		}
	}
	if c.Branch != "" {
		if err := source.ValidateBranch(c.Branch); err != nil {
			return fail(env, "collect", err)
		}
	}
	if *checkConfig {
		fmt.Fprintln(env.Stdout, "configuration ok")
		return ExitOK
	}
	if *events {
		bc, err := loadConfig(c.Logger, *brokerConfig, *runnerConfig)
		if err != nil {
			return badConfig(env, "collect", err)
		}
		opts, err := brokerOptions(bc, c.Logger, "cb-collect")
		if err != nil {
			return fail(env, "collect", fmt.Errorf("%s: %w", *brokerConfig, err))
		}
		client, err := broker.New(opts)
		if err != nil {
			return fail(env, "collect", err)
		}
		defer client.Close()
		c.Events, c.ThisHost = client, bc.ThisHost
	}
	s, err := collect.New(c)
	if err != nil {
		return fail(env, "collect", err)
	}
	if err := s.Run(ctx); err != nil {
		return fail(env, "collect", err)
	}
	return ExitOK
}
