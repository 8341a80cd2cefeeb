package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cloud-builder/cb/internal/broker"
)

type repoStatus struct {
	Repositories []struct {
		Path      string `json:"path"`
		Packages  int    `json:"packages"`
		LastError string `json:"last_error"`
	} `json:"repositories"`
}

// TestUp starts `cb up` on a fresh state dir, waits until every shipped
// example is built and published, installs the Debian example with apt
// from the served repository, stops with SIGTERM, checks that nothing is
// left running or mounted, and starts again: nothing is rebuilt. The
// broker requires SASL (--broker-sasl), so every service and every build
// job authenticates with the account cb up writes to runner.yml.
func TestUp(t *testing.T) {
	needRoot(t, "mmdebstrap", "kiwi-ng", "createrepo_c", "gpg")
	state := t.TempDir()
	brokerAddr, repoAddr, artAddr, metricsAddr, depsAddr := freePort(t), freePort(t), freePort(t), freePort(t), freePort(t)
	args := []string{"up", "--state-dir", state, "--examples", filepath.Join(repoRoot, "examples"),
		"--broker-listen", brokerAddr, "--repo-listen", repoAddr, "--artifact-listen", artAddr,
		"--metrics-listen", metricsAddr, "--depsolver-listen", depsAddr, "--update-interval", "5s",
		"--broker-sasl", "SCRAM-SHA-512"}
	upProc := start(t, nil, "cb", args...)
	repoURL := "http://" + repoAddr

	want := []string{"projects/Debian/bookworm", "projects/RPM/bookworm", "projects/images/debian/standard"}
	waitFor(t, 30*time.Minute, "every example published", func() bool {
		var st repoStatus
		resp, err := httpGetErr(repoURL + "/api/v1/status")
		if err != nil || json.Unmarshal(resp, &st) != nil {
			return false
		}
		have := map[string]int{}
		for _, r := range st.Repositories {
			have[r.Path] = r.Packages
			if r.LastError != "" {
				t.Logf("repository %s: %s", r.Path, r.LastError)
			}
		}
		for _, w := range want {
			if have[w] == 0 {
				return false
			}
		}
		return true
	})
	// The terminal: a banner, then one readable line per build event;
	// no service or Kafka client chatter at the default level.
	termOut := upProc.log.String()
	for _, want := range []string{"Cloud Builder is up", "Build events",
		"accepted   projects/Debian/cb-hello bookworm.x86_64",
		"buildroot  projects/Debian/cb-hello bookworm.x86_64",
		"built      projects/Debian/cb-hello bookworm.x86_64 in ",
		"published  projects/Debian/bookworm (deb) in ",
		"built      projects/images/debian/cb-image-tbz standard.x86_64 in "} {
		if !strings.Contains(termOut, want) {
			t.Errorf("cb up's output lacks %q:\n%s", want, tail(termOut, 4000))
		}
	}
	for _, chatter := range []string{"component=kafka", "level=INFO", "level=DEBUG"} {
		if strings.Contains(termOut, chatter) {
			t.Errorf("cb up's default output has %q lines:\n%s", chatter, tail(termOut, 4000))
		}
	}
	// The builds went through cb-depsolver, which knows every example.
	waitFor(t, time.Minute, "the depsolver's graph", func() bool {
		g := getGraph(t, "http://"+depsAddr)
		idle := 0
		for _, x := range g.Targets {
			if x.State == "idle" {
				idle++
			}
		}
		return idle == len(want) && len(g.Targets) == len(want)
	})
	// The web UI on the repository address knows every example's state.
	uiShows := func(when string) {
		t.Helper()
		waitFor(t, time.Minute, "web UI "+when, func() bool {
			var o struct {
				Counts map[string]int `json:"counts"`
			}
			resp, err := httpGetErr(repoURL + "/api/v1/targets?state=succeeded")
			return err == nil && json.Unmarshal(resp, &o) == nil && o.Counts["succeeded"] >= len(want)
		})
		if page := string(httpGet(t, repoURL+"/ui/")); !strings.Contains(page, "projects/Debian/cb-hello") {
			t.Fatalf("/ui/ %s lacks cb-hello:\n%s", when, tail(page, 2000))
		}
	}
	uiShows("after the builds")
	if runners := string(httpGet(t, repoURL+"/api/v1/runners")); !strings.Contains(runners, `"alive": true`) {
		t.Errorf("no live runner in /api/v1/runners:\n%s", runners)
	}
	// Without the account the broker serves nobody; with it, anybody.
	password, err := os.ReadFile(filepath.Join(state, "broker.password"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		sasl *broker.SASL
		ok   bool
	}{
		{"no credentials", nil, false},
		{"wrong password", &broker.SASL{Mechanism: "SCRAM-SHA-512", User: "cloud-builder", Password: "guess"}, false},
		{"cb up's account", &broker.SASL{Mechanism: "SCRAM-SHA-512", User: "cloud-builder", Password: strings.TrimSpace(string(password))}, true},
	} {
		cl, err := broker.New(broker.Options{Brokers: []string{brokerAddr}, SASL: tt.sasl, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		err = cl.Publish(ctx, "cb-e2e-auth", []byte("x"))
		cancel()
		cl.Close()
		if (err == nil) != tt.ok {
			t.Errorf("%s: publish = %v", tt.name, err)
		}
	}
	runnerRoot := filepath.Join(state, "runner")
	out := aptInstall(t, runnerRoot, repoURL, "projects/Debian/cb-hello", "projects/Debian/bookworm", "cb-hello", "cb-hello")
	if !strings.Contains(strings.ToLower(out), "hello") {
		t.Fatalf("installed cb-hello printed %q", out)
	}
	for _, path := range []string{"/healthz", "/metrics"} {
		body := string(httpGet(t, "http://"+metricsAddr+path))
		if path == "/metrics" && !strings.Contains(body, "cb_builds_finished_total") {
			t.Fatalf("/metrics lacks build counters:\n%s", tail(body, 2000))
		}
	}

	journal := func() []string {
		entries, _ := os.ReadDir(filepath.Join(runnerRoot, "journal"))
		var ids []string
		for _, e := range entries {
			ids = append(ids, e.Name())
		}
		return ids
	}
	built := journal()
	if len(built) < len(want) {
		t.Fatalf("journal has %d entries, want at least %d", len(built), len(want))
	}

	upProc.stop(2 * time.Minute)
	if code := upProc.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("cb up exited %d after SIGTERM", code)
	}
	if strings.Contains(upProc.log.String(), "component=kafka") {
		t.Errorf("cb up's Kafka client complained on the way out:\n%s", tail(upProc.log.String(), 2000))
	}
	if left := processesMentioning(state); len(left) > 0 {
		t.Fatalf("processes left after stop: %v", left)
	}
	if m := mounts(t, state); len(m) > 0 {
		t.Fatalf("mounts left after stop:\n%s", strings.Join(m, "\n"))
	}

	// Restart: the unchanged examples are not built again.
	upProc = start(t, nil, "cb", args...)
	waitFor(t, time.Minute, "the restarted service", func() bool {
		_, err := httpGetErr(repoURL + "/api/v1/status")
		return err == nil
	})
	uiShows("after a restart (replayed from the broker)")
	time.Sleep(20 * time.Second) // several fetch intervals
	if again := journal(); len(again) != len(built) {
		t.Fatalf("restart rebuilt unchanged examples: journal %v, before %v", again, built)
	}
	upProc.stop(2 * time.Minute)
}

// processesMentioning lists the pids whose command line mentions s.
func processesMentioning(s string) []int {
	var out []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && strings.Contains(string(b), s) {
			out = append(out, pid)
		}
	}
	return out
}

func httpGetErr(url string) ([]byte, error) {
	resp, err := httpClient().Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return b, err
}
