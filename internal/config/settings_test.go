package config

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

func TestLoadSettingsValues(t *testing.T) {
	tests := []struct {
		name, line, key, want string
	}{
		{"plain", "CB_PROJECT=https://github.com/example/p.git", "CB_PROJECT", "https://github.com/example/p.git"},
		{"double quotes", `CB_BRANCH="main"`, "CB_BRANCH", "main"},
		{"single quotes", `CB_COLLECT_REPO_SERVER='10.0.0.9'`, "CB_COLLECT_REPO_SERVER", "10.0.0.9"},
		{"quoted spaces", `CB_SSH_USER="cb user"`, "CB_SSH_USER", "cb user"},
		{"quoted hash", `CB_SSH_PKEY='/k #1'`, "CB_SSH_PKEY", "/k #1"},
		{"export", "export CB_UPDATE=30", "CB_UPDATE", "30"},
		{"export tab", "export\tCB_UPDATE=31", "CB_UPDATE", "31"},
		{"indented", "   CB_BUILD_LIMIT=10", "CB_BUILD_LIMIT", "10"},
		{"inline comment", "CB_INFO_RESPONSE_TYPE=--respond-always   # every runner answers", "CB_INFO_RESPONSE_TYPE", "--respond-always"},
		{"hash without space", "CB_HASH=a#b", "CB_HASH", "a#b"},
		{"equals in value", "CB_URL=https://h/p?a=b&c=d", "CB_URL", "https://h/p?a=b&c=d"},
		{"empty", "CB_EMPTY=", "CB_EMPTY", ""},
		{"quoted empty", `CB_EMPTY=""`, "CB_EMPTY", ""},
		{"no expansion", "CB_X=$HOME/$(id)", "CB_X", "$HOME/$(id)"},
		{"trailing space", "CB_X=v   ", "CB_X", "v"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := LoadSettings(strings.NewReader(tt.line + "\n"))
			if err != nil {
				t.Fatal(err)
			}
			got, ok := s[tt.key]
			if !ok || got != tt.want {
				t.Errorf("%s = %q (set %v), want %q; all: %v", tt.key, got, ok, tt.want, s)
			}
			if len(s) != 1 {
				t.Errorf("want exactly one setting, got %v", s)
			}
		})
	}
}

func TestLoadSettingsFileContent(t *testing.T) {
	s, err := LoadSettings(strings.NewReader(`# Cloud Builder settings
CB_PROJECT=https://github.com/example/p.git

# comment between
CB_BRANCH="main"
	# indented comment
export CB_UPDATE=30
CB_UPDATE=45
`))
	if err != nil {
		t.Fatal(err)
	}
	// A later line wins, as in a shell.
	want := Settings{"CB_PROJECT": "https://github.com/example/p.git", "CB_BRANCH": "main", "CB_UPDATE": "45"}
	if !reflect.DeepEqual(s, want) {
		t.Errorf("got %v, want %v", s, want)
	}
}

func TestLoadSettingsRejects(t *testing.T) {
	tests := []struct {
		name, doc, want string
	}{
		{"no equals", "CB_PROJECT=x\nCB_BRANCH main\n", "line 2: want KEY=value"},
		{"shell command", "# c\n\nsource /etc/other\n", "line 3: want KEY=value"},
		{"space before equals", "CB_BUILD_LIMIT = 10\n", "line 1: want KEY=value"},
		{"bad key", "1CB=x\n", "line 1: want KEY=value"},
		{"dash in key", "CB-X=1\n", "line 1: want KEY=value"},
		{"unterminated double", "CB_A=1\nCB_BRANCH=\"main\n", "line 2: CB_BRANCH: unterminated quote"},
		{"unterminated single", "CB_BRANCH='main\n", "line 1: CB_BRANCH: unterminated quote"},
		{"mismatched quotes", "CB_BRANCH=\"main'\n", "line 1: CB_BRANCH: unterminated quote"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := LoadSettings(strings.NewReader(tt.doc))
			if err == nil {
				t.Fatalf("accepted: %v", s)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
		})
	}
}

func TestLoadSettingsFile(t *testing.T) {
	dir := t.TempDir()
	s, err := LoadSettingsFile(filepath.Join(dir, "missing"))
	if err != nil || len(s) != 0 {
		t.Errorf("missing file: %v, %v", s, err)
	}
	p := filepath.Join(dir, "cloud_builder")
	if err := os.WriteFile(p, []byte("CB_BUILD_LIMIT=4\nbroken line\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadSettingsFile(p); err == nil || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("got %v, want an error naming %s and line 2", err, p)
	}
	if err := os.WriteFile(p, []byte("CB_BUILD_LIMIT=4\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if s, err := LoadSettingsFile(p); err != nil || s["CB_BUILD_LIMIT"] != "4" {
		t.Errorf("good file: %v, %v", s, err)
	}
}

// The shipped example must parse and set every variable the units use.
func TestExampleSettingsFile(t *testing.T) {
	p := filepath.Join("..", "..", "deploy", "cloud_builder.example")
	s, err := LoadSettingsFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(s) == 0 {
		t.Fatalf("%s is missing or sets nothing", p)
	}
	for _, k := range []string{"CB_PROJECT", "CB_BRANCH", "CB_UPDATE", "CB_BUILD_LIMIT", "CB_INFO_RESPONSE_TYPE", "CB_COLLECT_REPO_SERVER"} {
		if _, ok := s[k]; !ok {
			t.Errorf("%s does not set %s", p, k)
		}
	}
	// systemd's EnvironmentFile= reads the same file. It keeps "# …" after
	// a value as part of the value, knows no "export", and treats
	// backslashes and "$" differently: the example stays in the subset
	// both read alike.
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	common := regexp.MustCompile(`^[A-Z_][A-Z0-9_]*=("[^"\\$` + "`" + `]*"|'[^']*'|[^\s#'"\\$]*)$`)
	for i, line := range strings.Split(string(data), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if !common.MatchString(line) {
			t.Errorf("%s:%d: %q is not plain KEY=value that systemd and cb read alike", p, i+1, line)
		}
	}
}
