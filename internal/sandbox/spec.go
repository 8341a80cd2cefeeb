package sandbox

import (
	"fmt"
	"path/filepath"
	"strings"
)

// check validates the spec and turns it into what the init process gets.
// Paths end up in overlay mount options, where ',' separates options and
// ':' separates lower layers, so those characters are refused rather than
// escaped.
func (s *Spec) check() (*childSpec, error) {
	if len(s.Argv) == 0 || s.Argv[0] == "" {
		return nil, fmt.Errorf("sandbox spec: empty argv")
	}
	if err := checkPath("root", s.Root, ":,"); err != nil {
		return nil, err
	}
	dir := s.Dir
	if dir == "" {
		dir = "/"
	}
	if !filepath.IsAbs(dir) {
		return nil, fmt.Errorf("sandbox spec: dir %q is not absolute", dir)
	}
	if s.Lower != "" {
		for _, l := range strings.Split(s.Lower, ":") {
			if err := checkPath("lower layer", l, ","); err != nil {
				return nil, err
			}
		}
		if err := checkPath("upper layer", s.Upper, ":,"); err != nil {
			return nil, err
		}
		if err := checkPath("overlay workdir", s.Work, ":,"); err != nil {
			return nil, err
		}
	}
	for _, e := range s.Env {
		if !strings.Contains(e, "=") || strings.ContainsRune(e, 0) {
			return nil, fmt.Errorf("sandbox spec: malformed environment entry %q", e)
		}
	}
	for _, a := range s.Argv {
		if strings.ContainsRune(a, 0) {
			return nil, fmt.Errorf("sandbox spec: argument contains NUL")
		}
	}
	ids := s.IDs
	if ids == (IDMap{}) {
		ids = DefaultIDs
	}
	if !s.HostRoot {
		if err := ids.Validate(); err != nil {
			return nil, fmt.Errorf("sandbox spec: %w", err)
		}
	}
	if s.MaxWrite < 0 || s.IdleTimeout < 0 {
		return nil, fmt.Errorf("sandbox spec: negative limit")
	}
	if err := s.Limits.Validate(); err != nil {
		return nil, fmt.Errorf("sandbox spec: %w", err)
	}
	host := s.Hostname
	if host == "" {
		host = "cb-build"
	}
	return &childSpec{
		Lower: s.Lower, Upper: s.Upper, Work: s.Work, Root: filepath.Clean(s.Root),
		Dir: filepath.Clean(dir), Argv: s.Argv, Env: s.Env,
		Network: s.Network, PrivateTmp: s.PrivateTmp, Hostname: host,
		HostRoot: s.HostRoot, IDs: ids, MaxWrite: s.MaxWrite,
	}, nil
}

func checkPath(what, p, forbidden string) error {
	switch {
	case p == "":
		return fmt.Errorf("sandbox spec: %s is empty", what)
	case !filepath.IsAbs(p):
		return fmt.Errorf("sandbox spec: %s %q is not absolute", what, p)
	case strings.ContainsAny(p, forbidden+"\\\x00\n"):
		return fmt.Errorf("sandbox spec: %s %q contains a character overlayfs cannot take", what, p)
	case filepath.Clean(p) == "/":
		return fmt.Errorf("sandbox spec: %s must not be the host root", what)
	}
	return nil
}
