package config

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
)

// Settings are the shell-style KEY=value service settings of
// /etc/cloud_builder (CB_PROJECT, CB_BRANCH, CB_UPDATE, CB_BUILD_LIMIT, …).
// They are parsed, never sourced by a shell: values may be quoted with
// single or double quotes; nothing is expanded.
type Settings map[string]string

var settingRE = regexp.MustCompile(`^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$`)

// LoadSettings parses settings.
func LoadSettings(r io.Reader) (Settings, error) {
	s := Settings{}
	sc := bufio.NewScanner(r)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		m := settingRE.FindStringSubmatch(line)
		if m == nil {
			return nil, fmt.Errorf("line %d: want KEY=value", n)
		}
		v := strings.TrimSpace(m[2])
		if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') {
			if v[len(v)-1] != v[0] {
				return nil, fmt.Errorf("line %d: %s: unterminated quote", n, m[1])
			}
			v = v[1 : len(v)-1]
		} else if i := strings.Index(v, " #"); i >= 0 {
			v = strings.TrimSpace(v[:i])
		}
		s[m[1]] = v
	}
	return s, sc.Err()
}

// LoadSettingsFile reads path; a missing file yields no settings.
func LoadSettingsFile(path string) (Settings, error) {
	s, err := loadFile(path, LoadSettings)
	if errors.Is(err, os.ErrNotExist) {
		return Settings{}, nil
	}
	return s, err
}
