package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cloud-builder/cb/internal/message"
)

// debianPython is the interpreter of Debian's python3-* packages; the
// original services run on it, never on a pip environment.
const debianPython = "/usr/bin/python3"

// compatDriver runs the original cloud-builder from <upstream> against
// our services. The original reads its configuration from fixed paths, so
// the driver points its Defaults at the test's files first, as the
// upstream README shows. Modes:
//
//	ctl ARGS...           the original cb-ctl with ARGS
//	records TOPIC KIND..  read every record of each topic with the
//	                      original broker class and validate it with the
//	                      original validator of KIND; one JSON line per topic
//	schema KIND FILE..    validate config files with the original schema
//	                      of KIND (broker or cbctl); one JSON line per file
const compatDriver = `import json, sys, os
upstream, broker_yml, cbctl_yml, mode = sys.argv[1:5]
args = sys.argv[5:]
sys.path.insert(0, upstream)
from cloud_builder.defaults import Defaults
Defaults.get_broker_config = staticmethod(lambda: broker_yml)
Defaults.get_cb_ctl_config = staticmethod(lambda: cbctl_yml)

if mode == "ctl":
    from cloud_builder.cb_ctl import main
    sys.argv = ["cb-ctl"] + args
    sys.exit(main())

import yaml
from cerberus import Validator

if mode == "schema":
    from cloud_builder.config.cloud_builder_broker_schema import cloud_builder_broker_schema
    from cloud_builder.config.cbctl_schema import cbctl_config_schema
    schema = {"broker": cloud_builder_broker_schema, "cbctl": cbctl_config_schema}[args[0]]
    for path in args[1:]:
        with open(path) as f:
            doc = yaml.safe_load(f)
        v = Validator(schema)
        v.validate(doc, schema)
        print(json.dumps({"file": path, "errors": v.errors}), flush=True)
    sys.exit(0)

if mode == "records":
    from cloud_builder.broker import CBMessageBroker
    from cloud_builder.response.response_schema import response_schema
    from cloud_builder.info_response.info_response_schema import info_response_schema
    from cloud_builder.build_request.build_request_schema import build_request_schema
    from cloud_builder.info_request.info_request_schema import info_request_schema
    for spec in args:
        topic, kind = spec.split("=")
        broker = CBMessageBroker.new("kafka", config_file=broker_yml)
        check, schema = {
            "response": (broker.validate_build_response, response_schema),
            "info_response": (broker.validate_info_response, info_response_schema),
            "build_request": (broker.validate_build_request, build_request_schema),
            "info_request": (broker.validate_info_request, info_request_schema),
        }[kind]
        count, invalid, idle = 0, [], 0
        group = "cb-compat-%d-%s" % (os.getpid(), topic)
        while idle < 2:
            records = broker.read(topic=topic, group=group, timeout_ms=5000)
            if not records:
                idle += 1
                continue
            idle = 0
            for record in records:
                count += 1
                if not check(record.value):
                    v = Validator(schema)
                    try:
                        v.validate(yaml.safe_load(record.value), schema)
                        why = v.errors
                    except Exception as issue:
                        why = repr(issue)
                    invalid.append({"offset": record.offset, "errors": str(why), "value": record.value.decode(errors="replace")})
        broker.close()
        print(json.dumps({"topic": topic, "count": count, "invalid": invalid}), flush=True)
    sys.exit(0)
sys.exit("unknown mode " + mode)
`

// original runs the original cloud-builder through the driver.
type original struct {
	t                       *testing.T
	driver, upstream        string
	brokerConfig, ctlConfig string
}

// needOriginal finds ../shared/upstream next to the checkout and Debian's
// Python packages the original needs. Without them the test skips on a
// developer box and fails under CI=true. python3-snappy must be absent: a
// stock python3-kafka cannot read snappy batches, and proving that our
// services never send any is the point.
func needOriginal(t *testing.T) (upstream string) {
	t.Helper()
	ci := os.Getenv("CI") == "true"
	missing := func(format string, a ...any) {
		t.Helper()
		if ci {
			t.Fatalf(format, a...)
		}
		t.Skipf(format, a...)
	}
	upstream = filepath.Join(filepath.Dir(repoRoot), "shared", "upstream")
	if _, err := os.Stat(filepath.Join(upstream, "cloud_builder", "cb_ctl.py")); err != nil {
		missing("the original cloud-builder is not at %s (a checkout without ../shared/upstream): %v", upstream, err)
	}
	check := exec.Command(debianPython, "-c", "import kafka, cerberus, docopt, yaml, psutil, apscheduler, kiwi")
	if out, err := check.CombinedOutput(); err != nil {
		missing("Debian's Python packages for the original are missing (scripts/setup installs them): %v\n%s", err, out)
	}
	if exec.Command(debianPython, "-c", "import snappy").Run() == nil {
		missing("python3-snappy is installed: the compatibility test needs a stock python3-kafka without a snappy codec")
	}
	return upstream
}

func newOriginal(t *testing.T, upstream, brokerConfig, ctlConfig string) *original {
	t.Helper()
	driver := filepath.Join(t.TempDir(), "original_driver.py")
	if err := os.WriteFile(driver, []byte(compatDriver), 0o644); err != nil {
		t.Fatal(err)
	}
	return &original{t: t, driver: driver, upstream: upstream, brokerConfig: brokerConfig, ctlConfig: ctlConfig}
}

// run runs the driver in mode and returns stdout and stderr.
func (o *original) run(timeout time.Duration, mode string, args ...string) (string, string, error) {
	o.t.Helper()
	cmd := exec.Command(debianPython, append([]string{o.driver, o.upstream, o.brokerConfig, o.ctlConfig, mode}, args...)...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.Dir = o.t.TempDir()
	if err := cmd.Start(); err != nil {
		o.t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return out.String(), errb.String(), err
	case <-time.After(timeout):
		_ = cmd.Process.Kill()
		<-done
		o.t.Fatalf("original %s %v did not finish within %s\nstdout:\n%s\nstderr:\n%s", mode, args, timeout, out.String(), errb.String())
	}
	return "", "", nil
}

// jsonObjects decodes the JSON objects the original printed one after the
// other (indented, as its CBDisplay.print_json writes them).
func jsonObjects(t *testing.T, out string) []map[string]any {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(out))
	var objs []map[string]any
	for dec.More() {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			t.Fatalf("original printed no JSON: %v\n%s", err, out)
		}
		objs = append(objs, m)
	}
	return objs
}

// TestOriginalClient runs the original Python client (Debian's stock
// python3-kafka, no snappy) against our services: it builds an example
// through our scheduler, watches that build's responses, gets our
// --build-info answer, and reads every record we published with the
// original broker classes, each of which must pass the original's
// validator. Config files (ours from cb up, the shipped examples) must
// pass the original's schemas.
func TestOriginalClient(t *testing.T) {
	upstream := needOriginal(t)
	needRoot(t, "mmdebstrap", "dpkg-buildpackage")
	s := newSystem(t)
	// cbctl.yml as the original requires it; ssh is never used here.
	if err := os.WriteFile(s.ctlConfig, []byte("cluster:\n  ssh_user: cb\n  ssh_pkey_file: /nonexistent/id_ed25519\n  runner_count: 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s.startScheduler()
	info := start(t, s.env, "cb-info", "--runner-root", s.runnerRoot, "--artifact-listen", "127.0.0.1:0")
	orig := newOriginal(t, upstream, s.brokerConfig, s.ctlConfig)

	// The original cb-ctl --build-package builds an example through our
	// scheduler.
	out, errOut, err := orig.run(2*time.Minute, "ctl", "--build-package", "cb-hello", "--project-path", "Debian",
		"--arch", "x86_64", "--dist", "bookworm", "--runner-group", "debian")
	if err != nil {
		t.Fatalf("original cb-ctl --build-package: %v\n%s%s", err, out, errOut)
	}
	reqs := jsonObjects(t, out)
	if len(reqs) != 1 || reqs[0]["request_id"] == nil {
		t.Fatalf("original cb-ctl printed no request:\n%s", out)
	}
	id := reqs[0]["request_id"].(string)
	final := s.resp.waitFinal(t, id, 20*time.Minute)
	if final.ResponseCode != message.PackageBuildSucceeded {
		t.Fatalf("build requested by the original client: %s: %s (%s)\n%s", final.ResponseCode, final.Message,
			joinCodes(codes(s.resp.of(id))), tail(s.buildLog("projects/Debian/cb-hello"), 3000))
	}

	// The original --watch --filter-request-id sees that build's
	// responses: it reads cb-response from the start.
	out, errOut, err = orig.run(3*time.Minute, "ctl", "--watch", "--filter-request-id", id, "--timeout", "15")
	if err != nil {
		t.Fatalf("original cb-ctl --watch: %v\n%s%s", err, out, errOut)
	}
	var seen []string
	for _, r := range jsonObjects(t, out) {
		if r["request_id"] != id {
			t.Errorf("watch for %s printed a response of %v", id, r["request_id"])
		}
		seen = append(seen, fmt.Sprint(r["response_code"]))
	}
	for _, want := range []string{message.PackageRequestAccepted, message.BuildRootSetupSucceeded, message.PackageBuildSucceeded} {
		if !hasCode(seen, want) {
			t.Errorf("original watch did not show %q; it showed %s\nstderr:\n%s", want, joinCodes(seen), errOut)
		}
	}

	// The original --build-info gets our answer (artifact_url travels in
	// a header, where its schema does not look).
	out, errOut, err = orig.run(3*time.Minute, "ctl", "--build-info", "cb-hello", "--project-path", "Debian",
		"--arch", "x86_64", "--dist", "bookworm", "--timeout", "20")
	if err != nil {
		t.Fatalf("original cb-ctl --build-info: %v\n%s%s", err, out, errOut)
	}
	if strings.Contains(errOut, "runner count set to") {
		t.Errorf("the original dropped our info answer:\n%s", errOut)
	}
	infos := jsonObjects(t, out)
	if len(infos) != 1 || infos[0]["build_status"] != message.PackageBuildSucceeded || infos[0]["source_ip"] != "127.0.0.1" {
		t.Fatalf("original --build-info printed:\n%s\nstderr:\n%s\ncb-info:\n%s", out, errOut, tail(info.log.String(), 3000))
	}
	if bins, _ := infos[0]["binary_packages"].([]any); len(bins) == 0 {
		t.Errorf("info answer without binaries: %v", infos[0])
	}

	// Our own cb-ctl adds the other message kinds: an info request, and
	// a build request for a project that does not exist, answered with a
	// rejection.
	if out, errOut, err := run(t, s.env, "cb-ctl", "--build-info", "cb-hello", "--project-path", "Debian", "--arch", "x86_64", "--dist", "bookworm", "--timeout", "10"); err != nil || !strings.Contains(out, `"artifact_url"`) {
		t.Errorf("our cb-ctl --build-info: %v (artifact_url from the header expected)\n%s%s", err, out, errOut)
	}
	missingID := s.requestPackage("Debian", "cb-missing")
	if f := s.resp.waitFinal(t, missingID, 2*time.Minute); f.ResponseCode != message.ProjectDoesNotExist {
		t.Errorf("request for a missing project: %s", f.ResponseCode)
	}

	// Every record on the response topics and the runner group topic is
	// readable by the original broker class and passes its validator.
	out, errOut, err = orig.run(5*time.Minute, "records",
		message.TopicResponse+"=response", message.TopicInfoResponse+"=info_response",
		"debian=build_request", message.TopicInfoRequest+"=info_request")
	if err != nil {
		t.Fatalf("original broker classes: %v\n%s\nstderr:\n%s", err, out, errOut)
	}
	// cb-response: accepted, buildroot, built, and the rejection.
	minimum := map[string]int{message.TopicResponse: 4, message.TopicInfoResponse: 2, "debian": 2, message.TopicInfoRequest: 2}
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(nil, 1<<24)
	topics := 0
	for sc.Scan() {
		var r struct {
			Topic   string           `json:"topic"`
			Count   int              `json:"count"`
			Invalid []map[string]any `json:"invalid"`
		}
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("driver output %q: %v", sc.Text(), err)
		}
		topics++
		if r.Count < minimum[r.Topic] {
			t.Errorf("%s: the original read %d records, want at least %d", r.Topic, r.Count, minimum[r.Topic])
		}
		for _, inv := range r.Invalid {
			t.Errorf("%s: the original's validator refuses a record: %v\n%v", r.Topic, inv["errors"], inv["value"])
		}
		t.Logf("%s: %d records, all valid for the original", r.Topic, r.Count)
	}
	if topics != 4 {
		t.Fatalf("driver reported %d topics:\n%s\n%s", topics, out, errOut)
	}

	// Config files: the ones of this system, the shipped examples, and
	// what cb up writes.
	upState := upConfigFiles(t)
	checkSchemas(t, orig, "broker", s.brokerConfig, filepath.Join(repoRoot, "deploy", "cloud_builder_broker.yml"), filepath.Join(upState, "broker.yml"))
	checkSchemas(t, orig, "cbctl", s.ctlConfig, filepath.Join(repoRoot, "deploy", "cbctl.yml"), filepath.Join(upState, "cbctl.yml"))
	// Our runner config as cb up wrote it loads (the shipped example is
	// loaded by internal/config's tests; its token files do not exist
	// here).
	runnerYML := filepath.Join(upState, "runner.yml")
	if out, errOut, err := run(t, []string{"CB_RUNNER_CONFIG=" + runnerYML, "CB_BROKER_CONFIG=" + filepath.Join(upState, "broker.yml")}, "cb-info", "--check-config"); err != nil {
		t.Errorf("%s does not load: %v\n%s%s", runnerYML, err, out, errOut)
	}
}

// checkSchemas validates files with the original's schema of kind.
func checkSchemas(t *testing.T, orig *original, kind string, files ...string) {
	t.Helper()
	out, errOut, err := orig.run(time.Minute, "schema", append([]string{kind}, files...)...)
	if err != nil {
		t.Fatalf("original schema check: %v\n%s%s", err, out, errOut)
	}
	n := 0
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		var r struct {
			File   string         `json:"file"`
			Errors map[string]any `json:"errors"`
		}
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("driver output %q: %v", sc.Text(), err)
		}
		n++
		if len(r.Errors) > 0 {
			b, _ := os.ReadFile(r.File)
			t.Errorf("%s fails the original's %s schema: %v\n%s", r.File, kind, r.Errors, b)
		}
	}
	if n != len(files) {
		t.Fatalf("checked %d of %d files:\n%s%s", n, len(files), out, errOut)
	}
}

// upConfigFiles runs cb up on a source repository without packages until
// its banner is out, checks that its terminal shows the banner and no
// client chatter, and returns its state dir with the config files it
// wrote.
func upConfigFiles(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	origin, work := filepath.Join(dir, "origin.git"), filepath.Join(dir, "work")
	git(t, dir, "init", "-q", "--bare", origin)
	git(t, dir, "clone", "-q", origin, work)
	if err := os.MkdirAll(filepath.Join(work, "projects"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(work, "projects", "README"), []byte("no packages\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	git(t, work, "add", "-A")
	git(t, work, "commit", "-q", "-m", "empty")
	git(t, work, "push", "-q", "origin", "HEAD:main")
	state := filepath.Join(dir, "state")
	up := start(t, nil, "cb", "up", "--state-dir", state, "--project", "file://"+origin, "--branch", "main",
		"--broker-listen", freePort(t), "--repo-listen", freePort(t), "--artifact-listen", freePort(t),
		"--metrics-listen", freePort(t))
	waitFor(t, time.Minute, "cb up's banner", func() bool {
		return strings.Contains(up.log.String(), "Build events")
	})
	time.Sleep(2 * time.Second) // a group join and a fetch poll later
	up.stop(time.Minute)
	log := up.log.String()
	for _, want := range []string{"Cloud Builder is up", "export CB_BROKER_CONFIG=" + filepath.Join(state, "broker.yml") + " CB_RUNNER_CONFIG="} {
		if !strings.Contains(log, want) {
			t.Errorf("cb up's output lacks %q:\n%s", want, log)
		}
	}
	for _, chatter := range []string{"component=kafka", "level=INFO", "level=DEBUG"} {
		if strings.Contains(log, chatter) {
			t.Errorf("cb up's default output has %q lines:\n%s", chatter, log)
		}
	}
	return state
}
