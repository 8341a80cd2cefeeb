package buildroot

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
)

// Spec is what a .spec says about the packages it builds and the ones its
// build needs.
type Spec struct {
	// Packages are the binary packages it declares, the main one first.
	Packages []SpecPackage
	// BuildRequires are its build requirements, in the order written.
	BuildRequires []RPMRelation
}

// SpecPackage is one binary package of a spec.
type SpecPackage struct {
	Name     string
	Provides []string
}

// RPMRelation is one rpm dependency: a name, optionally with a version
// relation (Op one of <, <=, =, ==, >=, >).
type RPMRelation struct {
	Name    string
	Op      string
	Version string
}

func (r RPMRelation) String() string {
	if r.Op == "" {
		return r.Name
	}
	return r.Name + " " + r.Op + " " + r.Version
}

// ParseSpec reads Name, %package, Provides and BuildRequires of a spec.
// The spec is not run through rpmspec or rpm --eval: rpm evaluates %(…)
// shell macros while parsing, and the sources are untrusted. Simple
// %define/%global macros and %{name}/%{version} are expanded; conditionals
// are not evaluated, so every BuildRequires counts, and names left with an
// unexpanded macro or rich dependencies ("(a or b)") are skipped.
func ParseSpec(data []byte) (*Spec, error) {
	spec := &Spec{}
	macros := map[string]string{}
	expand := func(s string) string {
		for i := 0; i < 5 && strings.Contains(s, "%"); i++ {
			s = specMacroRE.ReplaceAllStringFunc(s, func(m string) string {
				name := strings.Trim(m, "%{}?")
				if v, ok := macros[name]; ok {
					return v
				}
				if strings.HasPrefix(m, "%{?") {
					return ""
				}
				return m
			})
		}
		return s
	}
	current := -1
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64*1024), maxDescription)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if f := strings.Fields(line); len(f) >= 3 && (f[0] == "%define" || f[0] == "%global") {
			macros[f[1]] = expand(strings.Join(f[2:], " "))
			continue
		}
		if strings.HasPrefix(line, "%package") {
			f := strings.Fields(expand(line))
			name := ""
			switch {
			case len(f) >= 3 && f[1] == "-n":
				name = f[2]
			case len(f) >= 2:
				name = macros["name"] + "-" + f[1]
			}
			if name != "" {
				spec.Packages = append(spec.Packages, SpecPackage{Name: name})
				current = len(spec.Packages) - 1
			}
			continue
		}
		if strings.HasPrefix(line, "%") && !strings.HasPrefix(line, "%{") {
			// Another section (%description, %prep, …): no more tags of
			// the current package.
			if strings.HasPrefix(line, "%description") || strings.HasPrefix(line, "%files") {
				current = -1
			}
			continue
		}
		key, val, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		key = strings.ToLower(strings.TrimSpace(key))
		val = expand(strings.TrimSpace(val))
		switch {
		case key == "name" && len(spec.Packages) == 0:
			macros["name"] = val
			spec.Packages = append(spec.Packages, SpecPackage{Name: val})
			current = 0
		case key == "version":
			if _, ok := macros["version"]; !ok {
				macros["version"] = val
			}
		case key == "release":
			if _, ok := macros["release"]; !ok {
				macros["release"] = val
			}
		case key == "provides" && current >= 0:
			for _, r := range ParseRPMRelations(val) {
				spec.Packages[current].Provides = append(spec.Packages[current].Provides, r.Name)
			}
		case key == "buildrequires":
			spec.BuildRequires = append(spec.BuildRequires, ParseRPMRelations(val)...)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(spec.Packages) == 0 {
		return nil, errors.New("no Name:")
	}
	return spec, nil
}

var specMacroRE = regexp.MustCompile(`%\{\??[A-Za-z_][A-Za-z0-9_]*\}|%[A-Za-z_][A-Za-z0-9_]*`)

// ParseRPMRelations splits "a >= 1.0, b c (d)" into relations; rich
// dependencies and unexpanded macros are not names and are skipped.
func ParseRPMRelations(s string) []RPMRelation {
	f := strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' })
	var out []RPMRelation
	depth := 0 // inside a rich dependency "(a or b)"
	for i := 0; i < len(f); i++ {
		tok := f[i]
		if depth > 0 || strings.HasPrefix(tok, "(") {
			depth += strings.Count(tok, "(") - strings.Count(tok, ")")
			continue
		}
		if strings.HasPrefix(tok, "%") {
			continue
		}
		r := RPMRelation{Name: tok}
		if i+2 < len(f) && slices.Contains([]string{"<", "<=", "=", "==", ">=", ">"}, f[i+1]) {
			r.Op, r.Version = f[i+1], f[i+2]
			i += 2
		}
		out = append(out, r)
	}
	return out
}

// SpecFile returns the .spec of a package directory the build uses (the
// first by name), or "" when it has none.
func SpecFile(pkgDir string) (string, error) {
	m, err := filepath.Glob(filepath.Join(pkgDir, "*.spec"))
	if err != nil || len(m) == 0 {
		return "", err
	}
	sort.Strings(m)
	return filepath.Base(m[0]), nil
}

// SpecBuildRequires reads the BuildRequires of the package's .spec.
func SpecBuildRequires(pkgDir string) ([]RPMRelation, error) {
	name, err := SpecFile(pkgDir)
	if err != nil {
		return nil, err
	}
	if name == "" {
		return nil, fmt.Errorf("%s holds no .spec", pkgDir)
	}
	data, err := readInside(pkgDir, name, maxDescription)
	if err != nil {
		return nil, err
	}
	spec, err := ParseSpec(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return spec.BuildRequires, nil
}
