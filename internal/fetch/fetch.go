// Package fetch is cb-fetch: it watches the sources repository and turns
// every change of a package or image directory into build requests, one
// per target of the package's .cb/cloud_builder.yml (SPEC §4).
//
// Delivery: the last processed commit is stored on disk only after every
// request of a poll was published. A crash in between repeats the poll's
// requests on restart (at least once); a restart after a completed poll
// repeats nothing. Changes made while cb-fetch was down are found on the
// next start by comparing the stored commit with the new head.
package fetch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/cloud-builder/cb/internal/broker"
	"github.com/cloud-builder/cb/internal/source"
)

// DefaultInterval is the original's --update-interval.
const DefaultInterval = 30 * time.Second

// Publisher sends one message with record headers to a topic and returns
// once the broker has it. *broker.Client implements it.
type Publisher interface {
	PublishHeaders(ctx context.Context, topic string, value []byte, headers []broker.Header) error
}

// Config wires one cb-fetch.
type Config struct {
	URL    string // the sources repository
	Branch string // "" = the remote's default branch
	Dir    string // the checkout ($CB_SOURCES)
	// StateFile stores the last processed commit; "" = <Dir>.fetch-state,
	// next to the checkout rather than in it, so a fresh clone of a broken
	// checkout keeps it.
	StateFile string
	Interval  time.Duration // between polls; 0 = DefaultInterval
	// SingleShot makes Run bring the checkout up to date once and return
	// without requesting builds: runners use it at boot to get the sources,
	// and must not repeat the requests the fetcher of the farm sends.
	SingleShot bool
	// InitialBuild makes the first poll without a stored commit request
	// every target of every package. Without it the first poll only records
	// the head: cb-fetch reacts to changes, as the original does.
	InitialBuild bool
	ThisHost     string // host part of response identities; "" = hostname
	// RequestTopic, when set, receives every build request instead of the
	// target's runner group: cb-depsolver reads it and forwards the
	// requests in dependency order.
	RequestTopic string
	Publisher    Publisher
	Logger       *slog.Logger
}

func (c Config) withDefaults() (Config, error) {
	if c.URL == "" {
		return c, errors.New("fetch: no repository URL configured")
	}
	if err := source.ValidateURL(c.URL); err != nil {
		return c, fmt.Errorf("fetch: %w", err)
	}
	if c.Branch != "" {
		if err := source.ValidateBranch(c.Branch); err != nil {
			return c, fmt.Errorf("fetch: %w", err)
		}
	}
	if c.Dir == "" {
		return c, errors.New("fetch: no checkout directory configured")
	}
	if c.StateFile == "" {
		c.StateFile = c.Dir + ".fetch-state"
	}
	if c.Interval <= 0 {
		c.Interval = DefaultInterval
	}
	if c.ThisHost == "" {
		c.ThisHost, _ = os.Hostname()
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Publisher == nil && !c.SingleShot {
		return c, errors.New("fetch: no broker publisher configured")
	}
	return c, nil
}

// Run polls every cfg.Interval until ctx is done; a failed poll (git
// server down, broker unreachable) is logged and retried at the next
// interval. With cfg.SingleShot it updates the checkout once and returns
// the outcome.
func Run(ctx context.Context, cfg Config) error {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return err
	}
	log := cfg.Logger
	if cfg.SingleShot {
		head, err := source.Update(ctx, cfg.Dir, cfg.URL, cfg.Branch, log)
		if err != nil {
			return fmt.Errorf("update sources: %w", err)
		}
		log.Info("sources up to date", "commit", head)
		return nil
	}
	log.Info("watching sources", "dir", cfg.Dir, "branch", cfg.Branch, "interval", cfg.Interval, "state_file", cfg.StateFile)
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			log.Info("stopped watching sources", "cause", context.Cause(ctx))
			return nil
		case <-t.C:
		}
		if _, err := once(ctx, cfg); err != nil && ctx.Err() == nil {
			log.Error("poll failed, retrying at the next interval", "err", err)
		}
		t.Reset(cfg.Interval)
	}
}

// Once polls one time: it updates the checkout, requests builds for the
// packages that changed since the stored commit and stores the new head.
// It returns the number of build requests sent.
func Once(ctx context.Context, cfg Config) (int, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return 0, err
	}
	return once(ctx, cfg)
}

func once(ctx context.Context, cfg Config) (int, error) {
	log := cfg.Logger
	head, err := source.Update(ctx, cfg.Dir, cfg.URL, cfg.Branch, log)
	if err != nil {
		return 0, fmt.Errorf("update sources: %w", err)
	}
	last, err := loadState(cfg.StateFile)
	switch {
	case errors.Is(err, errNoState) && !cfg.InitialBuild:
		if err := saveState(cfg.StateFile, head); err != nil {
			return 0, err
		}
		log.Info("first start: recorded the sources head, changes from here on are built", "commit", head)
		return 0, nil
	case errors.Is(err, errNoState):
		log.Info("first start: requesting every target", "commit", head)
		last = ""
	case err != nil:
		// Without a trustworthy last commit, building everything once is
		// better than missing a change.
		log.Warn("state unreadable, comparing the whole tree", "err", err)
		last = ""
	}
	if last == head {
		log.Debug("no new commits", "commit", head)
		return 0, nil
	}
	changes, err := source.Changes(ctx, cfg.Dir, last, head)
	if err != nil {
		return 0, err
	}
	n, err := schedule(ctx, cfg, head, changes)
	if err != nil {
		return n, err
	}
	if err := saveState(cfg.StateFile, head); err != nil {
		return n, err
	}
	log.Info("sources processed", "from", last, "commit", head, "changed", len(changes), "requests", n)
	return n, nil
}
