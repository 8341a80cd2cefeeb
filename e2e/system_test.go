package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// system is one machine's worth of Cloud Builder, each service its own OS
// process: embedded broker, collector, scheduler(s).
type system struct {
	t            *testing.T
	dir          string
	brokerAddr   string
	sources      string // the runner's checkout (a git clone of origin)
	origin       string // bare repository the sources come from
	work         string // a clone to commit changes into
	runnerRoot   string
	repoRoot     string
	collectorURL string
	tokenFile    string
	brokerConfig string
	runnerConfig string
	ctlConfig    string
	env          []string
	resp         *responses
	broker       *proc
	collector    *proc
}

// cacheDir is shared by every e2e test (and kept between runs on one
// machine), so each distinct buildroot is created once.
func cacheDir() string {
	if d := os.Getenv("CB_E2E_CACHE"); d != "" {
		return d
	}
	return "/var/cache/cb-e2e/buildroot"
}

// newSystem starts broker and collector on a source repository made of
// the shipped examples plus e2e/testdata/projects.
func newSystem(t *testing.T) *system {
	t.Helper()
	return newSystemFrom(t, []string{filepath.Join(repoRoot, "examples", "projects"), filepath.Join(repoRoot, "e2e", "testdata", "projects")}, nil)
}

// newSystemFrom starts broker and collector (with collectorArgs) on a
// source repository made of the projects/ trees given.
func newSystemFrom(t *testing.T, trees []string, collectorArgs []string) *system {
	t.Helper()
	dir := t.TempDir()
	s := &system{t: t, dir: dir,
		runnerRoot: filepath.Join(dir, "runner"), repoRoot: filepath.Join(dir, "repo"),
		origin: filepath.Join(dir, "origin.git"), work: filepath.Join(dir, "work"), sources: filepath.Join(dir, "sources"),
	}
	// The source repository.
	if err := os.MkdirAll(s.work, 0o755); err != nil {
		t.Fatal(err)
	}
	git(t, dir, "init", "-q", "--bare", s.origin)
	git(t, dir, "clone", "-q", s.origin, s.work)
	for _, tree := range trees {
		copyTree(t, tree, filepath.Join(s.work, "projects"))
	}
	// Test packages without a buildroot description share the example's.
	kiwi := filepath.Join(repoRoot, "examples", "projects", "Debian", "cb-hello", ".cb", "build_root.kiwi")
	rpmKiwi := filepath.Join(repoRoot, "examples", "projects", "RPM", "cb-hello-rpm", ".cb", "build_root.kiwi")
	metas, _ := filepath.Glob(filepath.Join(s.work, "projects", "*", "*", ".cb", "cloud_builder.yml"))
	for _, m := range metas {
		pkg := filepath.Dir(filepath.Dir(m))
		if _, err := os.Stat(filepath.Join(pkg, ".cb", "build_root.kiwi")); err == nil {
			continue
		}
		src := kiwi
		if specs, _ := filepath.Glob(filepath.Join(pkg, "*.spec")); len(specs) > 0 {
			src = rpmKiwi
		}
		if fi, err := os.Stat(filepath.Join(pkg, "debian")); err == nil && fi.IsDir() || src == rpmKiwi {
			copyTree(t, src, filepath.Join(pkg, ".cb", "build_root.kiwi"))
		}
	}
	git(t, s.work, "add", "-A")
	git(t, s.work, "commit", "-q", "-m", "examples")
	git(t, s.work, "push", "-q", "origin", "HEAD:main")
	git(t, dir, "clone", "-q", "--branch", "main", s.origin, s.sources)

	s.brokerAddr = freePort(t)
	collectorAddr := freePort(t)
	s.collectorURL = "http://" + collectorAddr
	s.tokenFile = filepath.Join(dir, "upload.token")
	if err := os.WriteFile(s.tokenFile, []byte("e2e-secret-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// The broker config holds only the original's keys; ours go to the
	// runner config.
	s.brokerConfig = filepath.Join(dir, "broker.yml")
	s.runnerConfig = filepath.Join(dir, "runner.yml")
	s.ctlConfig = filepath.Join(dir, "cbctl.yml")
	for p, cfg := range map[string]string{
		s.brokerConfig: fmt.Sprintf("broker:\n  host: %s\nrunner:\n  group: debian\nthis_host: 127.0.0.1\n", s.brokerAddr),
		s.runnerConfig: fmt.Sprintf("collector:\n  url: %s\n  token_file: %s\nartifacts:\n  token: e2e-artifact-token\ncbctl:\n  artifacts:\n    token: e2e-artifact-token\n",
			s.collectorURL, s.tokenFile),
	} {
		if err := os.WriteFile(p, []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s.env = []string{
		"CB_BROKER_CONFIG=" + s.brokerConfig,
		"CB_RUNNER_CONFIG=" + s.runnerConfig,
		"CB_CTL_CONFIG=" + s.ctlConfig,
		"CB_SETTINGS=" + filepath.Join(dir, "cloud_builder"),
		"CB_RUNNER_ROOT=" + s.runnerRoot,
		"CB_REPO_ROOT=" + s.repoRoot,
		"CB_SOURCES=" + s.sources,
	}
	s.broker = start(t, s.env, "cb", "broker", "--listen", s.brokerAddr, "--data-dir", filepath.Join(dir, "broker"), "--runner-group", "debian", "--partitions", "3")
	waitFor(t, 30*time.Second, "broker", func() bool {
		_, _, err := run(t, s.env, "cb-ctl", "--watch", "--timeout", "1")
		return err == nil
	})
	args := append([]string{"--listen", collectorAddr, "--repo-root", s.repoRoot,
		"--state-dir", filepath.Join(dir, "collector"), "--token-file", s.tokenFile,
		"--project", "file://" + s.origin, "--branch", "main", "--update-interval", "2"}, collectorArgs...)
	s.collector = start(t, s.env, "cb-collect", args...)
	s.resp = watchResponses(t, s.brokerAddr)
	return s
}

// startScheduler starts a runner's scheduler on the system.
func (s *system) startScheduler(extra ...string) *proc {
	s.t.Helper()
	args := append([]string{"--runner-root", s.runnerRoot, "--sources", s.sources, "--runner-group", "debian",
		"--cache-dir", cacheDir(), "--poll-timeout", "1000"}, extra...)
	return start(s.t, s.env, "cb-scheduler", args...)
}

// requestPackage sends a build request with cb-ctl and returns its id.
func (s *system) requestPackage(projectPath, name string) string {
	s.t.Helper()
	out, errOut, err := run(s.t, s.env, "cb-ctl", "--build-package", name, "--project-path", projectPath,
		"--arch", "x86_64", "--dist", "bookworm", "--runner-group", "debian")
	if err != nil {
		s.t.Fatalf("cb-ctl --build-package %s: %v\n%s%s", name, err, out, errOut)
	}
	var req struct {
		RequestID string `json:"request_id"`
		Project   string `json:"project"`
	}
	if err := json.Unmarshal([]byte(out), &req); err != nil || req.RequestID == "" {
		s.t.Fatalf("cb-ctl printed no request: %v\n%s", err, out)
	}
	if want := "projects/" + projectPath + "/" + name; req.Project != want {
		s.t.Fatalf("request project = %q, want %q", req.Project, want)
	}
	return req.RequestID
}

// buildAndWait sends a package build request with cb-ctl --wait and
// returns the request id, cb-ctl's exit status and its progress output.
func (s *system) buildAndWait(projectPath, name string) (id string, code int, progress string) {
	s.t.Helper()
	return s.ctlWait("--build-package", name, "--project-path", projectPath, "--dist", "bookworm")
}

// imageAndWait is buildAndWait for an image selection.
func (s *system) imageAndWait(projectPath, name, selection string) (id string, code int, progress string) {
	s.t.Helper()
	return s.ctlWait("--build-image", name, "--project-path", projectPath, "--selection", selection)
}

func (s *system) ctlWait(args ...string) (id string, code int, progress string) {
	s.t.Helper()
	args = append(args, "--arch", "x86_64", "--runner-group", "debian", "--wait", "--timeout", "900")
	out, errOut, err := run(s.t, s.env, "cb-ctl", args...)
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		s.t.Fatalf("cb-ctl --wait: %v", err)
	}
	var first struct {
		RequestID string `json:"request_id"`
	}
	if err := json.NewDecoder(strings.NewReader(out)).Decode(&first); err != nil || first.RequestID == "" {
		s.t.Fatalf("cb-ctl --wait printed no request (exit %d): %v\n%s%s", code, err, out, errOut)
	}
	return first.RequestID, code, errOut
}

// target returns the runner-state path prefix of a package target.
func (s *system) target(project string) string {
	return filepath.Join(s.runnerRoot, project+"@bookworm.x86_64")
}

// buildLog returns the build log of a package target.
func (s *system) buildLog(project string) string {
	b, _ := os.ReadFile(s.target(project) + ".build.log")
	return string(b)
}

func hasCode(codes []string, code string) bool {
	for _, c := range codes {
		if c == code {
			return true
		}
	}
	return false
}

func joinCodes(c []string) string { return strings.Join(c, " → ") }
