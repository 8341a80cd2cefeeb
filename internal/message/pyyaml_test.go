package message

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// The original services read messages with PyYAML's safe_load and write them
// with yaml.dump. These tests run the real PyYAML (Debian: python3-yaml) in
// both directions, because YAML 1.1 (PyYAML) and YAML 1.2 (yaml.v3) resolve
// some plain scalars differently.

// pyyamlScript reads {"pairs": [[original, ours], ...], "dump": [[doc,
// message], ...]} and answers, for every pair, whether safe_load gives equal
// Python values (an original prefixed "json:" is read with json.loads), and
// for "dump", what yaml.dump writes after replacing the message.
const pyyamlScript = `
import json, sys, yaml
req = json.load(sys.stdin)
out = {"pairs": [], "dump": []}
for orig, ours in req["pairs"]:
    try:
        a = json.loads(orig[5:]) if orig.startswith("json:") else yaml.safe_load(orig)
        b = yaml.safe_load(ours)
        out["pairs"].append({"equal": a == b, "detail": repr(a) + " != " + repr(b)})
    except Exception as e:
        out["pairs"].append({"equal": False, "detail": "safe_load: " + str(e)})
for doc, msg in req["dump"]:
    v = yaml.safe_load(doc)
    v["message"] = msg
    out["dump"].append(yaml.dump(v, default_flow_style=False))
json.dump(out, sys.stdout)
`

type pyyamlResult struct {
	Pairs []struct {
		Equal  bool   `json:"equal"`
		Detail string `json:"detail"`
	} `json:"pairs"`
	Dump []string `json:"dump"`
}

func runPyYAML(t *testing.T, pairs, dump [][2]string) pyyamlResult {
	t.Helper()
	if err := exec.Command(pythonBin(), "-c", "import yaml").Run(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("python3 with PyYAML (python3-yaml) is required in CI: %v", err)
		}
		t.Skipf("python3 with PyYAML not available: %v", err)
	}
	in, err := json.Marshal(map[string]any{"pairs": nonNil(pairs), "dump": nonNil(dump)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, pythonBin(), "-c", pyyamlScript)
	cmd.Stdin = bytes.NewReader(in)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("python3: %v\n%s", err, stderr.String())
	}
	var res pyyamlResult
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("python3 output: %v\n%s", err, out)
	}
	if len(res.Pairs) != len(pairs) || len(res.Dump) != len(dump) {
		t.Fatalf("python3 answered %d/%d, want %d/%d", len(res.Pairs), len(res.Dump), len(pairs), len(dump))
	}
	return res
}

func nonNil(p [][2]string) [][2]string {
	if p == nil {
		return [][2]string{}
	}
	return p
}

// trickyStrings are free-form texts (messages, paths) that a YAML 1.1 reader
// could take for something else than a string if written plain.
var trickyStrings = []string{
	"=", "<<", "~", "null", "Null", "yes", "No", "on", "OFF", "y", "n",
	"1:20", "190:20:30", "3:25:45.5", "1_000", "017", "0o17", "0x1F", "0b101",
	"1e3", "1.", ".inf", "-.Inf", ".NaN", "0.2",
	"2001-12-14", "2001-12-14t21:59:43.10-05:00", "2021-09-10 09:31:15.123456",
	"- a", "a: b", "#x", "x #y", "'q'", `"d"`, "@a", "`b", "%c", "!t", "&a", "*a",
	"|", "> x", "? q", "[a]", "{a}", "a,b", "\tx", " lead", "trail ", "a\nb",
	"é", "\u0085x", "\u2028", "\ufeffx", "",
	"No package config for: TW.s390x in runner group suse",
}

// TestPyYAMLReadsOurEncoding: everything we encode, safe_load reads as the
// same values as the original's bytes, and free-form strings stay strings.
func TestPyYAMLReadsOurEncoding(t *testing.T) {
	var pairs [][2]string
	var names []string
	for _, file := range wireSamples(t) {
		orig := readFile(t, file)
		v, err := decoderFor(t, file)(orig)
		if err != nil {
			t.Fatal(err)
		}
		enc, err := Encode(v)
		if err != nil {
			t.Fatal(err)
		}
		pairs = append(pairs, [2]string{string(orig), string(enc)})
		names = append(names, filepath.Base(file))
	}
	for _, s := range trickyStrings {
		r := &Response{
			Identity: "CBRun:h:1:x", Message: s, ResponseCode: PackageBuildFailed,
			SchemaVersion: SchemaVersion, Package: &PackageResult{BinaryPackages: []string{s}, LogFile: s},
		}
		enc, err := Encode(r)
		if err != nil {
			t.Fatal(err)
		}
		// The expected side is the value as JSON: it pins the Python value
		// to exactly the Go string.
		want, err := json.Marshal(map[string]any{
			"identity": r.Identity, "message": s, "response_code": r.ResponseCode,
			"schema_version": 0.2, "project": "", "request_id": "",
			"package": map[string]any{"binary_packages": []string{s}, "log_file": s, "exit_code": 0, "prepare_log_file": "", "solver_file": ""},
		})
		if err != nil {
			t.Fatal(err)
		}
		pairs = append(pairs, [2]string{"json:" + string(want), string(enc)})
		names = append(names, "message "+strings.ReplaceAll(string(mustJSON(t, s)), "\n", `\n`))
	}
	res := runPyYAML(t, pairs, nil)
	for i, r := range res.Pairs {
		if !r.Equal {
			t.Errorf("%s: PyYAML reads our encoding differently: %s\nours:\n%s", names[i], r.Detail, pairs[i][1])
		}
	}
}

// TestDecodePyYAMLDump: what the original's yaml.dump writes for messages
// with long (folded), non-ASCII, multi-line and ambiguous texts decodes to
// the same text.
func TestDecodePyYAMLDump(t *testing.T) {
	messages := append([]string{
		strings.Repeat("a long message that PyYAML folds at eighty columns ", 6),
		"ünïcödé ☃ text", "line one\nline two\n", "tab\tseparated", "  indented",
	}, trickyStrings...)
	var dump [][2]string
	var files []string
	for _, file := range wireSamples(t) {
		if !strings.HasPrefix(filepath.Base(file), "response_") {
			continue
		}
		for _, m := range messages {
			dump = append(dump, [2]string{string(readFile(t, file)), m})
			files = append(files, file)
		}
	}
	res := runPyYAML(t, nil, dump)
	for i, doc := range res.Dump {
		r, err := DecodeResponse([]byte(doc))
		if err != nil {
			t.Errorf("%s with message %q: %v\n%s", filepath.Base(files[i]), dump[i][1], err, doc)
			continue
		}
		if r.Message != dump[i][1] {
			t.Errorf("%s: message %q decoded as %q\n%s", filepath.Base(files[i]), dump[i][1], r.Message, doc)
		}
		orig, err := DecodeResponse(readFile(t, files[i]))
		if err != nil {
			t.Fatal(err)
		}
		orig.Message = r.Message
		if !reflect.DeepEqual(orig, r) {
			t.Errorf("%s: PyYAML's dump decodes to\n%#v\nwant\n%#v", filepath.Base(files[i]), r, orig)
		}
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// pythonBin is Debian's python3, whose PyYAML scripts/setup installs
// (python3-yaml), when it exists; a python3 earlier on PATH (pyenv, a
// virtualenv) may lack it.
func pythonBin() string {
	if _, err := os.Stat("/usr/bin/python3"); err == nil {
		return "/usr/bin/python3"
	}
	return "python3"
}
