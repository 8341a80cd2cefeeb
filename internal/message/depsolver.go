package message

import (
	"fmt"
	"slices"
)

// DepsolverFile is the per-package dependency settings file. It is a file
// of its own (not a key of cloud_builder.yml) because the original
// services validate cloud_builder.yml strictly and would refuse the
// package.
const DepsolverFile = ".cb/depsolver.yml"

// Cascade modes of DepsolverConfig.
const (
	CascadeTransitive = "transitive"
	CascadeDirect     = "direct"
	CascadeLocal      = "local"
)

// DepsolverConfig is a decoded .cb/depsolver.yml:
//
//	cascade: transitive       # transitive (default), direct or local
//	project_repository: true  # false: no own repository in the buildroot
//	repositories:             # more repositories of the same collector
//	  - projects/Other/bookworm
type DepsolverConfig struct {
	Cascade           string   `yaml:"cascade" json:"cascade"`
	ProjectRepository bool     `yaml:"project_repository" json:"project_repository"`
	Repositories      []string `yaml:"repositories,omitempty" json:"repositories,omitempty"`
}

// DefaultDepsolverConfig applies when a package has no depsolver.yml.
func DefaultDepsolverConfig() *DepsolverConfig {
	return &DepsolverConfig{Cascade: CascadeTransitive, ProjectRepository: true}
}

// DecodeDepsolverConfig decodes and validates depsolver.yml content.
// Unknown keys are errors: a misspelt key must not silently change what
// is rebuilt.
func DecodeDepsolverConfig(data []byte) (*DepsolverConfig, error) {
	c := DefaultDepsolverConfig()
	f, err := parseMap(data)
	if err != nil {
		return nil, err
	}
	for k := range f {
		if !slices.Contains([]string{"cascade", "project_repository", "repositories"}, k) {
			return nil, &FieldError{k, "unknown key"}
		}
	}
	if v, err := f.str("", "cascade", false); err != nil {
		return nil, err
	} else if v != "" {
		c.Cascade = v
	}
	switch c.Cascade {
	case CascadeTransitive, CascadeDirect, CascadeLocal:
	default:
		return nil, &FieldError{"cascade", fmt.Sprintf("must be %s, %s or %s, got %q", CascadeTransitive, CascadeDirect, CascadeLocal, c.Cascade)}
	}
	if _, ok := f["project_repository"]; ok {
		if c.ProjectRepository, err = f.boolean("", "project_repository"); err != nil {
			return nil, err
		}
	}
	if c.Repositories, err = f.strings("", "repositories"); err != nil {
		return nil, err
	}
	for i, r := range c.Repositories {
		if err := ValidateProject(r); err != nil {
			return nil, &FieldError{fmt.Sprintf("repositories[%d]", i), err.Error()}
		}
	}
	return c, nil
}
