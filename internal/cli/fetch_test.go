package cli

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cloud-builder/cb/internal/broker"
	"github.com/cloud-builder/cb/internal/config"
	"github.com/cloud-builder/cb/internal/message"
	"github.com/cloud-builder/cb/internal/source/sourcetest"
)

// fetchTestEnv returns an Env whose settings, broker config and sources
// live in temporary files.
func fetchTestEnv(t *testing.T, settings, brokerConfig string) (*Env, *lockedBuffer, *lockedBuffer, string) {
	t.Helper()
	dir := t.TempDir()
	files := map[string]string{
		config.EnvSettings:     filepath.Join(dir, "cloud_builder"),
		config.EnvBrokerConfig: filepath.Join(dir, "cloud_builder_broker.yml"),
	}
	if err := os.WriteFile(files[config.EnvSettings], []byte(settings), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(files[config.EnvBrokerConfig], []byte(brokerConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	sources := filepath.Join(dir, "cloud_builder_sources")
	files[config.EnvSources] = sources
	stdout, stderr := &lockedBuffer{}, &lockedBuffer{}
	return &Env{Stdout: stdout, Stderr: stderr, Getenv: func(k string) string { return files[k] }}, stdout, stderr, sources
}

func TestFetchCommandSingleShotFromSettings(t *testing.T) {
	repo := sourcetest.New(t)
	repo.CommitAndPush("base", map[string]string{"projects/a/file": "one"})
	env, _, stderr, sources := fetchTestEnv(t, "CB_PROJECT=\""+repo.URL()+"\"\nCB_BRANCH=main\n", "")
	if code := Run(t.Context(), env, []string{"cb-fetch", "--single-shot"}); code != ExitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if b, err := os.ReadFile(filepath.Join(sources, "projects/a/file")); err != nil || string(b) != "one" {
		t.Fatalf("checkout: %q, %v", b, err)
	}
	if _, err := os.Stat(sources + ".fetch-state"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("--single-shot wrote state: %v", err)
	}
}

func TestFetchCommandRejects(t *testing.T) {
	for _, tc := range []struct {
		name     string
		settings string
		args     []string
		code     int
		stderr   string
	}{
		{"no project", "", nil, ExitUsage, "--project is required"},
		{"remote helper URL", "", []string{"--project=ext::sh -c id"}, ExitFailure, "remote helpers"},
		{"option as URL", "", []string{"--project=--upload-pack=id"}, ExitFailure, "starts with '-'"},
		{"option as branch", "", []string{"--project=file:///x", "--branch=-f"}, ExitFailure, "invalid branch"},
		{"bad interval in settings", "CB_PROJECT=file:///x\nCB_UPDATE=soon\n", nil, ExitUsage, "CB_UPDATE"},
		{"zero interval", "", []string{"--project=file:///x", "--update-interval=0"}, ExitUsage, "must be greater than 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env, _, stderr, _ := fetchTestEnv(t, tc.settings, "")
			code := Run(t.Context(), env, append([]string{"cb-fetch"}, tc.args...))
			if code != tc.code || !strings.Contains(stderr.String(), tc.stderr) {
				t.Fatalf("exit %d, stderr %q; want exit %d mentioning %q", code, stderr, tc.code, tc.stderr)
			}
		})
	}
}

// TestFetchCommandRequestsBuilds runs cb-fetch as a user does, against a
// real repository and the embedded broker, and waits for its requests.
func TestFetchCommandRequestsBuilds(t *testing.T) {
	repo := sourcetest.New(t)
	repo.CommitAndPush("base", map[string]string{
		"projects/MS/xclock/.cb/cloud_builder.yml": sourcetest.PackageMetadata("xclock", "suse", "TW.x86_64"),
		"projects/MS/xclock/xclock.spec":           "Name: xclock",
	})
	e, err := broker.StartEmbedded(broker.EmbeddedOptions{Listen: "127.0.0.1:0", DataDir: t.TempDir(), Topics: []string{"suse"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	env, _, stderr, sources := fetchTestEnv(t, "", "broker:\n  host: "+strings.Join(e.Addrs(), ",")+"\nthis_host: 10.0.0.5\n")

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan int, 1)
	go func() {
		done <- Run(ctx, env, []string{"cb-fetch", "--project=" + repo.URL(), "--update-interval=0.2", "--initial-build"})
	}()
	reader, err := broker.NewConsumer(broker.Options{Brokers: e.Addrs()}, broker.ConsumerConfig{Topics: []string{"suse", message.TopicResponse}})
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	var req *message.BuildRequest
	var resp *message.Response
	rctx, rcancel := context.WithTimeout(ctx, 30*time.Second)
	defer rcancel()
	for req == nil || resp == nil {
		recs, err := reader.Poll(rctx)
		if err != nil {
			t.Fatalf("waiting for the request: %v\n%s", err, stderr)
		}
		for _, r := range recs {
			switch r.Topic {
			case "suse":
				if req, err = message.DecodeBuildRequest(r.Value); err != nil {
					t.Fatal(err)
				}
				req.FreshBuildRoot = r.Header(broker.HeaderFreshBuildRoot) == "true"
			case message.TopicResponse:
				if resp, err = message.DecodeResponse(r.Value); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	if req.Project != "projects/MS/xclock" || req.Profile() != "TW.x86_64" || !req.FreshBuildRoot {
		t.Fatalf("request %+v", req)
	}
	if resp.RequestID != req.RequestID || !strings.HasPrefix(resp.Identity, "CBFetch:10.0.0.5:") {
		t.Fatalf("response %+v for request %s", resp, req.RequestID)
	}
	// A poll later the state is stored; stopping is clean.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(sources + ".fetch-state"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no state file written")
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	if code := <-done; code != ExitOK {
		t.Fatalf("exit %d after cancel: %s", code, stderr)
	}
}
