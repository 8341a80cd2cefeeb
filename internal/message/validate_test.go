package message

import (
	"errors"
	"strings"
	"testing"
)

func TestValidateProject(t *testing.T) {
	valid := []string{
		"projects/MS/xclock",
		"projects/x",
		"projects/images/leap/test-image-disk",
		"projects/Debian/xsnow",
		"projects/a/b/c/d/e/f/g",
		"projects/gcc_12/libstdc++",
		"projects/v1.2/pkg~rc1",
		"projects/epoch:1/x",
	}
	for _, p := range valid {
		if err := ValidateProject(p); err != nil {
			t.Errorf("ValidateProject(%q) = %v, want nil", p, err)
		}
	}
	invalid := []string{
		"",
		"projects",
		"projects/",
		"project/x",
		"Projects/x",
		"../../etc",
		"/etc/passwd",
		"/projects/x",
		"projects/../x",
		"projects/a/../../etc",
		"projects/..",
		"projects/.",
		"projects/./x",
		"projects//x",
		"projects/x/",
		"projects/a\x00b",
		"projects/a\tb",
		"projects/a\nb",
		"projects/a\rb",
		"projects/a\x1bb",
		"projects/a\x7fb",
		"projects/a\u0085b",
		"projects/a\\b",
		"projects/a b",
		"projects/a;b",
		"projects/$(id)",
		"projects/`id`",
		"projects/a|b",
		"projects/a*",
		"projects/-rf",
		"projects/.hidden",
		"projects/a\u202eb",
		"projects/" + strings.Repeat("a", 129),
		"projects/" + strings.Repeat("a/", 600) + "b",
	}
	for _, p := range invalid {
		err := ValidateProject(p)
		if err == nil {
			t.Errorf("ValidateProject(%q) = nil, want an error", p)
			continue
		}
		if !errors.Is(err, ErrInvalidProject) {
			t.Errorf("ValidateProject(%q) = %v, does not wrap ErrInvalidProject", p, err)
		}
		if strings.ContainsAny(err.Error(), "\x00\n") {
			t.Errorf("ValidateProject(%q): error %q carries the raw control character", p, err)
		}
	}
}

func TestValidateName(t *testing.T) {
	for _, n := range []string{"xclock", "TW", "x86_64", "aarch64", "Debian_12", "libstdc++", "1.0~rc1", "_x", "+x", "d86697ee-e999-11f1-8883-02fc00000001", strings.Repeat("a", 128)} {
		if err := ValidateName(n); err != nil {
			t.Errorf("ValidateName(%q) = %v", n, err)
		}
	}
	for _, n := range []string{"", ".", "..", ".x", "-x", "~x", ":x", "a/b", "a b", "a\x00", "a\n", "ä", strings.Repeat("a", 129), "$x", "a'b"} {
		if err := ValidateName(n); err == nil {
			t.Errorf("ValidateName(%q) = nil, want an error", n)
		}
	}
}
