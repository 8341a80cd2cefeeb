package message

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// The files in testdata/wire are messages exactly as the original Python
// services put them on the wire. The file name prefix says which decoder
// reads them.

type decodeFunc func([]byte) (any, error)

func decoderFor(t *testing.T, file string) decodeFunc {
	t.Helper()
	base := filepath.Base(file)
	switch {
	case strings.HasPrefix(base, "build_request_"):
		return func(b []byte) (any, error) { return DecodeBuildRequest(b) }
	case strings.HasPrefix(base, "info_request_"):
		return func(b []byte) (any, error) { return DecodeInfoRequest(b) }
	case strings.HasPrefix(base, "info_response_"):
		return func(b []byte) (any, error) { return DecodeInfoResponse(b) }
	case strings.HasPrefix(base, "response_"):
		return func(b []byte) (any, error) { return DecodeResponse(b) }
	}
	t.Fatalf("no decoder for wire sample %s", base)
	return nil
}

func wireSamples(t testing.TB) []string {
	t.Helper()
	files, err := filepath.Glob("testdata/wire/*.yml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 13 {
		t.Fatalf("found %d wire samples, want the 13 of the original services", len(files))
	}
	return files
}

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

const sampleID = "d86697ee-e999-11f1-8883-02fc00000001"

// wantDecoded holds the field-by-field expectation for samples; every
// message type appears at least once.
var wantDecoded = map[string]any{
	"build_request_package.yml": &BuildRequest{
		Action:        PackageRebuildRequested,
		Package:       &PackageTarget{Arch: "x86_64", Dist: "TW"},
		Project:       "projects/MS/xclock",
		RequestID:     sampleID,
		RunnerGroup:   "suse",
		SchemaVersion: 0.2,
	},
	"build_request_image.yml": &BuildRequest{
		Action:        ImageRebuildSourceChange,
		Image:         &ImageTarget{Arch: "x86_64", Selection: "standard"},
		Project:       "projects/images/leap/test-image-disk",
		RequestID:     sampleID,
		RunnerGroup:   "suse",
		SchemaVersion: 0.2,
	},
	"info_request_package.yml": &InfoRequest{
		Package:       &PackageTarget{Arch: "x86_64", Dist: "TW"},
		Project:       "projects/MS/xclock",
		RequestID:     sampleID,
		SchemaVersion: 0.2,
	},
	"info_request_image.yml": &InfoRequest{
		Image:         &ImageTarget{Arch: "x86_64", Selection: "standard"},
		Project:       "projects/images/leap/test-image-disk",
		RequestID:     sampleID,
		SchemaVersion: 0.2,
	},
	"info_response_package.yml": &InfoResponse{
		BinaryPackages: []string{"/var/tmp/CB/projects/MS/xclock@TW.x86_64/xclock@TW.x86_64.binaries/projects/MS/TW/x86_64/xclock-1.0.9-0.x86_64.rpm"},
		BuildStatus:    PackageBuildSucceeded,
		Identity:       "CBInfo:10.0.0.5:811:projects/MS/xclock",
		IsRunning:      false,
		LogFile:        "/var/tmp/CB/projects/MS/xclock@TW.x86_64.build.log",
		Package: &InfoPackage{
			Arch:           "x86_64",
			Dist:           "TW",
			PrepareLogFile: "/var/tmp/CB/projects/MS/xclock@TW.x86_64.prepare.log",
		},
		Project:             "projects/MS/xclock",
		RequestID:           sampleID,
		SchemaVersion:       0.2,
		SolverFile:          "/var/tmp/CB/projects/MS/xclock@TW.x86_64.solver.json",
		SourceIP:            "10.0.0.5",
		UTCModificationTime: "2021-09-10 09:31:15.123456",
	},
	"info_response_image_running.yml": &InfoResponse{
		BinaryPackages:      []string{},
		BuildStatus:         "unknown",
		Identity:            "CBInfo:10.0.0.5:811:projects/images/leap/test-image-disk",
		Image:               &ImageTarget{Arch: "x86_64", Selection: "standard"},
		IsRunning:           true,
		LogFile:             None,
		Project:             "projects/images/leap/test-image-disk",
		RequestID:           sampleID,
		SchemaVersion:       0.2,
		SolverFile:          None,
		SourceIP:            "10.0.0.5",
		UTCModificationTime: None,
	},
	"response_accepted.yml": &Response{
		Identity:      "CBScheduler:10.0.0.5:4396:xclock",
		Message:       "Accept package build request",
		Project:       "projects/MS/xclock",
		RequestID:     sampleID,
		ResponseCode:  PackageRequestAccepted,
		SchemaVersion: 0.2,
		Target:        &Target{Arch: "x86_64", Dist: "TW"},
	},
	"response_prepare.yml": &Response{
		Identity: "CBPrepare:10.0.0.5:25128:xclock",
		Message:  "Buildroot ready for package build",
		PackagePrepare: &PackagePrepare{
			BuildRoot:      "/var/tmp/CB/projects/MS/xclock@TW.x86_64",
			ExitCode:       0,
			PrepareLogFile: "/var/tmp/CB/projects/MS/xclock@TW.x86_64.prepare.log",
			SolverFile:     "/var/tmp/CB/projects/MS/xclock@TW.x86_64.solver.json",
		},
		Project:       "projects/MS/xclock",
		RequestID:     sampleID,
		ResponseCode:  BuildRootSetupSucceeded,
		SchemaVersion: 0.2,
	},
	"response_package_build.yml": &Response{
		Identity: "CBRun:10.0.0.5:25226:projects/MS/xclock",
		Message:  "Package build finished",
		Package: &PackageResult{
			BinaryPackages: []string{
				"/var/tmp/CB/projects/MS/xclock@TW.x86_64/xclock@TW.x86_64.binaries/projects/MS/TW/x86_64/xclock-1.0.9-0.x86_64.rpm",
				"/var/tmp/CB/projects/MS/xclock@TW.x86_64/xclock@TW.x86_64.binaries/projects/MS/TW/src/xclock-1.0.9-0.src.rpm",
			},
			ExitCode:       0,
			LogFile:        "/var/tmp/CB/projects/MS/xclock@TW.x86_64.build.log",
			PrepareLogFile: "/var/tmp/CB/projects/MS/xclock@TW.x86_64.prepare.log",
			SolverFile:     "/var/tmp/CB/projects/MS/xclock@TW.x86_64.solver.json",
		},
		Project:       "projects/MS/xclock",
		RequestID:     sampleID,
		ResponseCode:  PackageBuildSucceeded,
		SchemaVersion: 0.2,
	},
	"response_image_build.yml": &Response{
		Identity: "CBImage:10.0.0.5:3311:test-image-disk",
		Image: &ImageResult{
			BinaryPackages: []string{"/var/tmp/CB/projects/images/leap/test-image-disk@standard.x86_64.binaries/projects/images/leap/standard/x86_64/kiwi-test-image-disk-1.15.3-0.x86_64.rpm"},
			ExitCode:       0,
			LogFile:        "/var/tmp/CB/projects/images/leap/test-image-disk@standard.x86_64.build.log",
			SolverFile:     "/var/tmp/CB/projects/images/leap/test-image-disk@standard.x86_64.solver.json",
		},
		Message: "Image build bundled as RPM package",
		// The original's image responses carry the bare image name.
		Project:       "test-image-disk",
		RequestID:     sampleID,
		ResponseCode:  ImageBuildSucceeded,
		SchemaVersion: 0.2,
	},
	"response_target_not_configured.yml": &Response{
		Identity:      "CBScheduler:10.0.0.5:4396:xclock",
		Message:       "No package config for: TW.s390x in runner group suse",
		Project:       "projects/MS/xclock",
		RequestID:     sampleID,
		ResponseCode:  PackageTargetNotConfigured,
		SchemaVersion: 0.2,
	},
}

func TestWireSamplesDecode(t *testing.T) {
	checked := map[string]bool{}
	for _, file := range wireSamples(t) {
		base := filepath.Base(file)
		t.Run(base, func(t *testing.T) {
			got, err := decoderFor(t, file)(readFile(t, file))
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			want, ok := wantDecoded[base]
			if !ok {
				return
			}
			checked[reflect.TypeOf(want).String()] = true
			if !reflect.DeepEqual(got, want) {
				t.Errorf("decoded\n%#v\nwant\n%#v", got, want)
			}
		})
	}
	for _, typ := range []string{"*message.BuildRequest", "*message.InfoRequest", "*message.InfoResponse", "*message.Response"} {
		if !checked[typ] {
			t.Errorf("no wire sample of %s was checked field by field", typ)
		}
	}
}

func TestWireSamplesRoundTrip(t *testing.T) {
	for _, file := range wireSamples(t) {
		t.Run(filepath.Base(file), func(t *testing.T) {
			decode := decoderFor(t, file)
			first, err := decode(readFile(t, file))
			if err != nil {
				t.Fatal(err)
			}
			enc, err := Encode(first)
			if err != nil {
				t.Fatal(err)
			}
			second, err := decode(enc)
			if err != nil {
				t.Fatalf("decode our encoding: %v\n%s", err, enc)
			}
			if !reflect.DeepEqual(first, second) {
				t.Errorf("round trip changed the message\nfirst  %#v\nsecond %#v", first, second)
			}
		})
	}
}

// scalarShape is a YAML node reduced to what a reader sees: kind, resolved
// tag, value and whether it was quoted. Indentation width and the choice of
// quote character are left out on purpose: PyYAML writes 2-space indents and
// unindented block sequences, yaml.v3 writes 4 spaces and indents them, and
// PyYAML quotes timestamps with ' where yaml.v3 uses ". A YAML reader
// (PyYAML safe_load included) cannot tell those apart.
type scalarShape struct {
	Path   string
	Kind   yaml.Kind
	Tag    string
	Value  string
	Quoted bool
}

func shapes(t *testing.T, data []byte) []scalarShape {
	t.Helper()
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		t.Fatal(err)
	}
	var out []scalarShape
	var walk func(n *yaml.Node, path string)
	walk = func(n *yaml.Node, path string) {
		out = append(out, scalarShape{
			Path:   path,
			Kind:   n.Kind,
			Tag:    n.ShortTag(),
			Value:  n.Value,
			Quoted: n.Style&(yaml.SingleQuotedStyle|yaml.DoubleQuotedStyle) != 0,
		})
		for _, c := range n.Content {
			walk(c, path+"/")
		}
	}
	walk(&root, "")
	return out
}

// TestWireSamplesEncodeLikeOriginal re-encodes every sample and compares it
// with the original bytes. Documents without nesting must match byte for
// byte; nested ones must match node by node (same keys in the same sorted
// order, same scalars, same quoting), differing only in indentation width and
// quote character.
func TestWireSamplesEncodeLikeOriginal(t *testing.T) {
	for _, file := range wireSamples(t) {
		t.Run(filepath.Base(file), func(t *testing.T) {
			orig := readFile(t, file)
			v, err := decoderFor(t, file)(orig)
			if err != nil {
				t.Fatal(err)
			}
			enc, err := Encode(v)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains("\n"+string(enc), "\nschema_version: 0.2\n") {
				t.Errorf("encoding lacks the line %q:\n%s", "schema_version: 0.2", enc)
			}
			if strings.HasPrefix(string(enc), "---") {
				t.Errorf("encoding starts with a document marker, the original's does not")
			}
			assertSortedKeys(t, enc)
			if !strings.Contains(string(orig), "\n ") {
				if string(enc) != string(orig) {
					t.Errorf("encoding differs from the original\n--- ours\n%s--- original\n%s", enc, orig)
				}
				return
			}
			got, want := shapes(t, enc), shapes(t, orig)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("encoding differs from the original beyond indentation and quote character\n--- ours\n%s--- original\n%s", enc, orig)
			}
		})
	}
}

func assertSortedKeys(t *testing.T, data []byte) {
	t.Helper()
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		t.Fatal(err)
	}
	var walk func(n *yaml.Node)
	walk = func(n *yaml.Node) {
		if n.Kind == yaml.MappingNode {
			var keys []string
			for i := 0; i < len(n.Content); i += 2 {
				keys = append(keys, n.Content[i].Value)
			}
			if !sort.StringsAreSorted(keys) {
				t.Errorf("keys not sorted: %v", keys)
			}
		}
		for _, c := range n.Content {
			walk(c)
		}
	}
	walk(&root)
}

// TestTimeIsQuoted: PyYAML resolves an unquoted "2021-09-10 09:31:15.123456"
// to a datetime, which the original's schema check refuses as not a string.
func TestTimeIsQuoted(t *testing.T) {
	ts := FormatTime(mustParseTime(t, "2021-09-10 09:31:15.123456"))
	if ts != "2021-09-10 09:31:15.123456" {
		t.Fatalf("FormatTime = %q", ts)
	}
	enc, err := Encode(&InfoResponse{SchemaVersion: SchemaVersion, UTCModificationTime: ts})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range shapes(t, enc) {
		if s.Value == ts && !s.Quoted {
			t.Errorf("utc_modification_time is not quoted:\n%s", enc)
		}
	}
}

// TestStructKeysSorted guards the "declare fields in key order" rule of
// Encode for every wire type, including fields added later.
func TestStructKeysSorted(t *testing.T) {
	for _, v := range []any{
		BuildRequest{}, PackageTarget{}, ImageTarget{}, Response{}, Target{},
		PackagePrepare{}, PackageResult{}, ImageResult{}, InfoRequest{},
		InfoResponse{}, InfoPackage{}, Metadata{}, Distribution{}, ImageSpec{}, Selection{},
	} {
		typ := reflect.TypeOf(v)
		var keys []string
		for i := 0; i < typ.NumField(); i++ {
			keys = append(keys, strings.Split(typ.Field(i).Tag.Get("yaml"), ",")[0])
		}
		if !sort.StringsAreSorted(keys) {
			t.Errorf("%s: yaml keys %v are not declared in sorted order", typ.Name(), keys)
		}
	}
}

func mustParseTime(t *testing.T, s string) time.Time {
	t.Helper()
	ts, err := time.Parse(TimeFormat, s)
	if err != nil {
		t.Fatal(err)
	}
	return ts
}

// The PyYAML tests above need python3; these pin the same two rules in Go.

func TestEncodeQuotesValueIndicator(t *testing.T) {
	r := &Response{Identity: "CBRun:h:1:x", Message: "=", ResponseCode: PackageBuildFailed, SchemaVersion: SchemaVersion,
		Package: &PackageResult{BinaryPackages: []string{"=", "a = b"}}}
	enc, err := Encode(r)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"message: '='\n", "- '='\n"} {
		if !strings.Contains(string(enc), want) {
			t.Errorf("encoding lacks %q:\n%s", want, enc)
		}
	}
	back, err := DecodeResponse(enc)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, r) {
		t.Errorf("round trip: %#v", back)
	}
	// Everything else keeps the single-marshal output.
	plain := *r
	plain.Message, plain.Package = "a = b", nil
	enc, err = Encode(&plain)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(enc), "message: a = b\n") {
		t.Errorf("plain text changed:\n%s", enc)
	}
}

func TestDecodeYAML11Strings(t *testing.T) {
	base := "identity: x\nresponse_code: y\nschema_version: 0.2\n"
	for _, text := range []string{"1e3", "0o17", "1.0e5", "+1e3", "0x1g", "1_0e2"} {
		r, err := DecodeResponse([]byte(base + "message: " + text + "\n"))
		if err != nil {
			t.Errorf("message %s: %v", text, err)
			continue
		}
		if r.Message != text {
			t.Errorf("message %s decoded as %q", text, r.Message)
		}
	}
	// Numbers in both YAML versions stay numbers: PyYAML reads them as
	// int or float too.
	for _, text := range []string{"12", "0x1F", "1.5", "1.0e+5", "017", "1_000", ".5"} {
		if _, err := DecodeResponse([]byte(base + "message: " + text + "\n")); err == nil || !strings.Contains(err.Error(), "message: must be a string, got number") {
			t.Errorf("message %s: got %v, want a type error", text, err)
		}
	}
}

// Extensions never reach a message body: the original's schemas refuse
// unknown fields and drop the whole message.
func TestExtensionsStayOutOfBodies(t *testing.T) {
	info, err := Encode(&InfoResponse{ArtifactURL: "http://runner:8081/v1/targets/x/", BinaryPackages: []string{}})
	if err != nil {
		t.Fatal(err)
	}
	req := BuildRequest{FreshBuildRoot: true, Project: "projects/a", Package: &PackageTarget{Arch: "x86_64", Dist: "d"}}
	wire, err := Encode(req.WireRequest())
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range [][]byte{info, wire} {
		if bytes.Contains(b, []byte("artifact_url")) || bytes.Contains(b, []byte("fresh_build_root")) {
			t.Errorf("extension in the body:\n%s", b)
		}
	}
	if !req.FreshBuildRoot {
		t.Error("WireRequest changed the request it was called on")
	}
}
