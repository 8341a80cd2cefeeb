package repo

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/cloud-builder/cb/internal/atomicfile"
	"github.com/cloud-builder/cb/internal/message"
)

// Type is a repository format.
type Type string

// The repository formats the collector publishes.
const (
	RPM Type = "rpm"
	Deb Type = "deb"
)

// ParseType accepts "rpm" or "deb".
func ParseType(s string) (Type, error) {
	switch Type(s) {
	case RPM, Deb:
		return Type(s), nil
	}
	return "", fmt.Errorf("unknown repository type %q: want rpm or deb", s)
}

// Bookkeeping file names inside a repository directory. They start with a
// dot so the file server never serves them.
const (
	projectDir    = ".project"
	filesFile     = ".project/files"
	typeFile      = ".project/type"
	statusFile    = ".project/status"
	debIndexFile  = ".project/debindex.json"
	updateFile    = ".updaterepo"
	packagePrefix = ".package_"
)

// Errors of Install the upload endpoint maps to client errors.
var (
	// ErrTypeMismatch: the build's repository type differs from what the
	// repository already holds (rpm files cannot go into an apt repo).
	ErrTypeMismatch = errors.New("repository type mismatch")
	// ErrFileConflict: a file name already belongs to another package.
	ErrFileConflict = errors.New("file belongs to another package")
)

// File is one published package file.
type File struct {
	Name   string `yaml:"name" json:"name"` // repo-relative, "<arch dir>/<file>"
	Size   int64  `yaml:"size" json:"size"`
	SHA256 string `yaml:"sha256" json:"sha256"`
	// Uploaded is the SHA-256 the runner sent when the collector changed
	// the file (signed an rpm); it identifies a repeated delivery.
	Uploaded string `yaml:"uploaded_sha256,omitempty" json:"uploaded_sha256,omitempty"`
}

func (f File) uploaded() string {
	if f.Uploaded != "" {
		return f.Uploaded
	}
	return f.SHA256
}

// Build is the set of files one build of one package for one arch put into
// a repository; the newest build of a package/arch replaces the previous.
type Build struct {
	Project   string    `yaml:"project" json:"project"`
	Name      string    `yaml:"package" json:"package"`
	Arch      string    `yaml:"arch" json:"arch"`
	RequestID string    `yaml:"request_id" json:"request_id"`
	Published time.Time `yaml:"published" json:"published"`
	Files     []File    `yaml:"files" json:"files"`
}

func (b Build) sameContent(o Build) bool {
	return b.RequestID == o.RequestID && slices.EqualFunc(b.Files, o.Files, func(x, y File) bool {
		return x.Name == y.Name && x.uploaded() == y.uploaded()
	})
}

// Repository is one <project path>/<dist or selection> directory below the
// repo root. Methods that change it expect the caller to hold the
// repository's lock.
type Repository struct {
	Root string // repo root
	Path string // slash-separated, validated: projects/MS/TW
}

// Open validates path and returns the repository below root.
func Open(root, p string) (Repository, error) {
	if err := message.ValidateProject(p); err != nil {
		return Repository{}, fmt.Errorf("open repository: %w", err)
	}
	if strings.Count(p, "/") < 1 {
		return Repository{}, fmt.Errorf("open repository: %q has no dist element", p)
	}
	return Repository{Root: root, Path: p}, nil
}

// Dir is the repository's directory.
func (r Repository) Dir() string { return filepath.Join(r.Root, filepath.FromSlash(r.Path)) }

// Dist is the dist or selection the repository was built for.
func (r Repository) Dist() string { return path.Base(r.Path) }

func (r Repository) file(name string) string { return filepath.Join(r.Dir(), filepath.FromSlash(name)) }

// ValidateFileName checks a repo-relative package file name: exactly
// "<dir>/<file>", both plain names, the dir not one of the metadata
// directories and the file a package of type t.
func ValidateFileName(name string, t Type) error {
	dir, file, ok := strings.Cut(name, "/")
	if !ok || strings.Contains(file, "/") {
		return fmt.Errorf("file name %q: want <arch dir>/<file>", name)
	}
	for _, el := range []string{dir, file} {
		if err := message.ValidateName(el); err != nil {
			return fmt.Errorf("file name %q: %w", name, err)
		}
	}
	if dir == "repodata" || dir == "dists" {
		return fmt.Errorf("file name %q: %s is reserved for metadata", name, dir)
	}
	var exts []string
	switch t {
	case RPM:
		exts = []string{".rpm"}
	case Deb:
		exts = []string{".deb", ".udeb", ".ddeb"}
	default:
		return fmt.Errorf("file name %q: unknown repository type %q", name, t)
	}
	for _, e := range exts {
		if strings.HasSuffix(file, e) && len(file) > len(e) {
			return nil
		}
	}
	return fmt.Errorf("file name %q: not a %s package (want %s)", name, t, strings.Join(exts, " or "))
}

// Type is the repository's format, "" while it holds nothing.
func (r Repository) Type() (Type, error) {
	data, err := os.ReadFile(r.file(typeFile))
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read repository type: %w", err)
	}
	return ParseType(strings.TrimSpace(string(data)))
}

// Builds returns the bookkeeping of every package/arch in the repository.
func (r Repository) Builds() ([]Build, error) {
	data, err := os.ReadFile(r.file(filesFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", filesFile, err)
	}
	var builds []Build
	// Written as JSON (a YAML subset) because decoding it is fast enough
	// to do on every upload into a repository of thousands of packages;
	// YAML is still accepted for a hand-edited file.
	if jerr := json.Unmarshal(data, &builds); jerr != nil {
		builds = nil
		if err := yaml.Unmarshal(data, &builds); err != nil {
			return nil, fmt.Errorf("decode %s of %s: %w", filesFile, r.Path, err)
		}
	}
	return builds, nil
}

// Exists reports whether the repository has bookkeeping at all.
func (r Repository) Exists() bool {
	_, err := os.Stat(r.file(filesFile))
	return err == nil
}

func (r Repository) writeBuilds(builds []Build) error {
	slices.SortFunc(builds, func(a, b Build) int {
		return strings.Compare(a.Name+"\x00"+a.Arch, b.Name+"\x00"+b.Arch)
	})
	// One build per line: cheap to decode, and diff and grep still work.
	var buf bytes.Buffer
	buf.WriteString("[\n")
	for i, b := range builds {
		line, err := json.Marshal(b)
		if err != nil {
			return fmt.Errorf("encode %s: %w", filesFile, err)
		}
		buf.Write(line)
		if i < len(builds)-1 {
			buf.WriteByte(',')
		}
		buf.WriteByte('\n')
	}
	buf.WriteString("]\n")
	return atomicfile.WriteFile(r.file(filesFile), buf.Bytes(), 0o644)
}

// packageFile is the original per package/arch file list.
func (r Repository) packageFile(arch, name string) string {
	return r.file(packagePrefix + arch + "." + name)
}

func (r Repository) writePackageFile(b Build) error {
	names := make([]string, len(b.Files))
	for i, f := range b.Files {
		names[i] = f.Name
	}
	data, err := yaml.Marshal(names)
	if err != nil {
		return fmt.Errorf("encode package file list: %w", err)
	}
	return atomicfile.WriteFile(r.packageFile(b.Arch, b.Name), data, 0o644)
}

// Install moves the build's staged files (repo-relative name -> path of a
// verified file) into the repository, records them as the current build
// of b.Name for b.Arch, removes the files of the build it replaces and
// marks the repository for a metadata update. Delivering the same build
// again changes nothing and reports changed=false.
func (r Repository) Install(t Type, b Build, staged map[string]string) (changed bool, err error) {
	cur, err := r.Type()
	if err != nil {
		return false, err
	}
	if cur != "" && cur != t {
		return false, fmt.Errorf("%w: %s holds %s packages, build is %s", ErrTypeMismatch, r.Path, cur, t)
	}
	for _, f := range b.Files {
		if err := ValidateFileName(f.Name, t); err != nil {
			return false, err
		}
		if _, ok := staged[f.Name]; !ok {
			return false, fmt.Errorf("install %s: %s was not staged", b.Name, f.Name)
		}
	}
	builds, err := r.Builds()
	if err != nil {
		return false, err
	}
	var prev *Build
	for i := range builds {
		o := &builds[i]
		if o.Name == b.Name && o.Arch == b.Arch {
			prev = o
			continue
		}
		if o.Name == b.Name {
			continue // the other arch of the same package may share src files
		}
		for _, f := range b.Files {
			if slices.ContainsFunc(o.Files, func(g File) bool { return g.Name == f.Name }) {
				return false, fmt.Errorf("%w: %s is published by %s (%s)", ErrFileConflict, f.Name, o.Name, o.Arch)
			}
		}
	}
	if prev != nil && prev.sameContent(b) && r.filesPresent(*prev) {
		return false, nil
	}
	if err := os.MkdirAll(r.file(projectDir), 0o755); err != nil {
		return false, fmt.Errorf("install %s: %w", b.Name, err)
	}
	if cur == "" {
		if err := atomicfile.WriteFile(r.file(typeFile), []byte(string(t)+"\n"), 0o644); err != nil {
			return false, fmt.Errorf("install %s: %w", b.Name, err)
		}
	}
	for _, f := range b.Files {
		if err := moveInto(staged[f.Name], r.file(f.Name)); err != nil {
			return false, fmt.Errorf("install %s: %w", b.Name, err)
		}
	}
	var old []File
	if prev != nil {
		old = prev.Files
		*prev = b
	} else {
		builds = append(builds, b)
	}
	if err := r.writeBuilds(builds); err != nil {
		return false, err
	}
	if err := r.writePackageFile(b); err != nil {
		return false, err
	}
	if err := r.removeUnreferenced(old, builds); err != nil {
		return false, err
	}
	return true, r.MarkDirty(t)
}

func (r Repository) filesPresent(b Build) bool {
	for _, f := range b.Files {
		st, err := os.Stat(r.file(f.Name))
		if err != nil || st.Size() != f.Size {
			return false
		}
	}
	return true
}

// removeUnreferenced deletes those of files that no build references.
func (r Repository) removeUnreferenced(files []File, builds []Build) error {
	used := map[string]bool{}
	for _, b := range builds {
		for _, f := range b.Files {
			used[f.Name] = true
		}
	}
	for _, f := range files {
		if used[f.Name] {
			continue
		}
		if err := os.Remove(r.file(f.Name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("remove %s: %w", f.Name, err)
		}
	}
	return nil
}

// Remove drops the builds of package name for arch (every arch when arch
// is empty) with their files, and marks the repository for an update.
func (r Repository) Remove(name, arch string) (removed bool, err error) {
	builds, err := r.Builds()
	if err != nil {
		return false, err
	}
	var keep []Build
	var gone []File
	for _, b := range builds {
		if b.Name == name && (arch == "" || b.Arch == arch) {
			gone = append(gone, b.Files...)
			if err := os.Remove(r.packageFile(b.Arch, b.Name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return false, fmt.Errorf("remove %s: %w", name, err)
			}
			removed = true
			continue
		}
		keep = append(keep, b)
	}
	if !removed {
		return false, nil
	}
	if err := r.writeBuilds(keep); err != nil {
		return false, err
	}
	if err := r.removeUnreferenced(gone, keep); err != nil {
		return false, err
	}
	t, err := r.Type()
	if err != nil {
		return true, err
	}
	return true, r.MarkDirty(t)
}

// SweepOrphans deletes package files and interrupted transfers in the
// repository's arch directories that no build references: what a crash
// between moving files in and recording them leaves behind.
func (r Repository) SweepOrphans() ([]string, error) {
	builds, err := r.Builds()
	if err != nil {
		return nil, err
	}
	used := map[string]bool{}
	for _, b := range builds {
		for _, f := range b.Files {
			used[f.Name] = true
		}
	}
	dirs, err := os.ReadDir(r.Dir())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil // removed with its last package meanwhile
	}
	if err != nil {
		return nil, fmt.Errorf("sweep %s: %w", r.Path, err)
	}
	var removed []string
	for _, d := range dirs {
		// Metadata a crash left half-built; under the lock none is in use.
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".repodata-") || strings.HasPrefix(d.Name(), ".dists-")) {
			if err := os.RemoveAll(filepath.Join(r.Dir(), d.Name())); err != nil {
				return removed, fmt.Errorf("sweep %s: %w", r.Path, err)
			}
			continue
		}
		if !d.IsDir() || strings.HasPrefix(d.Name(), ".") || d.Name() == "repodata" || d.Name() == "dists" {
			continue
		}
		files, err := os.ReadDir(filepath.Join(r.Dir(), d.Name()))
		if err != nil {
			return removed, fmt.Errorf("sweep %s: %w", r.Path, err)
		}
		for _, f := range files {
			name := d.Name() + "/" + f.Name()
			if f.IsDir() || used[name] {
				continue
			}
			isPkg := false
			for _, e := range []string{".rpm", ".deb", ".udeb", ".ddeb", incomingSuffix} {
				isPkg = isPkg || strings.HasSuffix(f.Name(), e)
			}
			if !isPkg {
				continue
			}
			if err := os.Remove(r.file(name)); err != nil {
				return removed, fmt.Errorf("sweep %s: %w", r.Path, err)
			}
			removed = append(removed, name)
		}
		_ = os.Remove(filepath.Join(r.Dir(), d.Name())) // only succeeds when empty
	}
	return removed, nil
}

// MarkDirty writes .updaterepo: the repository's metadata no longer
// matches its files. It is removed once metadata is published, so a crash
// in between is repaired on the next start.
func (r Repository) MarkDirty(t Type) error {
	if err := atomicfile.WriteFile(r.file(updateFile), []byte(string(t)+"\n"), 0o644); err != nil {
		return fmt.Errorf("mark %s for update: %w", r.Path, err)
	}
	return nil
}

// Dirty reports whether the repository waits for a metadata update.
func (r Repository) Dirty() bool {
	_, err := os.Stat(r.file(updateFile))
	return err == nil
}

func (r Repository) clearDirty() error {
	if err := os.Remove(r.file(updateFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("clear update mark of %s: %w", r.Path, err)
	}
	return nil
}

// Status is what the collector remembers about a repository's last
// metadata update.
type Status struct {
	LastUpdate time.Time `yaml:"last_update" json:"last_update"`
	LastError  string    `yaml:"last_error" json:"last_error"`
}

// ReadStatus returns the recorded status (zero when never published).
func (r Repository) ReadStatus() (Status, error) {
	var s Status
	data, err := os.ReadFile(r.file(statusFile))
	if errors.Is(err, fs.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return s, fmt.Errorf("read status of %s: %w", r.Path, err)
	}
	if err := yaml.Unmarshal(data, &s); err != nil {
		return s, fmt.Errorf("decode status of %s: %w", r.Path, err)
	}
	return s, nil
}

// WriteStatus records s. A repository that was removed keeps no status.
func (r Repository) WriteStatus(s Status) error {
	if _, err := os.Stat(r.file(projectDir)); err != nil {
		return nil
	}
	data, err := yaml.Marshal(s)
	if err != nil {
		return fmt.Errorf("encode status: %w", err)
	}
	return atomicfile.WriteFile(r.file(statusFile), data, 0o644)
}

// Discover lists the repositories below root's projects/ directory: every
// directory with bookkeeping.
func Discover(root string) ([]Repository, error) {
	var repos []Repository
	base := filepath.Join(root, "projects")
	err := filepath.WalkDir(base, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == base && errors.Is(err, fs.ErrNotExist) {
				return fs.SkipAll
			}
			return err
		}
		if !d.IsDir() {
			return nil
		}
		name := d.Name()
		if p != base && (strings.HasPrefix(name, ".") || name == "repodata" || name == "dists") {
			return fs.SkipDir
		}
		if _, err := os.Stat(filepath.Join(p, filepath.FromSlash(filesFile))); err == nil {
			rel, err := filepath.Rel(root, p)
			if err != nil {
				return err
			}
			r, err := Open(root, filepath.ToSlash(rel))
			if err != nil {
				return nil // not a name the collector could have made
			}
			repos = append(repos, r)
		}
		return nil
	})
	if err != nil {
		return repos, fmt.Errorf("discover repositories: %w", err)
	}
	return repos, nil
}

const incomingSuffix = ".incoming"

// moveInto puts src at dst atomically: a rename when both are on one file
// system, else a copy to a temporary name next to dst and a rename.
func moveInto(src, dst string) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	if err := os.Rename(src, dst); err == nil {
		return nil
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	// Hidden until complete, so the file server never shows half a file.
	tmp := filepath.Join(filepath.Dir(dst), "."+filepath.Base(dst)+incomingSuffix)
	out, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		os.Remove(tmp)
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		os.Remove(tmp)
		return err
	}
	if err := out.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, dst); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Remove(src)
}
