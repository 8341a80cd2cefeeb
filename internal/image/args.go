package image

import (
	"fmt"
	"net/url"
	"regexp"
	"strconv"
	"strings"

	"github.com/cloud-builder/cb/internal/mirror"
)

// ArgError is a build argument that is not on the allow-list or has an
// invalid value.
type ArgError struct {
	Arg    string // the argument as written in build_arguments
	Reason string
}

func (e *ArgError) Error() string {
	return fmt.Sprintf("build argument %q not allowed: %s", e.Arg, e.Reason)
}

// argKind says how the value of an allowed option is checked.
type argKind int

const (
	kindFlag    argKind = iota // no value
	kindPackage                // a package name
	kindRepo                   // a kiwi repository specification
	kindTag                    // a container tag
	kindLabel                  // a container label name=value
)

// allowedArgs are the `kiwi-ng system build` options a selection may pass.
// Everything else is refused, in particular the options cb-image sets
// itself (--description, --target-dir, --allow-existing-root: an image is
// always built from a clean root) and the options that name files on the
// runner (--signing-key, --set-repo-credentials, --add-repo-credentials,
// --set-container-derived-from): a source repository must not be able to
// read the runner's files into an image.
var allowedArgs = map[string]argKind{
	"--clear-cache":                 kindFlag,
	"--ignore-repos":                kindFlag,
	"--ignore-repos-used-for-build": kindFlag,
	"--set-repo":                    kindRepo,
	"--add-repo":                    kindRepo,
	"--add-package":                 kindPackage,
	"--add-bootstrap-package":       kindPackage,
	"--delete-package":              kindPackage,
	"--set-container-tag":           kindTag,
	"--add-container-label":         kindLabel,
}

// single are the options kiwi accepts at most once.
var single = map[string]bool{"--set-repo": true, "--set-container-tag": true}

var (
	// Debian and rpm package names; the first character is never '-', so
	// a name cannot turn into an option of apt or zypper.
	packageRe = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_+.:~-]{0,127}$`)
	tagRe     = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)
	labelRe   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_./-]{0,127}$`)
	aliasRe   = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$`)
	compRe    = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)
	distRe    = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_./-]{0,63}$`)
	// The placeholder may be followed by a path below the mirror.
	mirrorPathRe = regexp.MustCompile(`^(/[A-Za-z0-9_.~+-]+)*/?$`)
)

// ValidateBuildArgs checks the build_arguments of an image selection
// against the allow-list of kiwi-ng system build options. Options with a
// value must be written as one element, --option=value. The error is an
// *ArgError naming the first offending argument.
func ValidateBuildArgs(args []string) error {
	seen := map[string]bool{}
	for _, a := range args {
		if err := validateArg(a, seen); err != nil {
			return err
		}
	}
	return nil
}

func validateArg(a string, seen map[string]bool) error {
	bad := func(format string, v ...any) error { return &ArgError{Arg: a, Reason: fmt.Sprintf(format, v...)} }
	if strings.ContainsFunc(a, isControl) {
		return bad("contains a control character")
	}
	if !strings.HasPrefix(a, "--") {
		return bad("not an option; build arguments are kiwi-ng system build options such as --add-package=NAME")
	}
	name, value, hasValue := strings.Cut(a, "=")
	kind, ok := allowedArgs[name]
	if !ok {
		return bad("%s is not on the allow-list of kiwi build options", name)
	}
	if single[name] {
		if seen[name] {
			return bad("%s may be given only once", name)
		}
		seen[name] = true
	}
	if kind == kindFlag {
		if hasValue {
			return bad("%s takes no value", name)
		}
		return nil
	}
	if !hasValue || value == "" {
		return bad("%s needs a value, written as %s=VALUE in one argument", name, name)
	}
	switch kind {
	case kindPackage:
		if !packageRe.MatchString(value) {
			return bad("invalid package name %q", value)
		}
	case kindTag:
		if !tagRe.MatchString(value) {
			return bad("invalid container tag %q", value)
		}
	case kindLabel:
		k, v, ok := strings.Cut(value, "=")
		if !ok || !labelRe.MatchString(k) {
			return bad("container label must be NAME=VALUE with a name of letters, digits and _./-")
		}
		if len(v) > 1024 {
			return bad("container label value longer than 1024 bytes")
		}
	case kindRepo:
		if err := validateRepo(value); err != nil {
			return bad("%s", err)
		}
	}
	return nil
}

func isControl(r rune) bool { return r < ' ' || r == 0x7f }

// validateRepo checks a kiwi repository specification:
// source,type,alias,priority,imageinclude,package_gpgcheck,{signing_keys},components,distribution,repo_gpgcheck
// kiwi splits it at the first nine commas, so does this.
func validateRepo(spec string) error {
	f := strings.SplitN(spec, ",", 10)
	for len(f) < 10 {
		f = append(f, "")
	}
	if err := validateRepoSource(f[0]); err != nil {
		return err
	}
	switch f[1] {
	case "apt-deb", "rpm-md":
	case "":
		return fmt.Errorf("repository type missing (apt-deb or rpm-md)")
	default:
		return fmt.Errorf("repository type %q is not apt-deb or rpm-md", f[1])
	}
	if f[2] != "" && !aliasRe.MatchString(f[2]) {
		return fmt.Errorf("invalid repository alias %q", f[2])
	}
	if f[3] != "" {
		if _, err := strconv.ParseInt(f[3], 10, 16); err != nil {
			return fmt.Errorf("repository priority %q is not a number", f[3])
		}
	}
	for _, b := range []struct {
		i    int
		name string
	}{{4, "imageinclude"}, {5, "package_gpgcheck"}, {9, "repo_gpgcheck"}} {
		if v := f[b.i]; v != "" && v != "true" && v != "false" {
			return fmt.Errorf("repository %s %q is not true or false", b.name, v)
		}
	}
	if k := f[6]; k != "" && k != "{}" {
		return fmt.Errorf("repository signing keys name files on the runner; put <signing> into the description instead")
	}
	for _, c := range strings.Fields(f[7]) {
		if !compRe.MatchString(c) {
			return fmt.Errorf("invalid repository component %q", c)
		}
	}
	if d := f[8]; d != "" && (!distRe.MatchString(d) || strings.Contains(d, "..")) {
		return fmt.Errorf("invalid repository distribution %q", d)
	}
	return nil
}

// validateRepoSource accepts http and https URLs without credentials, and
// the Debian mirror placeholder, optionally followed by a path. Local
// sources (dir://, file://, iso://, plain paths) are refused: they would
// read the runner's file system into the image.
func validateRepoSource(s string) error {
	if rest, ok := strings.CutPrefix(s, mirror.Placeholder); ok {
		if !mirrorPathRe.MatchString(rest) || strings.Contains(rest, "..") {
			return fmt.Errorf("invalid path %q after %s", rest, mirror.Placeholder)
		}
		return nil
	}
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("repository source %q is not a URL", s)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("repository source %q must be an http or https URL or start with %s", s, mirror.Placeholder)
	}
	if u.Host == "" {
		return fmt.Errorf("repository source %q has no host", s)
	}
	if u.User != nil {
		return fmt.Errorf("repository source %q must not carry credentials", s)
	}
	if strings.ContainsAny(s, " {}") {
		return fmt.Errorf("repository source %q contains spaces or braces", s)
	}
	return nil
}

// expandBuildArgs replaces the mirror placeholder in validated build
// arguments with the runner's Debian mirror.
func expandBuildArgs(args []string) ([]string, error) {
	out := make([]string, len(args))
	var m string
	for i, a := range args {
		if strings.Contains(a, mirror.Placeholder) {
			if m == "" {
				var err error
				if m, err = mirror.Debian(); err != nil {
					return nil, fmt.Errorf("expand build argument %q: %w", a, err)
				}
			}
			a = strings.ReplaceAll(a, mirror.Placeholder, m)
		}
		out[i] = a
	}
	return out, nil
}
