package message

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// MetadataFile is the per-package metadata path inside a package directory.
const MetadataFile = ".cb/cloud_builder.yml"

// Distribution is one package target of cloud_builder.yml.
type Distribution struct {
	Arch        string `yaml:"arch" json:"arch"`
	Dist        string `yaml:"dist" json:"dist"`
	RunnerGroup string `yaml:"runner_group" json:"runner_group"`
}

// Selection is the parameter set of an image target.
type Selection struct {
	BuildArguments []string `yaml:"build_arguments,omitempty" json:"build_arguments,omitempty"`
	Name           string   `yaml:"name" json:"name"`
	Profiles       []string `yaml:"profiles,omitempty" json:"profiles,omitempty"`
}

// ImageSpec is one image target of cloud_builder.yml.
type ImageSpec struct {
	Arch        string    `yaml:"arch" json:"arch"`
	RunnerGroup string    `yaml:"runner_group" json:"runner_group"`
	Selection   Selection `yaml:"selection" json:"selection"`
}

// Metadata is a decoded .cb/cloud_builder.yml.
type Metadata struct {
	Distributions []Distribution `yaml:"distributions,omitempty" json:"distributions,omitempty"`
	Images        []ImageSpec    `yaml:"images,omitempty" json:"images,omitempty"`
	Name          string         `yaml:"name" json:"name"`
	SchemaVersion float64        `yaml:"schema_version" json:"schema_version"`
}

// IsImage reports whether the metadata describes an image.
func (m *Metadata) IsImage() bool { return len(m.Images) > 0 }

// FindDistribution returns the package target for dist and arch.
func (m *Metadata) FindDistribution(dist, arch string) (Distribution, bool) {
	for _, d := range m.Distributions {
		if d.Dist == dist && d.Arch == arch {
			return d, true
		}
	}
	return Distribution{}, false
}

// FindImage returns the image target for selection and arch.
func (m *Metadata) FindImage(selection, arch string) (ImageSpec, bool) {
	for _, i := range m.Images {
		if i.Selection.Name == selection && i.Arch == arch {
			return i, true
		}
	}
	return ImageSpec{}, false
}

// DecodeMetadata decodes and validates cloud_builder.yml content. dirName,
// when not empty, is the package directory's name, which name must equal.
func DecodeMetadata(data []byte, dirName string) (*Metadata, error) {
	f, err := parseMap(data)
	if err != nil {
		return nil, err
	}
	m := &Metadata{}
	if m.SchemaVersion, err = f.number("", "schema_version", true); err != nil {
		return nil, err
	}
	if m.Name, err = f.str("", "name", true); err != nil {
		return nil, err
	}
	if err := validateNameField("name", m.Name); err != nil {
		return nil, err
	}
	if dirName != "" && m.Name != dirName {
		return nil, &FieldError{"name", fmt.Sprintf("%q does not match the directory name %q", m.Name, dirName)}
	}
	dists, err := f.list("", "distributions")
	if err != nil {
		return nil, err
	}
	for i, v := range dists {
		key := fmt.Sprintf("distributions[%d]", i)
		e, ok := v.(map[string]any)
		if !ok {
			return nil, &FieldError{key, "must be a mapping, got " + typeName(v)}
		}
		ef := fields(e)
		var d Distribution
		for _, p := range []struct {
			k string
			v *string
		}{{"dist", &d.Dist}, {"arch", &d.Arch}, {"runner_group", &d.RunnerGroup}} {
			if *p.v, err = ef.str(key, p.k, true); err != nil {
				return nil, err
			}
			if err := validateNameField(key+"."+p.k, *p.v); err != nil {
				return nil, err
			}
		}
		m.Distributions = append(m.Distributions, d)
	}
	images, err := f.list("", "images")
	if err != nil {
		return nil, err
	}
	for i, v := range images {
		key := fmt.Sprintf("images[%d]", i)
		e, ok := v.(map[string]any)
		if !ok {
			return nil, &FieldError{key, "must be a mapping, got " + typeName(v)}
		}
		ef := fields(e)
		var im ImageSpec
		for _, p := range []struct {
			k string
			v *string
		}{{"arch", &im.Arch}, {"runner_group", &im.RunnerGroup}} {
			if *p.v, err = ef.str(key, p.k, true); err != nil {
				return nil, err
			}
			if err := validateNameField(key+"."+p.k, *p.v); err != nil {
				return nil, err
			}
		}
		sel, err := ef.sub(key, "selection")
		if err != nil {
			return nil, err
		}
		if sel == nil {
			return nil, &FieldError{key + ".selection", "required"}
		}
		skey := key + ".selection"
		if im.Selection.Name, err = sel.str(skey, "name", true); err != nil {
			return nil, err
		}
		if err := validateNameField(skey+".name", im.Selection.Name); err != nil {
			return nil, err
		}
		if im.Selection.Profiles, err = sel.strings(skey, "profiles"); err != nil {
			return nil, err
		}
		for j, p := range im.Selection.Profiles {
			if err := validateNameField(fmt.Sprintf("%s.profiles[%d]", skey, j), p); err != nil {
				return nil, err
			}
		}
		if im.Selection.BuildArguments, err = sel.strings(skey, "build_arguments"); err != nil {
			return nil, err
		}
		for j, a := range im.Selection.BuildArguments {
			if strings.ContainsAny(a, "\x00\n\r") {
				return nil, &FieldError{fmt.Sprintf("%s.build_arguments[%d]", skey, j), "contains a control character"}
			}
		}
		m.Images = append(m.Images, im)
	}
	return m, nil
}

// LoadMetadata reads <dir>/.cb/cloud_builder.yml. Errors name the file and,
// for validation errors, the field. A missing file yields an error that
// matches fs.ErrNotExist.
//
// The file comes from an untrusted git repository, where it may be a
// symbolic link to a FIFO or device (opening or reading it would block the
// service for good) or to a file elsewhere on the machine. So the file must
// be a regular file and not a symbolic link, and it is resolved beneath
// dir (os.Root): a .cb that links out of the package is refused.
func LoadMetadata(dir string) (*Metadata, error) {
	p := filepath.Join(dir, MetadataFile)
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	if fi, err := root.Lstat(MetadataFile); err == nil && fi.Mode()&fs.ModeSymlink != 0 {
		return nil, fmt.Errorf("%s: is a symbolic link, want a regular file", p)
	}
	// O_NONBLOCK: opening a FIFO must not wait for a writer; it has no
	// effect on regular files.
	fh, err := root.OpenFile(MetadataFile, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if errors.Is(err, syscall.ELOOP) {
		return nil, fmt.Errorf("%s: is a symbolic link, want a regular file", p)
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	if fi, err := fh.Stat(); err != nil {
		return nil, fmt.Errorf("stat %s: %w", p, err)
	} else if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: is a %s, want a regular file", p, fileType(fi.Mode()))
	}
	data, err := io.ReadAll(io.LimitReader(fh, MaxDocumentSize+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", p, err)
	}
	m, err := DecodeMetadata(data, filepath.Base(dir))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	return m, nil
}

func fileType(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "directory"
	case m&fs.ModeNamedPipe != 0:
		return "named pipe"
	case m&fs.ModeSocket != 0:
		return "socket"
	case m&fs.ModeDevice != 0:
		return "device"
	}
	return "special file"
}
