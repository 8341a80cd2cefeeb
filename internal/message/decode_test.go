package message

import (
	"errors"
	"fmt"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"
)

const validBuildRequest = `schema_version: 0.2
request_id: 6f2d0f4e-1b7a-4f4e-9c39-0d6b8d3f1a11
runner_group: suse
action: package rebuild requested
project: projects/MS/xclock
package:
  arch: x86_64
  dist: TW
`

// withField returns validBuildRequest with the top-level line of key
// replaced (value "" removes the line; a missing key is appended).
func withField(key, value string) string {
	return replaceLine(validBuildRequest, key+":", value)
}

func replaceLine(doc, prefix, line string) string {
	var out []string
	found := false
	for _, l := range strings.Split(strings.TrimSuffix(doc, "\n"), "\n") {
		if strings.HasPrefix(l, prefix) {
			found = true
			if line != "" {
				out = append(out, line)
			}
			continue
		}
		out = append(out, l)
	}
	if !found && line != "" {
		out = append(out, line)
	}
	return strings.Join(out, "\n") + "\n"
}

func TestDecodeBuildRequestValid(t *testing.T) {
	r, err := DecodeBuildRequest([]byte(validBuildRequest))
	if err != nil {
		t.Fatal(err)
	}
	if r.Name() != "xclock" || r.Profile() != "TW.x86_64" || r.Arch() != "x86_64" || r.IsImage() {
		t.Errorf("accessors: name %q profile %q arch %q image %v", r.Name(), r.Profile(), r.Arch(), r.IsImage())
	}
	img, err := DecodeBuildRequest([]byte(strings.Replace(validBuildRequest,
		"package:\n  arch: x86_64\n  dist: TW", "image:\n  arch: aarch64\n  selection: standard", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if !img.IsImage() || img.Profile() != "standard.aarch64" || img.Arch() != "aarch64" {
		t.Errorf("image accessors: profile %q arch %q image %v", img.Profile(), img.Arch(), img.IsImage())
	}
}

func TestDecodeBuildRequestRejects(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		want string // substring of the error
	}{
		{"not YAML", "a: [\n", "not YAML"},
		{"not YAML tab indent", "a:\n\t- b\n", "not YAML"},
		{"raw NUL byte", "schema_version: 0.2\x00\n", "not YAML"},
		{"invalid UTF-8", "message: \xff\xfe\n", "not YAML"},
		{"empty", "", "empty document"},
		{"comment only", "# nothing\n", "empty document"},
		{"list", "- a\n- b\n", "not a mapping"},
		{"scalar", "hello\n", "not a mapping"},
		{"null", "null\n", "not a mapping"},
		{"two documents", validBuildRequest + "---\na: b\n", "not YAML"},
		{"request_id number", withField("request_id", "request_id: 12"), "request_id: must be a string, got number"},
		{"request_id list", withField("request_id", "request_id: [a]"), "request_id: must be a string, got list"},
		{"request_id too long", withField("request_id", "request_id: "+strings.Repeat("a", 129)), "request_id: longer than 128 bytes"},
		{"request_id with slash", withField("request_id", "request_id: ../x"), "request_id: invalid name"},
		{"package string", replaceLine(withField("package", `package: "x"`), "  ", ""), "package: must be a mapping, got string"},
		{"package list", replaceLine(withField("package", `package: [x86_64, TW]`), "  ", ""), "package: must be a mapping, got list"},
		{"schema_version string", withField("schema_version", `schema_version: "a"`), "schema_version: must be a number, got string"},
		{"schema_version quoted number", withField("schema_version", `schema_version: "0.2"`), "schema_version: must be a number, got string"},
		{"schema_version nan", withField("schema_version", `schema_version: .nan`), "schema_version: must be a finite number"},
		{"schema_version inf", withField("schema_version", `schema_version: -.inf`), "schema_version: must be a finite number"},
		{"schema_version bool", withField("schema_version", `schema_version: true`), "schema_version: must be a number, got boolean"},
		{"missing schema_version", withField("schema_version", ""), "schema_version: required"},
		{"null schema_version", withField("schema_version", "schema_version:"), "schema_version: required"},
		{"missing request_id", withField("request_id", ""), "request_id: required"},
		{"blank request_id", withField("request_id", `request_id: "  "`), "request_id: required"},
		{"missing runner_group", withField("runner_group", ""), "runner_group: required"},
		{"runner_group path", withField("runner_group", "runner_group: ../suse"), "runner_group: invalid name"},
		{"missing action", withField("action", ""), "action: required"},
		{"unknown action", withField("action", "action: rm -rf"), `action: unknown action "rm -rf"`},
		{"response code as action", withField("action", "action: package build succeeded"), "action: unknown action"},
		{"missing project", withField("project", ""), "project: required"},
		{"missing package and image", replaceLine(withField("package", ""), "  ", ""), "package: required (or image)"},
		{"missing package.arch", replaceLine(validBuildRequest, "  arch:", ""), "package.arch: required"},
		{"missing package.dist", replaceLine(validBuildRequest, "  dist:", ""), "package.dist: required"},
		{"package.arch number", replaceLine(validBuildRequest, "  arch:", "  arch: 64"), "package.arch: must be a string, got number"},
		{"package.arch injection", replaceLine(validBuildRequest, "  arch:", `  arch: "x86_64; rm -rf /"`), "package.arch: invalid name"},
		{"package.dist traversal", replaceLine(validBuildRequest, "  dist:", "  dist: ../../TW"), "package.dist: invalid name"},
		{"missing image.selection", replaceLine(withField("package", "image:"), "  dist:", ""), "image.selection: required"},
		{"missing image.arch", replaceLine(replaceLine(withField("package", "image:"), "  dist:", "  selection: standard"), "  arch:", ""), "image.arch: required"},
		{"package and image", validBuildRequest + "image: {arch: x86_64, selection: standard}\n", "image: not allowed together with package"},
		{"fresh_build_root string", validBuildRequest + "fresh_build_root: \"yes\"\n", "fresh_build_root: must be a boolean, got string"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := DecodeBuildRequest([]byte(tt.doc))
			if err == nil {
				t.Fatalf("decoded %+v, want an error containing %q\n%s", r, tt.want, tt.doc)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
			if !strings.HasPrefix(err.Error(), "build request: ") {
				t.Errorf("error %q does not say which message it is about", err)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error is not one line: %q", err)
			}
		})
	}
}

func TestDecodeRejectsBadProject(t *testing.T) {
	projects := []string{
		`../../etc`,
		`/etc/passwd`,
		`projects/../x`,
		`projects/a/../../etc`,
		`"projects/a\0b"`,
		`"projects/a\tb"`,
		`"projects/a\nb"`,
		`"projects/a\eb"`,
		`"projects/a\u0085b"`,
		`"projects/a\x7fb"`,
		`projects`,
		`projects/`,
		`projects//x`,
		`projects/./x`,
		`projects/x/`,
		`"projects/a b"`,
		`"projects/a;b"`,
		`"projects/$(id)"`,
		`'projects/a\b'`,
		`./projects/x`,
		`etc/projects/x`,
		`projects/-rf`,
		`projects/` + strings.Repeat("a/", 600) + `x`,
	}
	decoders := map[string]func([]byte) error{
		"build request": func(b []byte) error { _, err := DecodeBuildRequest(b); return err },
		"info request": func(b []byte) error {
			_, err := DecodeInfoRequest([]byte(replaceLine(replaceLine(string(b), "runner_group:", ""), "action:", "")))
			return err
		},
	}
	for _, p := range projects {
		for name, decode := range decoders {
			t.Run(name+" "+p, func(t *testing.T) {
				err := decode([]byte(withField("project", "project: "+p)))
				if err == nil {
					t.Fatalf("project %s accepted", p)
				}
				if !strings.Contains(err.Error(), "project: ") {
					t.Errorf("error %q does not name the project field", err)
				}
			})
		}
	}
}

func TestDecodeControlCharacters(t *testing.T) {
	// Raw control characters are refused by the YAML reader itself; escaped
	// ones reach the validators, which must refuse them in every field that
	// becomes a path or an argument.
	for _, field := range []string{"request_id", "runner_group"} {
		for _, c := range []string{`\0`, `\t`, `\n`, `\r`, `\e`, `\x7f`, `\u0085`, `\u202e`} {
			t.Run(field+" "+c, func(t *testing.T) {
				_, err := DecodeBuildRequest([]byte(withField(field, fmt.Sprintf(`%s: "a%sb"`, field, c))))
				if err == nil || !strings.Contains(err.Error(), field+": ") {
					t.Errorf("got %v, want an error naming %s", err, field)
				}
			})
		}
	}
	for _, key := range []string{"arch", "dist"} {
		_, err := DecodeBuildRequest([]byte(replaceLine(validBuildRequest, "  "+key+":", fmt.Sprintf(`  %s: "a\tb"`, key))))
		if err == nil || !strings.Contains(err.Error(), "package."+key+": ") {
			t.Errorf("package.%s with a tab: got %v", key, err)
		}
	}
}

func TestDecodeIgnoresUnknownFields(t *testing.T) {
	want, err := DecodeBuildRequest([]byte(validBuildRequest))
	if err != nil {
		t.Fatal(err)
	}
	extra := validBuildRequest + `future_field: x
nested_extension:
  list: [1, 2, {a: b}]
  map: {k: v}
schema_version_next: 0.3
`
	extra = strings.Replace(extra, "  dist: TW\n", "  dist: TW\n  flavour: debug\n", 1)
	got, err := DecodeBuildRequest([]byte(extra))
	if err != nil {
		t.Fatalf("unknown fields refused: %v", err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("unknown fields changed the result: %+v", got)
	}
}

func TestDecodeSizeBound(t *testing.T) {
	pad := func(n int) []byte {
		doc := []byte(validBuildRequest + "padding: ")
		return append(doc, []byte(strings.Repeat("x", n-len(doc)-1)+"\n")...)
	}
	big := pad(5 << 20)
	for name, decode := range allDecoders {
		t.Run(name, func(t *testing.T) {
			if err := decode(big); !errors.Is(err, ErrTooLarge) {
				t.Errorf("5 MiB document: got %v, want ErrTooLarge", err)
			}
			if err := decode(pad(MaxDocumentSize + 1)); !errors.Is(err, ErrTooLarge) {
				t.Errorf("MaxDocumentSize+1: got %v, want ErrTooLarge", err)
			}
		})
	}
	if _, err := DecodeBuildRequest(pad(MaxDocumentSize)); err != nil {
		t.Errorf("document of exactly MaxDocumentSize refused: %v", err)
	}
}

var allDecoders = map[string]func([]byte) error{
	"build request": func(b []byte) error { _, err := DecodeBuildRequest(b); return err },
	"response":      func(b []byte) error { _, err := DecodeResponse(b); return err },
	"info request":  func(b []byte) error { _, err := DecodeInfoRequest(b); return err },
	"info response": func(b []byte) error { _, err := DecodeInfoResponse(b); return err },
	"metadata":      func(b []byte) error { _, err := DecodeMetadata(b, ""); return err },
}

// aliasBomb is the "billion laughs" document: 9 levels of 9 aliases each
// expand to 9^9 (387 million) strings, all in a few hundred bytes.
func aliasBomb() []byte {
	var b strings.Builder
	b.WriteString("a0: &a0 [lol]\n")
	for i := 1; i <= 9; i++ {
		fmt.Fprintf(&b, "a%d: &a%d [", i, i)
		for j := 0; j < 9; j++ {
			if j > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "*a%d", i-1)
		}
		b.WriteString("]\n")
	}
	b.WriteString("schema_version: 0.2\nrequest_id: x\n")
	return []byte(b.String())
}

func TestDecodeAliasBomb(t *testing.T) {
	bombs := map[string][]byte{
		"billion laughs": aliasBomb(),
		"self reference": []byte("a: &a [*a]\nschema_version: 0.2\n"),
		"wide":           []byte("a: &a [" + strings.Repeat("x,", 1000) + "x]\nb: [" + strings.Repeat("*a,", 200) + "*a]\n"),
		// Few nodes, but 10,000 copies of a 200 kB string: 2 GB for
		// whoever re-encodes or prints the decoded message.
		"long string": []byte("identity: &a " + strings.Repeat("x", 200_000) + "\nresponse_code: c\nschema_version: 0.2\n" +
			"package:\n  binary_packages: [" + strings.Repeat("*a,", 10_000) + "*a]\n"),
	}
	for bname, bomb := range bombs {
		for name, decode := range allDecoders {
			t.Run(bname+"/"+name, func(t *testing.T) {
				var before, after runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&before)
				start := time.Now()
				err := decode(bomb)
				elapsed := time.Since(start)
				runtime.ReadMemStats(&after)
				if !errors.Is(err, ErrAliasBomb) {
					t.Errorf("got %v, want ErrAliasBomb", err)
				}
				// Expanding the bomb would take minutes and gigabytes; the
				// bounds leave room for the race detector on a busy machine.
				if elapsed > 10*time.Second {
					t.Errorf("took %v, want a fast failure", elapsed)
				}
				if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 64<<20 {
					t.Errorf("allocated %d MiB, want bounded memory", alloc>>20)
				}
			})
		}
	}
}

// Moderate alias use, as a hand-written cloud_builder.yml may have, is fine.
func TestDecodeMetadataSmallAliases(t *testing.T) {
	m, err := DecodeMetadata([]byte(`schema_version: 0.1
name: xclock
distributions:
  - &tw {dist: TW, arch: x86_64, runner_group: suse}
  - {<<: *tw, arch: aarch64}
`), "xclock")
	if err != nil {
		t.Fatal(err)
	}
	want := []Distribution{{Arch: "x86_64", Dist: "TW", RunnerGroup: "suse"}, {Arch: "aarch64", Dist: "TW", RunnerGroup: "suse"}}
	if !reflect.DeepEqual(m.Distributions, want) {
		t.Errorf("distributions %+v, want %+v", m.Distributions, want)
	}
}

func TestDecodeDeepNesting(t *testing.T) {
	for name, doc := range map[string]string{
		"flow":  "a: " + strings.Repeat("[", 200000),
		"block": strings.Repeat("- ", 20000) + "x",
		"map":   strings.Repeat("{a: ", 50000),
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := DecodeResponse([]byte(doc)); err == nil {
				t.Error("deeply nested document accepted")
			}
		})
	}
}

func TestDecodeOtherMessagesRejects(t *testing.T) {
	resp := string(readFile(t, "testdata/wire/response_package_build.yml"))
	prep := string(readFile(t, "testdata/wire/response_prepare.yml"))
	img := string(readFile(t, "testdata/wire/response_image_build.yml"))
	acc := string(readFile(t, "testdata/wire/response_accepted.yml"))
	infoReq := string(readFile(t, "testdata/wire/info_request_package.yml"))
	infoResp := string(readFile(t, "testdata/wire/info_response_package.yml"))
	infoImg := string(readFile(t, "testdata/wire/info_response_image_running.yml"))
	tests := []struct {
		name   string
		decode func([]byte) error
		doc    string
		want   string
	}{
		{"response without identity", allDecoders["response"], replaceLine(resp, "identity:", ""), "response: identity: required"},
		{"response without response_code", allDecoders["response"], replaceLine(resp, "response_code:", ""), "response: response_code: required"},
		{"response code number", allDecoders["response"], replaceLine(resp, "response_code:", "response_code: 3"), "response_code: must be a string, got number"},
		{"response request_id number", allDecoders["response"], replaceLine(resp, "request_id:", "request_id: 12"), "request_id: must be a string, got number"},
		{"response binary_packages entry", allDecoders["response"], replaceLine(resp, "  - /var/tmp/CB/projects/MS/xclock@TW.x86_64/xclock@TW.x86_64.binaries/projects/MS/TW/src", "  - 7"), "package.binary_packages[1]: must be a string, got number"},
		{"response binary_packages mapping", allDecoders["response"], replaceLine(replaceLine(resp, "  binary_packages:", "  binary_packages: {a: b}"), "  - ", ""), "package.binary_packages: must be a list, got mapping"},
		{"response exit_code string", allDecoders["response"], replaceLine(resp, "  exit_code:", "  exit_code: zero"), "package.exit_code: must be an integer, got string"},
		{"response exit_code float", allDecoders["response"], replaceLine(resp, "  exit_code:", "  exit_code: 1.5"), "package.exit_code: must be an integer, got number"},
		{"prepare exit_code", allDecoders["response"], replaceLine(prep, "  exit_code:", "  exit_code: [1]"), "package_prepare.exit_code: must be an integer, got list"},
		{"prepare build_root", allDecoders["response"], replaceLine(prep, "  build_root:", "  build_root: 5"), "package_prepare.build_root: must be a string"},
		{"image exit_code", allDecoders["response"], replaceLine(img, "  exit_code:", "  exit_code: x"), "image.exit_code: must be an integer"},
		{"image block string", allDecoders["response"], replaceLine(replaceLine(img, "image:", "image: done"), "  ", ""), "image: must be a mapping, got string"},
		{"target without arch", allDecoders["response"], replaceLine(acc, "  arch:", ""), "target.arch: required"},
		{"target list", allDecoders["response"], replaceLine(replaceLine(acc, "target:", "target: []"), "  ", ""), "target: must be a mapping, got list"},
		{"info request without package", allDecoders["info request"], replaceLine(replaceLine(infoReq, "package:", ""), "  ", ""), "info request: package: required (or image)"},
		{"info request arch missing", allDecoders["info request"], replaceLine(infoReq, "  arch:", ""), "package.arch: required"},
		{"info request project", allDecoders["info request"], replaceLine(infoReq, "project:", "project: ../../etc"), "project: invalid project"},
		{"info request request_id", allDecoders["info request"], replaceLine(infoReq, "request_id:", "request_id: 12"), "request_id: must be a string"},
		{"info response is_running string", allDecoders["info response"], replaceLine(infoResp, "is_running:", "is_running: 'false'"), "is_running: must be a boolean, got string"},
		{"info response without identity", allDecoders["info response"], replaceLine(infoResp, "identity:", ""), "info response: identity: required"},
		{"info response without project", allDecoders["info response"], replaceLine(infoResp, "project:", ""), "project: required"},
		{"info response without request_id", allDecoders["info response"], replaceLine(infoResp, "request_id:", ""), "request_id: required"},
		{"info response package.dist", allDecoders["info response"], replaceLine(infoResp, "  dist:", ""), "package.dist: required"},
		{"info response image.selection", allDecoders["info response"], replaceLine(infoImg, "  selection:", "  selection: ../x"), "image.selection: invalid name"},
		{"info response binary_packages string", allDecoders["info response"], replaceLine(infoImg, "binary_packages:", "binary_packages: x.rpm"), "binary_packages: must be a list, got string"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.decode([]byte(tt.doc))
			if err == nil {
				t.Fatalf("accepted, want %q\n%s", tt.want, tt.doc)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
		})
	}
}

func TestPeekRequestID(t *testing.T) {
	tests := map[string]string{
		validBuildRequest:                                                "6f2d0f4e-1b7a-4f4e-9c39-0d6b8d3f1a11",
		withField("project", "project: ../../etc"):                       "6f2d0f4e-1b7a-4f4e-9c39-0d6b8d3f1a11",
		withField("request_id", "request_id: 12"):                        "",
		withField("request_id", ""):                                      "",
		withField("request_id", "request_id: "+strings.Repeat("a", 129)): "",
		"not: [yaml":        "",
		string(aliasBomb()): "",
	}
	for doc, want := range tests {
		if got := PeekRequestID([]byte(doc)); got != want {
			t.Errorf("PeekRequestID = %q, want %q\n%.200s", got, want, doc)
		}
	}
}

func TestFieldError(t *testing.T) {
	_, err := DecodeBuildRequest([]byte(replaceLine(validBuildRequest, "  arch:", "")))
	var fe *FieldError
	if !errors.As(err, &fe) {
		t.Fatalf("error %v is not a *FieldError", err)
	}
	if fe.Field != "package.arch" || fe.Reason != "required" {
		t.Errorf("FieldError{%q, %q}, want package.arch: required", fe.Field, fe.Reason)
	}
	if err.Error() != "build request: package.arch: required" {
		t.Errorf("error text %q", err)
	}
}
