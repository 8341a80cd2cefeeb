// Package mirror finds the Debian archive this machine's apt uses, so that
// buildroot descriptions in the source repository can name it with a
// placeholder instead of a fixed host: the runner's own network (proxy,
// local mirror, snapshot) decides where packages come from.
package mirror

import (
	"bufio"
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Placeholder is replaced by Substitute with the machine's Debian archive URL.
const Placeholder = "@DEBIAN_MIRROR@"

// EnvOverride names an environment variable that, when set, is used instead
// of the apt sources (for machines without apt or to force another archive).
const EnvOverride = "CB_DEBIAN_MIRROR"

// ErrNotFound means no apt source qualifies as the Debian archive.
var ErrNotFound = errors.New("no Debian archive found in the apt sources")

// DefaultFiles lists the apt source files in the order apt reads them.
func DefaultFiles() []string {
	files := []string{"/etc/apt/sources.list"}
	for _, pat := range []string{"/etc/apt/sources.list.d/*.list", "/etc/apt/sources.list.d/*.sources"} {
		m, _ := filepath.Glob(pat)
		files = append(files, m...)
	}
	// apt reads sources.list.d in lexical order regardless of the format.
	rest := files[1:]
	sort.Slice(rest, func(i, j int) bool { return filepath.Base(rest[i]) < filepath.Base(rest[j]) })
	return files
}

// Debian returns the Debian archive URL this machine's apt uses: the first
// "deb" URI whose suite is not a -security, -updates, -backports or
// -proposed-updates suite. $CB_DEBIAN_MIRROR overrides the apt sources.
func Debian() (string, error) {
	if v := os.Getenv(EnvOverride); v != "" {
		if err := validate(v); err != nil {
			return "", fmt.Errorf("%s: %w", EnvOverride, err)
		}
		return strings.TrimRight(v, "/"), nil
	}
	return DebianFrom(DefaultFiles()...)
}

// DebianFrom is Debian reading the given apt source files. Files ending in
// .sources are read as deb822, all others as one-line format; missing files
// are skipped as apt does.
func DebianFrom(files ...string) (string, error) {
	for _, f := range files {
		data, err := os.ReadFile(f)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return "", fmt.Errorf("read apt sources: %w", err)
		}
		var entries []entry
		if strings.HasSuffix(f, ".sources") {
			entries = parseDeb822(data)
		} else {
			entries = parseOneLine(data)
		}
		for _, e := range entries {
			if e.typ != "deb" || !mainSuite(e.suite) || validate(e.uri) != nil {
				continue
			}
			return strings.TrimRight(e.uri, "/"), nil
		}
	}
	return "", ErrNotFound
}

// Sources returns every archive URL this machine's apt sources name
// ("deb" entries of any suite, without trailing slash), with
// $CB_DEBIAN_MIRROR first when set. They are the repositories a runner
// trusts by default.
func Sources() ([]string, error) {
	var out []string
	if v := os.Getenv(EnvOverride); v != "" {
		if err := validate(v); err != nil {
			return nil, fmt.Errorf("%s: %w", EnvOverride, err)
		}
		out = append(out, strings.TrimRight(v, "/"))
	}
	for _, f := range DefaultFiles() {
		data, err := os.ReadFile(f)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read apt sources: %w", err)
		}
		entries := parseOneLine(data)
		if strings.HasSuffix(f, ".sources") {
			entries = parseDeb822(data)
		}
		for _, e := range entries {
			if e.typ == "deb" && validate(e.uri) == nil {
				out = append(out, strings.TrimRight(e.uri, "/"))
			}
		}
	}
	return out, nil
}

// Substitute replaces every Placeholder in data with Debian(). Data
// without the placeholder is returned unchanged and apt is not consulted.
// The URL is XML-escaped because descriptions are XML.
func Substitute(data []byte) ([]byte, error) {
	if !bytes.Contains(data, []byte(Placeholder)) {
		return data, nil
	}
	u, err := Debian()
	if err != nil {
		return nil, fmt.Errorf("substitute %s: %w", Placeholder, err)
	}
	var esc bytes.Buffer
	if err := xml.EscapeText(&esc, []byte(u)); err != nil {
		return nil, fmt.Errorf("substitute %s: %w", Placeholder, err)
	}
	return bytes.ReplaceAll(data, []byte(Placeholder), esc.Bytes()), nil
}

type entry struct{ typ, uri, suite string }

func mainSuite(s string) bool {
	for _, suf := range []string{"-security", "-updates", "-backports", "-proposed-updates", "-backports-sloppy"} {
		if strings.HasSuffix(s, suf) {
			return false
		}
	}
	// A suite with a slash is a flat or security-style path ("bookworm/updates").
	return s != "" && !strings.Contains(s, "/updates")
}

func validate(u string) error {
	if strings.ContainsFunc(u, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return fmt.Errorf("archive URL %q contains white space or control characters", u)
	}
	p, err := url.Parse(u)
	if err != nil {
		return fmt.Errorf("archive URL: %w", err)
	}
	switch p.Scheme {
	case "http", "https", "file":
	default:
		return fmt.Errorf("archive URL %q: unsupported scheme %q", u, p.Scheme)
	}
	if p.Scheme != "file" && p.Host == "" {
		return fmt.Errorf("archive URL %q has no host", u)
	}
	return nil
}

// parseOneLine reads "deb [opts] uri suite [components...]" lines.
func parseOneLine(data []byte) []entry {
	var out []entry
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := sc.Text()
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		f := strings.Fields(line)
		if len(f) < 3 {
			continue
		}
		typ := f[0]
		f = f[1:]
		if strings.HasPrefix(f[0], "[") {
			// Options may contain spaces: "[ arch=amd64 signed-by=... ]".
			for len(f) > 0 && !strings.HasSuffix(f[0], "]") {
				f = f[1:]
			}
			if len(f) == 0 {
				continue
			}
			f = f[1:]
		}
		if len(f) < 2 {
			continue
		}
		out = append(out, entry{typ: typ, uri: f[0], suite: f[1]})
	}
	return out
}

// parseDeb822 reads deb822 stanzas (Types/URIs/Suites, Enabled: no skips).
func parseDeb822(data []byte) []entry {
	var out []entry
	flush := func(st map[string]string) {
		if len(st) == 0 || strings.EqualFold(strings.TrimSpace(st["enabled"]), "no") {
			return
		}
		for _, typ := range strings.Fields(st["types"]) {
			for _, uri := range strings.Fields(st["uris"]) {
				for _, suite := range strings.Fields(st["suites"]) {
					out = append(out, entry{typ: typ, uri: uri, suite: suite})
				}
			}
		}
	}
	st := map[string]string{}
	last := ""
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.TrimSpace(line) == "":
			flush(st)
			st, last = map[string]string{}, ""
		case strings.HasPrefix(line, "#"):
		case line[0] == ' ' || line[0] == '\t':
			if last != "" {
				st[last] += " " + strings.TrimSpace(line)
			}
		default:
			k, v, ok := strings.Cut(line, ":")
			if !ok {
				continue
			}
			last = strings.ToLower(strings.TrimSpace(k))
			st[last] = strings.TrimSpace(v)
		}
	}
	flush(st)
	return out
}
