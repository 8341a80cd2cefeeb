package repo

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/cloud-builder/cb/internal/atomicfile"
)

// The apt repository is a dists/ tree next to the arch directories, which
// act as the pool:
//
//	deb [signed-by=/etc/apt/keyrings/cb.gpg] http://host/<repo path> <dist> main
//
// Filename: fields are relative to the repository directory, so the
// package files stay where the runners' sort put them.
const debComponent = "main"

// debArch maps the uname -m names runners use to Debian architectures.
var debArch = map[string]string{
	"x86_64": "amd64", "aarch64": "arm64", "i386": "i386", "i486": "i386", "i586": "i386",
	"i686": "i386", "armv7l": "armhf", "armv6l": "armel", "ppc64le": "ppc64el",
	"ppc64": "ppc64", "s390x": "s390x", "riscv64": "riscv64", "mips64": "mips64el",
}

// DebArch returns the Debian architecture for a machine name.
func DebArch(machine string) string {
	if a, ok := debArch[machine]; ok {
		return a
	}
	return machine
}

// debEntry caches the Packages stanza of one file; size and mtime tell
// whether it is still the same file, so only new files are read.
type debEntry struct {
	Size    int64  `json:"size"`
	ModTime int64  `json:"mtime_ns"`
	Arch    string `json:"arch"`
	Stanza  string `json:"stanza"`
}

func (p *Publisher) publishDeb(ctx context.Context, r Repository, builds []Build) error {
	index := map[string]debEntry{}
	if data, err := os.ReadFile(r.file(debIndexFile)); err == nil {
		_ = json.Unmarshal(data, &index) // a broken cache is rebuilt
	}
	fresh := map[string]debEntry{}
	byArch := map[string][]string{}
	archs := map[string]bool{}
	var all []string
	for _, b := range builds {
		archs[DebArch(b.Arch)] = true
		for _, f := range b.Files {
			if _, done := fresh[f.Name]; done {
				continue
			}
			e, err := p.debStanza(ctx, r, f.Name, index[f.Name])
			if err != nil {
				return fmt.Errorf("publish %s: %w", r.Path, err)
			}
			fresh[f.Name] = e
			if e.Arch == "all" {
				all = append(all, e.Stanza)
			} else {
				archs[e.Arch] = true
				byArch[e.Arch] = append(byArch[e.Arch], e.Stanza)
			}
		}
	}
	if data, err := json.Marshal(fresh); err == nil {
		if err := atomicfile.WriteFile(r.file(debIndexFile), data, 0o644); err != nil {
			return fmt.Errorf("publish %s: %w", r.Path, err)
		}
	}
	delete(archs, "all")
	if len(archs) == 0 {
		archs["all"] = true
	}
	archList := make([]string, 0, len(archs))
	for a := range archs {
		archList = append(archList, a)
	}
	slices.Sort(archList)

	tmp, err := os.MkdirTemp(r.Dir(), ".dists-")
	if err != nil {
		return fmt.Errorf("publish %s: %w", r.Path, err)
	}
	defer os.RemoveAll(tmp)
	suite := r.Dist()
	suiteDir := filepath.Join(tmp, suite)
	var sums []debSum
	for _, a := range archList {
		stanzas := append(slices.Clone(byArch[a]), all...)
		slices.Sort(stanzas)
		rel := debComponent + "/binary-" + a
		s, err := writePackages(filepath.Join(suiteDir, filepath.FromSlash(rel)), rel, stanzas)
		if err != nil {
			return fmt.Errorf("publish %s: %w", r.Path, err)
		}
		sums = append(sums, s...)
	}
	release := debRelease(r, suite, archList, sums, time.Now())
	relFile := filepath.Join(suiteDir, "Release")
	if err := os.WriteFile(relFile, release, 0o644); err != nil {
		return fmt.Errorf("publish %s: %w", r.Path, err)
	}
	if err := p.Signer.ClearSign(ctx, relFile, filepath.Join(suiteDir, "InRelease")); err != nil {
		return fmt.Errorf("publish %s: %w", r.Path, err)
	}
	if err := p.Signer.SignDetached(ctx, relFile, filepath.Join(suiteDir, "Release.gpg")); err != nil {
		return fmt.Errorf("publish %s: %w", r.Path, err)
	}
	current := filepath.Join(r.Dir(), "dists")
	keepPreviousDeb(filepath.Join(current, suite), suiteDir)
	if err := swapIn(tmp, current); err != nil {
		return fmt.Errorf("publish %s: swap dists: %w", r.Path, err)
	}
	return nil
}

// debStanza returns the Packages stanza of name, from the cache when the
// file did not change.
func (p *Publisher) debStanza(ctx context.Context, r Repository, name string, cached debEntry) (debEntry, error) {
	path := r.file(name)
	st, err := os.Stat(path)
	if err != nil {
		return debEntry{}, fmt.Errorf("read %s: %w", name, err)
	}
	if cached.Stanza != "" && cached.Size == st.Size() && cached.ModTime == st.ModTime().UnixNano() {
		return cached, nil
	}
	control, err := run(ctx, nil, "dpkg-deb", "--field", path)
	if err != nil {
		return debEntry{}, fmt.Errorf("read control of %s: %w", name, err)
	}
	var stanza strings.Builder
	arch := ""
	sc := bufio.NewScanner(bytes.NewReader(control))
	sc.Buffer(make([]byte, 64*1024), 4<<20)
	skip := false
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			continue
		}
		if line[0] != ' ' && line[0] != '\t' {
			field, value, _ := strings.Cut(line, ":")
			// These describe the file in the archive; the control file
			// must not get to set them.
			switch strings.ToLower(field) {
			case "filename", "size", "md5sum", "sha1", "sha256", "sha512":
				skip = true
				continue
			case "architecture":
				arch = strings.TrimSpace(value)
			}
			skip = false
		} else if skip {
			continue
		}
		stanza.WriteString(line + "\n")
	}
	if err := sc.Err(); err != nil {
		return debEntry{}, fmt.Errorf("read control of %s: %w", name, err)
	}
	if arch == "" || strings.ContainsAny(arch, " /") {
		return debEntry{}, fmt.Errorf("read control of %s: missing or bad Architecture %q", name, arch)
	}
	fh, err := os.Open(path)
	if err != nil {
		return debEntry{}, err
	}
	defer fh.Close()
	m, s := md5.New(), sha256.New()
	n, err := io.Copy(io.MultiWriter(m, s), fh)
	if err != nil {
		return debEntry{}, fmt.Errorf("hash %s: %w", name, err)
	}
	fmt.Fprintf(&stanza, "Filename: %s\nSize: %d\nMD5sum: %s\nSHA256: %s\n",
		name, n, hex.EncodeToString(m.Sum(nil)), hex.EncodeToString(s.Sum(nil)))
	return debEntry{Size: st.Size(), ModTime: st.ModTime().UnixNano(), Arch: arch, Stanza: stanza.String()}, nil
}

type debSum struct {
	path   string // relative to the suite directory
	size   int64
	md5    string
	sha256 string
}

// writePackages writes Packages and Packages.gz into dir, plus their
// by-hash copies (apt fetches those when the Release says Acquire-By-Hash,
// which keeps a client that read the previous InRelease working).
func writePackages(dir, rel string, stanzas []string) ([]debSum, error) {
	if err := os.MkdirAll(filepath.Join(dir, "by-hash", "SHA256"), 0o755); err != nil {
		return nil, err
	}
	plain := []byte(strings.Join(stanzas, "\n"))
	var gz bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&gz, gzip.BestSpeed)
	if _, err := zw.Write(plain); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	var sums []debSum
	for _, f := range []struct {
		name string
		data []byte
	}{{"Packages", plain}, {"Packages.gz", gz.Bytes()}} {
		p := filepath.Join(dir, f.name)
		if err := os.WriteFile(p, f.data, 0o644); err != nil {
			return nil, err
		}
		m, s := md5.Sum(f.data), sha256.Sum256(f.data)
		sum := debSum{rel + "/" + f.name, int64(len(f.data)), hex.EncodeToString(m[:]), hex.EncodeToString(s[:])}
		if err := os.Link(p, filepath.Join(dir, "by-hash", "SHA256", sum.sha256)); err != nil && !errors.Is(err, fs.ErrExist) {
			return nil, err
		}
		sums = append(sums, sum)
	}
	return sums, nil
}

func debRelease(r Repository, suite string, archs []string, sums []debSum, now time.Time) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "Origin: cloud-builder\nLabel: %s\nSuite: %s\nCodename: %s\n", r.Path, suite, suite)
	fmt.Fprintf(&b, "Date: %s\n", now.UTC().Format("Mon, 02 Jan 2006 15:04:05 UTC"))
	fmt.Fprintf(&b, "Architectures: %s\nComponents: %s\nAcquire-By-Hash: yes\n", strings.Join(archs, " "), debComponent)
	fmt.Fprintf(&b, "Description: Cloud Builder repository %s\n", r.Path)
	b.WriteString("MD5Sum:\n")
	for _, s := range sums {
		fmt.Fprintf(&b, " %s %d %s\n", s.md5, s.size, s.path)
	}
	b.WriteString("SHA256:\n")
	for _, s := range sums {
		fmt.Fprintf(&b, " %s %d %s\n", s.sha256, s.size, s.path)
	}
	return []byte(b.String())
}

// keepPreviousDeb links the index files the previous Release lists into the
// new tree's by-hash directories: one generation back, best effort.
func keepPreviousDeb(oldSuite, newSuite string) {
	data, err := os.ReadFile(filepath.Join(oldSuite, "Release"))
	if err != nil {
		return
	}
	inSHA := false
	for _, line := range strings.Split(string(data), "\n") {
		if !strings.HasPrefix(line, " ") {
			inSHA = line == "SHA256:"
			continue
		}
		f := strings.Fields(line)
		if !inSHA || len(f) != 3 || len(f[0]) != 64 || strings.Contains(f[2], "..") {
			continue
		}
		dir := filepath.Dir(filepath.FromSlash(f[2]))
		dst := filepath.Join(newSuite, dir, "by-hash", "SHA256", f[0])
		if _, err := os.Stat(filepath.Join(newSuite, dir, "by-hash")); err != nil {
			continue // arch no longer published
		}
		_ = os.Link(filepath.Join(oldSuite, dir, "by-hash", "SHA256", f[0]), dst)
	}
}
