package cli

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cloud-builder/cb/internal/broker"
	"github.com/cloud-builder/cb/internal/config"
	"github.com/cloud-builder/cb/internal/message"
	"github.com/cloud-builder/cb/internal/target"
)

// ctlTestEnv returns an Env whose config paths point into a temp dir.
// runnerYML, if given, is the runner config.
func ctlTestEnv(t *testing.T, brokerYML, ctlYML string, runnerYML ...string) (*Env, *lockedBuffer, *lockedBuffer, string) {
	t.Helper()
	dir := t.TempDir()
	files := map[string]string{
		config.EnvBrokerConfig: filepath.Join(dir, "broker.yml"),
		config.EnvCtlConfig:    filepath.Join(dir, "cbctl.yml"),
		config.EnvRunnerConfig: filepath.Join(dir, "runner.yml"),
		config.EnvRunnerRoot:   filepath.Join(dir, "runner"),
	}
	for _, r := range runnerYML {
		if err := os.WriteFile(files[config.EnvRunnerConfig], []byte(r), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(files[config.EnvBrokerConfig], []byte(brokerYML), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(files[config.EnvCtlConfig], []byte(ctlYML), 0o600); err != nil {
		t.Fatal(err)
	}
	stdout, stderr := &lockedBuffer{}, &lockedBuffer{}
	return &Env{Stdout: stdout, Stderr: stderr, Getenv: func(k string) string { return files[k] }}, stdout, stderr, files[config.EnvRunnerRoot]
}

func TestCtlUsageErrors(t *testing.T) {
	env, _, _, _ := ctlTestEnv(t, "", "")
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"no command", nil},
		{"two commands", []string{"--watch", "--build-info=x"}},
		{"wait without build", []string{"--watch", "--wait"}},
		{"keep-open without build-log", []string{"--build-info=x", "--keep-open", "--project-path=MS", "--arch=x86_64", "--dist=TW"}},
		{"escaping project path", []string{"--build-info=x", "--project-path=../..", "--arch=x86_64", "--dist=TW"}},
		{"missing arch", []string{"--build-package=x", "--project-path=MS", "--dist=TW"}},
		{"image with dist", []string{"--build-image=x", "--project-path=MS", "--arch=x86_64", "--dist=TW"}},
		{"unknown service", []string{"--watch", "--filter-service-name=cb-nothing", "--timeout=1"}},
		{"negative timeout", []string{"--watch", "--timeout=-1"}},
		{"get-binaries without target dir", []string{"--get-binaries=x", "--project-path=MS", "--arch=x86_64", "--dist=TW"}},
		{"unknown flag", []string{"--build-pakage=x"}},
		{"graph format", []string{"--dependency-graph", "--format=svg"}},
		{"graph with escaping project path", []string{"--dependency-graph", "--project-path=../x"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stderr := &lockedBuffer{}
			e := *env
			e.Stderr = stderr
			if code := Run(context.Background(), &e, append([]string{"cb-ctl"}, tc.args...)); code != ExitUsage {
				t.Fatalf("exit %d, want %d; stderr %q", code, ExitUsage, stderr)
			}
		})
	}
}

func TestCtlBrokerUnreachable(t *testing.T) {
	env, stdout, stderr, _ := ctlTestEnv(t, "broker:\n  host: 127.0.0.1:1\n", "")
	code := Run(context.Background(), env, []string{"cb-ctl", "--build-info=xclock", "--project-path=MS", "--arch=x86_64", "--dist=TW", "--timeout=2"})
	if code != ExitFailure || stdout.String() != "" {
		t.Fatalf("exit %d, stdout %q", code, stdout)
	}
	if lines := strings.Split(strings.TrimSpace(stderr.String()), "\n"); len(lines) != 1 || !strings.Contains(lines[0], "broker unreachable") {
		t.Fatalf("want one line naming the unreachable broker, got %q", stderr)
	}
}

// TestCtlAndInfo runs cb-info and cb-ctl as commands against an embedded
// broker: build request, build info and binaries through the artifact
// endpoint announced by this_host and the listening port.
func TestCtlAndInfo(t *testing.T) {
	e, err := broker.StartEmbedded(broker.EmbeddedOptions{Listen: "127.0.0.1:0", DataDir: t.TempDir(), Partitions: 1, Topics: []string{"suse"}})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	brokerYML := "broker:\n  host: " + e.Addrs()[0] + "\nrunner:\n  group: suse\nthis_host: 127.0.0.1\n"
	env, stdout, stderr, root := ctlTestEnv(t, brokerYML, "cluster:\n  runner_count: 1\n",
		"artifacts:\n  token: tok\ncbctl:\n  artifacts:\n    token: tok\n")

	tg, err := target.New(root, "projects/MS/xclock", "TW", "x86_64")
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(tg.Binaries(), "projects/MS/TW/x86_64/xclock-1-0.x86_64.rpm")
	if err := os.MkdirAll(filepath.Dir(bin), 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(bin, []byte("rpm"), 0o644)
	res, _ := message.Encode(&message.Response{SchemaVersion: 0.2, Identity: "CBRun:h:1:x", RequestID: "r", Project: tg.Project,
		ResponseCode: message.PackageBuildSucceeded, Package: &message.PackageResult{BinaryPackages: []string{bin}}})
	os.WriteFile(tg.ResultFile(), res, 0o644)

	ctx, cancel := context.WithCancel(context.Background())
	infoEnv := *env
	infoEnv.Stdout, infoEnv.Stderr = &lockedBuffer{}, &lockedBuffer{}
	infoDone := make(chan int, 1)
	go func() {
		infoDone <- Run(ctx, &infoEnv, []string{"cb-info", "--artifact-listen=127.0.0.1:0", "--log-level=error"})
	}()
	defer func() {
		cancel()
		if code := <-infoDone; code != ExitOK {
			t.Errorf("cb-info exit %d: %s", code, infoEnv.Stderr)
		}
	}()

	target := []string{"--project-path=MS", "--arch=x86_64", "--dist=TW", "--timeout=1"}
	// cb-info comes up in the background: ask until it answers.
	var code int
	for i := 0; i < 20; i++ {
		code = Run(context.Background(), env, append([]string{"cb-ctl", "--build-info=xclock"}, target...))
		if code == ExitOK {
			break
		}
	}
	if code != ExitOK {
		t.Fatalf("--build-info exit %d: %s", code, stderr)
	}
	var ans message.InfoResponse
	if err := json.Unmarshal([]byte(stdout.String()), &ans); err != nil {
		t.Fatalf("%v: %s", err, stdout)
	}
	if ans.SourceIP != "127.0.0.1" || !strings.HasPrefix(ans.ArtifactURL, "http://127.0.0.1:") || ans.BuildStatus != message.PackageBuildSucceeded {
		t.Fatalf("answer %+v", ans)
	}

	dir := t.TempDir()
	stdout2, stderr2 := &lockedBuffer{}, &lockedBuffer{}
	env2 := *env
	env2.Stdout, env2.Stderr = stdout2, stderr2
	if code := Run(context.Background(), &env2, append([]string{"cb-ctl", "--get-binaries=xclock", "--target-dir=" + dir}, target...)); code != ExitOK {
		t.Fatalf("--get-binaries exit %d: %s", code, stderr2)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "xclock-1-0.x86_64.rpm")); err != nil || string(b) != "rpm" {
		t.Fatalf("downloaded %q, %v", b, err)
	}

	stdout3 := &lockedBuffer{}
	env3 := *env
	env3.Stdout = stdout3
	if code := Run(context.Background(), &env3, append([]string{"cb-ctl", "--build-package=xclock"}, target...)); code != ExitOK {
		t.Fatalf("--build-package exit %d", code)
	}
	var req message.BuildRequest
	if err := json.Unmarshal([]byte(stdout3.String()), &req); err != nil || req.RunnerGroup != "suse" || req.Action != message.ActionPackageRebuild {
		t.Fatalf("request %+v (%v)", req, err)
	}
}

// TestCtlWaitRejected: --wait against the real scheduler command follows
// the request to its rejection and exits 1.
func TestCtlWaitRejected(t *testing.T) {
	e, err := broker.StartEmbedded(broker.EmbeddedOptions{Listen: "127.0.0.1:0", DataDir: t.TempDir(), Partitions: 1, Topics: []string{"suse"}})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	brokerYML := "broker:\n  host: " + e.Addrs()[0] + "\nrunner:\n  group: suse\nthis_host: 127.0.0.1\n"
	env, stdout, stderr, root := ctlTestEnv(t, brokerYML, "")
	sources := filepath.Join(t.TempDir(), "sources")
	if err := os.MkdirAll(filepath.Join(sources, "projects", "MS"), 0o755); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	schedEnv := *env
	schedStderr := &lockedBuffer{}
	schedEnv.Stdout, schedEnv.Stderr = &lockedBuffer{}, schedStderr
	done := make(chan int, 1)
	go func() {
		done <- Run(ctx, &schedEnv, []string{"cb-scheduler", "--runner-root=" + root, "--sources=" + sources, "--poll-timeout=500", "--log-level=error"})
	}()
	defer func() {
		cancel()
		if code := <-done; code != ExitOK {
			t.Errorf("cb-scheduler exit %d: %s", code, schedStderr)
		}
	}()

	code := Run(context.Background(), env, []string{"cb-ctl", "--build-package=nothere", "--project-path=MS", "--arch=x86_64", "--dist=TW", "--wait", "--timeout=60"})
	if code != ExitFailure {
		t.Fatalf("exit %d, want %d\nstderr: %s", code, ExitFailure, stderr)
	}
	if !strings.Contains(stderr.String(), "rejected  project does not exist") {
		t.Fatalf("no rejection progress line:\n%s", stderr)
	}
	dec := json.NewDecoder(strings.NewReader(stdout.String()))
	var req, final map[string]any
	if err := dec.Decode(&req); err != nil {
		t.Fatal(err)
	}
	if err := dec.Decode(&final); err != nil || final["response_code"] != message.ProjectDoesNotExist || final["request_id"] != req["request_id"] {
		t.Fatalf("final %v (%v)", final, err)
	}
}
