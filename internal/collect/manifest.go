package collect

import (
	"bytes"
	"errors"
	"fmt"
	"path"
	"regexp"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/cloud-builder/cb/internal/message"
	"github.com/cloud-builder/cb/internal/repo"
)

// ManifestName is the first entry of every upload stream.
const ManifestName = "manifest.yml"

// Limits of one upload.
const (
	maxManifestSize = 1 << 20
	maxFiles        = 1000
)

// ManifestVersion is the version of the upload manifest format.
const ManifestVersion = 1

// ManifestFile is one file of an upload, with what the receiver must find.
type ManifestFile struct {
	Name   string `yaml:"name"` // repo-relative: "<arch dir>/<file>"
	Size   int64  `yaml:"size"`
	SHA256 string `yaml:"sha256"`
}

// Manifest describes one build's upload.
type Manifest struct {
	Version   int            `yaml:"version"`
	RequestID string         `yaml:"request_id"`
	Project   string         `yaml:"project"`
	Name      string         `yaml:"name"`
	RepoPath  string         `yaml:"repo_path"`
	Arch      string         `yaml:"arch"`
	RepoType  string         `yaml:"repo_type"`
	Files     []ManifestFile `yaml:"files"`
}

var sha256RE = regexp.MustCompile(`^[0-9a-f]{64}$`)

// errInvalidManifest marks upload errors that are the client's fault.
var errInvalidManifest = errors.New("invalid upload")

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errInvalidManifest, fmt.Sprintf(format, args...))
}

// decodeManifest decodes strictly: an unknown key means a client speaking
// another protocol version, which must not be half understood.
func decodeManifest(data []byte) (*Manifest, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var m Manifest
	if err := dec.Decode(&m); err != nil {
		return nil, invalid("manifest: %v", err)
	}
	return &m, m.validate(-1)
}

// validate checks every field that will reach a path. maxSize < 0 means no
// size bound.
func (m *Manifest) validate(maxSize int64) error {
	if m.Version != ManifestVersion {
		return invalid("manifest version %d, want %d", m.Version, ManifestVersion)
	}
	if err := message.ValidateName(m.RequestID); err != nil {
		return invalid("request_id: %v", err)
	}
	if err := message.ValidateProject(m.Project); err != nil {
		return invalid("project: %v", err)
	}
	if err := message.ValidateName(m.Name); err != nil {
		return invalid("name: %v", err)
	}
	if path.Base(m.Project) != m.Name {
		return invalid("name %q is not the last element of project %q", m.Name, m.Project)
	}
	if err := message.ValidateProject(m.RepoPath); err != nil {
		return invalid("repo_path: %v", err)
	}
	// The repository of a package is its project's parent plus the dist
	// (SPEC §6); anything else would let one project write into another's
	// repository.
	if path.Dir(m.RepoPath) != path.Dir(m.Project) {
		return invalid("repo_path %q is not <project parent>/<dist> of %q", m.RepoPath, m.Project)
	}
	if err := message.ValidateName(m.Arch); err != nil || strings.Contains(m.Arch, ".") {
		return invalid("arch %q: want a machine name without dots", m.Arch)
	}
	t, err := repo.ParseType(m.RepoType)
	if err != nil {
		return invalid("repo_type: %v", err)
	}
	if len(m.Files) == 0 || len(m.Files) > maxFiles {
		return invalid("%d files, want 1 to %d", len(m.Files), maxFiles)
	}
	seen := map[string]bool{}
	var total int64
	for _, f := range m.Files {
		if err := repo.ValidateFileName(f.Name, t); err != nil {
			return invalid("%v", err)
		}
		if seen[f.Name] {
			return invalid("file %s listed twice", f.Name)
		}
		seen[f.Name] = true
		if !sha256RE.MatchString(f.SHA256) {
			return invalid("file %s: sha256 %q is not 64 lowercase hex digits", f.Name, f.SHA256)
		}
		if f.Size < 0 {
			return invalid("file %s: negative size", f.Name)
		}
		total += f.Size
		if maxSize >= 0 && (f.Size > maxSize || total > maxSize) {
			return invalid("upload of %d bytes exceeds the limit of %d", total, maxSize)
		}
	}
	return nil
}

func (m *Manifest) encode() ([]byte, error) {
	return yaml.Marshal(m)
}

// build is the bookkeeping record of the upload; changed holds the files
// the collector rewrote (signed rpms) with their new size and sum.
func (m *Manifest) build(changed map[string]repo.File) repo.Build {
	b := repo.Build{Project: m.Project, Name: m.Name, Arch: m.Arch, RequestID: m.RequestID}
	for _, f := range m.Files {
		rf := repo.File{Name: f.Name, Size: f.Size, SHA256: f.SHA256}
		if c, ok := changed[f.Name]; ok {
			rf.Size, rf.SHA256, rf.Uploaded = c.Size, c.SHA256, f.SHA256
		}
		b.Files = append(b.Files, rf)
	}
	return b
}
