package buildroot

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
)

// Source kinds a package directory can hold.
const (
	KindDebian = "debian" // debian/ tree
	KindDsc    = "dsc"    // Debian source package (.dsc + tarballs)
	KindSpec   = "spec"   // rpm .spec
)

// debNameRE is Debian policy 5.6.1 for package names.
var debNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9+.-]+$`)

// SourceKind tells what a package directory holds, in the order the build
// engines prefer: a debian/ tree, then a .dsc, then an rpm .spec.
func SourceKind(pkgDir string) (string, error) {
	if fi, err := os.Lstat(filepath.Join(pkgDir, "debian", "control")); err == nil && fi.Mode().IsRegular() {
		return KindDebian, nil
	}
	for _, k := range []struct{ kind, glob string }{{KindDsc, "*.dsc"}, {KindSpec, "*.spec"}} {
		m, err := filepath.Glob(filepath.Join(pkgDir, k.glob))
		if err != nil {
			return "", err
		}
		if len(m) > 0 {
			return k.kind, nil
		}
	}
	return "", fmt.Errorf("%s holds neither debian/control, a .dsc nor a .spec", pkgDir)
}

// BuildDeps returns the build dependencies to install into the buildroot
// for a Debian source (debian/control or .dsc) built for arch (uname -m
// spelling), plus build-essential, which Debian sources never list. For an
// rpm .spec it returns nothing: BuildRequires name rpm packages that a
// Debian buildroot cannot install, so the spec's buildroot must list what
// it needs in build_root.kiwi.
func BuildDeps(pkgDir, arch string) ([]string, error) {
	kind, err := SourceKind(pkgDir)
	if err != nil {
		return nil, err
	}
	var file string
	switch kind {
	case KindDebian:
		file = filepath.Join("debian", "control")
	case KindDsc:
		m, _ := filepath.Glob(filepath.Join(pkgDir, "*.dsc"))
		sort.Strings(m)
		file = filepath.Base(m[0])
	default:
		return nil, nil
	}
	data, err := readInside(pkgDir, file, maxDescription)
	if err != nil {
		return nil, fmt.Errorf("read build dependencies: %w", err)
	}
	deps, err := ParseBuildDepends(data, DebianArch(arch))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	if !slices.Contains(deps, "build-essential") {
		deps = append(deps, "build-essential")
		sort.Strings(deps)
	}
	return deps, nil
}

// DebianArch maps a uname -m machine name to the Debian architecture.
func DebianArch(machine string) string {
	switch machine {
	case "x86_64":
		return "amd64"
	case "aarch64":
		return "arm64"
	case "i386", "i486", "i586", "i686":
		return "i386"
	case "ppc64le":
		return "ppc64el"
	case "armv7l", "armv7hl":
		return "armhf"
	}
	return machine
}

// ParseBuildDepends reads Build-Depends, Build-Depends-Arch and
// Build-Depends-Indep from the first paragraph of a debian/control or a
// .dsc (a PGP clearsigned .dsc is accepted) and returns the sorted,
// de-duplicated package names that apply to debArch with no build profile
// active. Of alternatives ("a | b") the first applicable one is taken, as
// sbuild does; version constraints and :any/:native qualifiers are dropped.
func ParseBuildDepends(data []byte, debArch string) ([]string, error) {
	fields := firstParagraph(data)
	var out []string
	for _, f := range []string{"build-depends", "build-depends-arch", "build-depends-indep"} {
		for _, clause := range strings.Split(fields[f], ",") {
			if strings.TrimSpace(clause) == "" {
				continue
			}
			name, ok, err := pickAlternative(clause, debArch)
			if err != nil {
				return nil, err
			}
			if ok && !slices.Contains(out, name) {
				out = append(out, name)
			}
		}
	}
	sort.Strings(out)
	return out, nil
}

func firstParagraph(data []byte) map[string]string {
	fields := map[string]string{}
	last := ""
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64*1024), maxDescription)
	started := false
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "-----BEGIN PGP SIGNED MESSAGE") {
			// Skip the armor header block up to its blank line.
			for sc.Scan() && strings.TrimSpace(sc.Text()) != "" {
			}
			continue
		}
		if strings.HasPrefix(line, "-----BEGIN PGP SIGNATURE") {
			break
		}
		switch {
		case strings.TrimSpace(line) == "":
			if started {
				return fields
			}
		case strings.HasPrefix(line, "#"):
		case line[0] == ' ' || line[0] == '\t':
			if last != "" {
				fields[last] += " " + strings.TrimSpace(line)
			}
		default:
			k, v, ok := strings.Cut(line, ":")
			if !ok {
				continue
			}
			started = true
			last = strings.ToLower(strings.TrimSpace(k))
			fields[last] = strings.TrimSpace(v)
		}
	}
	return fields
}

// pickAlternative returns the first alternative of clause that applies.
func pickAlternative(clause, debArch string) (string, bool, error) {
	for _, alt := range strings.Split(clause, "|") {
		name, archs, profiles, err := splitRelation(strings.TrimSpace(alt))
		if err != nil {
			return "", false, fmt.Errorf("build dependency %q: %w", strings.TrimSpace(clause), err)
		}
		if !archApplies(archs, debArch) || !profilesApply(profiles) {
			continue
		}
		return name, true, nil
	}
	return "", false, nil
}

// splitRelation splits "name:any (>= 1) [amd64 !i386] <!nocheck> <stage1>".
func splitRelation(rel string) (name string, archs []string, profiles [][]string, err error) {
	rest := rel
	end := strings.IndexAny(rest, " \t([<")
	if end < 0 {
		end = len(rest)
	}
	name, rest = rest[:end], rest[end:]
	if i := strings.IndexByte(name, ':'); i >= 0 {
		if q := name[i+1:]; q != "any" && q != "native" {
			return "", nil, nil, fmt.Errorf("unsupported architecture qualifier %q", q)
		}
		name = name[:i]
	}
	if !debNameRE.MatchString(name) {
		return "", nil, nil, fmt.Errorf("invalid package name %q", name)
	}
	for {
		rest = strings.TrimSpace(rest)
		if rest == "" {
			return name, archs, profiles, nil
		}
		closer := map[byte]byte{'(': ')', '[': ']', '<': '>'}[rest[0]]
		if closer == 0 {
			return "", nil, nil, fmt.Errorf("unexpected %q", rest)
		}
		j := strings.IndexByte(rest, closer)
		if j < 0 {
			return "", nil, nil, fmt.Errorf("missing %q", string(closer))
		}
		inner := strings.Fields(rest[1:j])
		switch rest[0] {
		case '[':
			archs = append(archs, inner...)
		case '<':
			profiles = append(profiles, inner)
		}
		rest = rest[j+1:]
	}
}

// archApplies evaluates an architecture restriction list: either all
// entries are positive (any must match) or all negated (none may match).
func archApplies(archs []string, debArch string) bool {
	if len(archs) == 0 {
		return true
	}
	negated := strings.HasPrefix(archs[0], "!")
	for _, a := range archs {
		if archWildcard(strings.TrimPrefix(a, "!"), debArch) {
			return !negated
		}
	}
	return negated
}

func archWildcard(pattern, arch string) bool {
	switch pattern {
	case arch, "any", "linux-any", "any-" + arch, "linux-" + arch:
		return true
	}
	return false
}

// profilesApply evaluates build profile restriction formulas with no
// profile active: a formula holds when all its terms are negated, and
// the clause applies when any formula holds.
func profilesApply(formulas [][]string) bool {
	if len(formulas) == 0 {
		return true
	}
	for _, f := range formulas {
		holds := true
		for _, term := range f {
			if !strings.HasPrefix(term, "!") {
				holds = false
			}
		}
		if holds {
			return true
		}
	}
	return false
}
