package message

import (
	"errors"
	"fmt"
	"path"
	"regexp"
	"strings"
	"unicode"
)

// ErrInvalidProject is wrapped by ValidateProject errors.
var ErrInvalidProject = errors.New("invalid project")

// ValidateProject checks a project string from the wire or a repo: a clean
// relative path below projects/, without "..", control characters or
// characters a shell or path would treat specially.
func ValidateProject(p string) error {
	switch {
	case p == "":
		return fmt.Errorf("%w: empty", ErrInvalidProject)
	case len(p) > 1024:
		return fmt.Errorf("%w: longer than 1024 bytes", ErrInvalidProject)
	case strings.HasPrefix(p, "/"):
		return fmt.Errorf("%w: %q is absolute", ErrInvalidProject, p)
	case !strings.HasPrefix(p, "projects/") || len(p) == len("projects/"):
		return fmt.Errorf("%w: %q does not start with projects/", ErrInvalidProject, p)
	}
	for _, r := range p {
		if unicode.IsControl(r) || r == '\\' {
			return fmt.Errorf("%w: %q contains a control character or backslash", ErrInvalidProject, p)
		}
	}
	for _, el := range strings.Split(p, "/") {
		if el == "" || el == "." || el == ".." {
			return fmt.Errorf("%w: %q has an empty, . or .. element", ErrInvalidProject, p)
		}
		if err := ValidateName(el); err != nil {
			return fmt.Errorf("%w: %q: %w", ErrInvalidProject, p, err)
		}
	}
	if path.Clean(p) != p {
		return fmt.Errorf("%w: %q is not a clean path", ErrInvalidProject, p)
	}
	return nil
}

// nameRE is what package, image, dist, selection and arch names may contain:
// enough for every real distribution label and package name, nothing that
// changes the meaning of a path or an argument.
var nameRE = regexp.MustCompile(`^[A-Za-z0-9_+][A-Za-z0-9._+~:-]{0,127}$`)

// ValidateName checks one path element or label (package name, dist,
// selection, arch, runner group).
func ValidateName(s string) error {
	if !nameRE.MatchString(s) || s == "." || s == ".." {
		return fmt.Errorf("invalid name %q: want letters, digits and ._+~:- (not first), at most 128", s)
	}
	return nil
}

func validateNameField(field, s string) error {
	if err := ValidateName(s); err != nil {
		return &FieldError{field, err.Error()}
	}
	return nil
}
