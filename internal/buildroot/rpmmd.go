package buildroot

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/klauspost/compress/zstd"
	rpmversion "github.com/knqyf263/go-rpm-version"
	"github.com/ulikunitz/xz"

	"github.com/cloud-builder/cb/internal/repo"
)

// maxPrimary bounds a decompressed primary.xml.
const maxPrimary = 512 << 20

// rpmMD is a verified rpm-md repository: the digest of its signed
// repomd.xml and the packages its primary.xml lists.
type rpmMD struct {
	RepomdSHA256 string
	Packages     []rpmPackage
}

// rpmPackage is one package of primary.xml; every field was validated
// (validate) before it is used.
type rpmPackage struct {
	Name     string
	Arch     string
	Epoch    string
	Ver      string
	Rel      string
	SumType  string // sha256 or sha512
	Sum      string // hex digest of the package file
	Location string // below the repository, checked by validLocation
	Provides []rpmDep
	Requires []rpmDep
	repo     string // URL of the repository that lists it (not from the index)
}

// rpmDep is one provides or requires entry.
type rpmDep struct {
	Name  string
	Flags string // "", EQ, LT, LE, GT, GE
	Epoch string
	Ver   string
	Rel   string
}

// EVR is the package's [epoch:]version-release.
func (p rpmPackage) EVR() string { return evr(p.Epoch, p.Ver, p.Rel) }

func evr(epoch, ver, rel string) string {
	s := ver
	if rel != "" {
		s += "-" + rel
	}
	if epoch != "" && epoch != "0" {
		s = epoch + ":" + s
	}
	return s
}

var (
	rpmNameRE    = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+-]{0,199}$`)
	rpmVerRE     = regexp.MustCompile(`^[A-Za-z0-9._+~^]{1,128}$`)
	rpmRelRE     = regexp.MustCompile(`^[A-Za-z0-9._+~^]{0,128}$`)
	rpmEpochRE   = regexp.MustCompile(`^[0-9]{0,9}$`)
	rpmArchRE    = regexp.MustCompile(`^[A-Za-z0-9_]{1,32}$`)
	locationRE   = regexp.MustCompile(`^[A-Za-z0-9._+~^/-]+$`)
	depFlags     = []string{"", "EQ", "LT", "LE", "GT", "GE"}
	digestLength = map[string]int{"sha256": sha256.Size * 2, "sha512": sha512.Size * 2}
)

// validLocation checks a location href of repomd.xml or primary.xml: a
// clean relative path below the repository, of plain characters, ending
// in suffix.
func validLocation(href, suffix string) error {
	switch {
	case len(href) > 1024 || !locationRE.MatchString(href):
		return fmt.Errorf("location %q: not a plain relative path", href)
	case path.IsAbs(href) || path.Clean(href) != href:
		return fmt.Errorf("location %q: not a clean relative path", href)
	case !strings.HasSuffix(href, suffix):
		return fmt.Errorf("location %q: does not end in %s", href, suffix)
	}
	for _, part := range strings.Split(href, "/") {
		if part == "" || strings.HasPrefix(part, ".") {
			return fmt.Errorf("location %q: leaves the repository or names a hidden file", href)
		}
	}
	return nil
}

func validDigest(typ, sum string) error {
	n, ok := digestLength[typ]
	if !ok {
		return fmt.Errorf("checksum type %q (want sha256 or sha512)", typ)
	}
	if len(sum) != n {
		return fmt.Errorf("%s checksum %q: wrong length", typ, sum)
	}
	if _, err := hex.DecodeString(sum); err != nil {
		return fmt.Errorf("%s checksum %q: not hex", typ, sum)
	}
	return nil
}

func newHash(typ string) hash.Hash {
	if typ == "sha512" {
		return sha512.New()
	}
	return sha256.New()
}

// validDepName accepts printable text without control characters (rich
// dependencies hold blanks); dependency names are only compared, never
// used as paths or arguments.
func validDepName(s string) bool {
	if s == "" || len(s) > 1024 || !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return false
		}
	}
	return true
}

func (p *rpmPackage) validate() error {
	switch {
	case !rpmNameRE.MatchString(p.Name):
		return fmt.Errorf("package name %q is not a plain rpm name", p.Name)
	case !rpmArchRE.MatchString(p.Arch):
		return fmt.Errorf("package %s: arch %q", p.Name, p.Arch)
	case !rpmEpochRE.MatchString(p.Epoch) || !rpmVerRE.MatchString(p.Ver) || !rpmRelRE.MatchString(p.Rel):
		return fmt.Errorf("package %s: version %q", p.Name, evr(p.Epoch, p.Ver, p.Rel))
	}
	p.Sum = strings.ToLower(p.Sum)
	if err := validDigest(p.SumType, p.Sum); err != nil {
		return fmt.Errorf("package %s: %w", p.Name, err)
	}
	if err := validLocation(p.Location, ".rpm"); err != nil {
		return fmt.Errorf("package %s: %w", p.Name, err)
	}
	for _, list := range [][]rpmDep{p.Provides, p.Requires} {
		for _, d := range list {
			if !validDepName(d.Name) || !slices.Contains(depFlags, d.Flags) ||
				!rpmEpochRE.MatchString(d.Epoch) || !rpmRelRE.MatchString(d.Ver) || !rpmRelRE.MatchString(d.Rel) {
				return fmt.Errorf("package %s: dependency %q %s %q", p.Name, d.Name, d.Flags, evr(d.Epoch, d.Ver, d.Rel))
			}
		}
	}
	return nil
}

// primaryRef returns the location and checksum of the primary metadata
// that repomd.xml names, validated.
func primaryRef(repomd []byte) (href, sumType, sum string, err error) {
	var md repo.Repomd
	if err := xml.Unmarshal(repomd, &md); err != nil {
		return "", "", "", fmt.Errorf("parse repomd.xml: %w", err)
	}
	for _, d := range md.Data {
		if d.Type != "primary" {
			continue
		}
		href = d.Location.Href
		if d.Location.Base != "" {
			return "", "", "", fmt.Errorf("repomd.xml: primary location has xml:base %q: it must be below the repository", d.Location.Base)
		}
		if err := validLocation(href, ""); err != nil {
			return "", "", "", fmt.Errorf("repomd.xml: primary %w", err)
		}
		if !strings.HasPrefix(href, "repodata/") {
			return "", "", "", fmt.Errorf("repomd.xml: primary location %q is not below repodata/", href)
		}
		sumType, sum = d.Checksum.Type, strings.ToLower(strings.TrimSpace(d.Checksum.Value))
		if err := validDigest(sumType, sum); err != nil {
			return "", "", "", fmt.Errorf("repomd.xml: primary %w", err)
		}
		return href, sumType, sum, nil
	}
	return "", "", "", errors.New("repomd.xml lists no primary metadata")
}

// parsePrimary reads primary.xml one package at a time and validates
// every package.
func parsePrimary(r io.Reader) ([]rpmPackage, error) {
	var out []rpmPackage
	err := repo.EachPrimaryPackage(r, func(e *repo.XMLPackage) error {
		if e.Type != "" && e.Type != "rpm" {
			return nil
		}
		if e.Location.Base != "" {
			return fmt.Errorf("primary.xml: package %q: location has xml:base %q: it must be below the repository", e.Name, e.Location.Base)
		}
		p := rpmPackage{Name: strings.TrimSpace(e.Name), Arch: strings.TrimSpace(e.Arch),
			Epoch: e.Version.Epoch, Ver: e.Version.Ver, Rel: e.Version.Rel,
			SumType: e.Checksum.Type, Sum: strings.TrimSpace(e.Checksum.Value), Location: e.Location.Href}
		for _, d := range e.Provides {
			p.Provides = append(p.Provides, rpmDep(d))
		}
		for _, d := range e.Requires {
			p.Requires = append(p.Requires, rpmDep(d))
		}
		if err := p.validate(); err != nil {
			return fmt.Errorf("primary.xml: %w", err)
		}
		out = append(out, p)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// fetchRPMMD reads the rpm-md repository at base: repomd.xml and its
// detached signature repomd.xml.asc, verified with keyFile (gpgv), then
// the primary metadata repomd.xml names, whose checksum must match.
// A repository without repomd.xml returns an error wrapping errMissing.
func fetchRPMMD(ctx context.Context, base, keyFile string) (*rpmMD, error) {
	base = strings.TrimRight(base, "/")
	repomd, err := fetchSmall(ctx, base+"/repodata/repomd.xml", maxIndex)
	if err != nil {
		return nil, err
	}
	sig, err := fetchSmall(ctx, base+"/repodata/repomd.xml.asc", 1<<20)
	if err != nil {
		if errors.Is(err, errMissing) {
			return nil, fmt.Errorf("repomd.xml is not signed (no repomd.xml.asc): %w", errUnverified)
		}
		return nil, err
	}
	if err := verifyDetached(ctx, keyFile, repomd, sig); err != nil {
		return nil, fmt.Errorf("repomd.xml: %w", err)
	}
	href, sumType, sum, err := primaryRef(repomd)
	if err != nil {
		return nil, err
	}
	raw, err := fetchSmall(ctx, base+"/"+href, maxIndex)
	if err != nil {
		return nil, err
	}
	h := newHash(sumType)
	h.Write(raw)
	if got := hex.EncodeToString(h.Sum(nil)); got != sum {
		return nil, fmt.Errorf("%s: %s checksum %s, repomd.xml says %s: %w", href, sumType, got, sum, errChecksum)
	}
	r, err := decompressed(href, bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", href, err)
	}
	pkgs, err := parsePrimary(io.LimitReader(r, maxPrimary))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", href, err)
	}
	md := sha256.Sum256(repomd)
	return &rpmMD{RepomdSHA256: hex.EncodeToString(md[:]), Packages: pkgs}, nil
}

var (
	errUnverified = errors.New("signature not verified")
	errChecksum   = errors.New("checksum mismatch")
)

// fetchSmall reads u whole, refusing more than limit bytes.
func fetchSmall(ctx context.Context, u string, limit int64) ([]byte, error) {
	body, err := openURL(ctx, u)
	if err != nil {
		return nil, err
	}
	defer body.Close()
	data, err := io.ReadAll(io.LimitReader(body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", u, err)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s: larger than %d bytes", u, limit)
	}
	return data, nil
}

func decompressed(name string, r io.Reader) (io.Reader, error) {
	switch {
	case strings.HasSuffix(name, ".gz"):
		return gzip.NewReader(r)
	case strings.HasSuffix(name, ".xz"):
		return xz.NewReader(r)
	case strings.HasSuffix(name, ".zst"):
		d, err := zstd.NewReader(r)
		if err != nil {
			return nil, err
		}
		return d.IOReadCloser(), nil
	case strings.HasSuffix(name, ".xml"):
		return r, nil
	}
	return nil, fmt.Errorf("unknown compression of %s", path.Base(name))
}

// verifyDetached checks sig, a detached OpenPGP signature of data, with
// gpgv against the key (binary or armored) in keyFile and nothing else.
func verifyDetached(ctx context.Context, keyFile string, data, sig []byte) error {
	key, err := os.ReadFile(keyFile)
	if err != nil {
		return fmt.Errorf("signing key: %w", err)
	}
	if bytes.HasPrefix(bytes.TrimSpace(key), []byte("-----BEGIN PGP")) {
		// gpgv reads binary keyrings only.
		blk, err := armor.Decode(bytes.NewReader(key))
		if err != nil {
			return fmt.Errorf("signing key %s: %w", keyFile, err)
		}
		if key, err = io.ReadAll(io.LimitReader(blk.Body, 1<<20)); err != nil {
			return fmt.Errorf("signing key %s: %w", keyFile, err)
		}
	}
	dir, err := os.MkdirTemp("", "cb-verify-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	files := map[string][]byte{"key.gpg": key, "data": data, "data.asc": sig}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), content, 0o600); err != nil {
			return err
		}
	}
	var out, stderr bytes.Buffer
	argv := []string{"gpgv", "--status-fd", "1", "--keyring", filepath.Join(dir, "key.gpg"),
		filepath.Join(dir, "data.asc"), filepath.Join(dir, "data")}
	cmd := command(ctx, ExecOptions{Env: []string{"GNUPGHOME=" + dir}}, &out, &stderr, argv)
	err = run(ctx, cmd, "gpgv")
	if err != nil || !bytes.Contains(out.Bytes(), []byte("[GNUPG:] VALIDSIG ")) {
		msg := strings.TrimSpace(stderr.String())
		if ctx.Err() != nil {
			return fmt.Errorf("verify signature: %w", context.Cause(ctx))
		}
		return fmt.Errorf("%w with the collector's key %s: %s", errUnverified, keyFile, msg)
	}
	return nil
}

// rpmSatisfies reports whether the provide d (of a package) meets the
// relation r, with rpm's rules: an unversioned provide or requirement
// matches any version, and a requirement without release ignores the
// provide's release.
func rpmSatisfies(d rpmDep, r RPMRelation) bool {
	if r.Op == "" || d.Flags == "" || d.Ver == "" {
		return true
	}
	if d.Flags != "EQ" {
		// A ranged provide (rare): treated as overlapping any requirement.
		return true
	}
	want := r.Version
	have := d
	epoch, rest, ok := strings.Cut(want, ":")
	if !ok {
		epoch, rest = "", want
	}
	if !strings.Contains(rest, "-") {
		have.Rel = ""
	}
	c := compareEVR(evr(have.Epoch, have.Ver, have.Rel), evr(epoch, strings.SplitN(rest, "-", 2)[0], relOf(rest)))
	switch r.Op {
	case "<":
		return c < 0
	case "<=":
		return c <= 0
	case "=", "==":
		return c == 0
	case ">=":
		return c >= 0
	case ">":
		return c > 0
	}
	return false
}

func relOf(vr string) string {
	_, rel, _ := strings.Cut(vr, "-")
	return rel
}

// compareEVR orders two [epoch:]version[-release] strings as rpm does
// (rpmvercmp per part; a missing epoch is 0).
func compareEVR(a, b string) int {
	return rpmversion.NewVersion(a).Compare(rpmversion.NewVersion(b))
}

// rpmArchFits reports whether a package of arch installs on a target of
// machine (uname -m spelling): its own arch or noarch; source packages
// never.
func rpmArchFits(arch, machine string) bool {
	return arch == "noarch" || arch == machine
}

// providesOf returns p's provides with its own name = EVR added.
func (p rpmPackage) providesOf() []rpmDep {
	self := rpmDep{Name: p.Name, Flags: "EQ", Epoch: p.Epoch, Ver: p.Ver, Rel: p.Rel}
	return append([]rpmDep{self}, p.Provides...)
}

// resolveRPMs chooses the packages of pkgs (of the target's machine arch)
// that reqs need, plus, transitively, what those require from pkgs: for
// each relation, the newest version of a package that provides its name
// in a matching version, a package of that very name before any other
// provider. A name no package of pkgs provides is left out (the base root
// holds it or the build goes without it); a name provided only in other
// versions is an error.
func resolveRPMs(pkgs []rpmPackage, machine string, reqs []RPMRelation) ([]rpmPackage, error) {
	byName := map[string][]int{}
	for i, p := range pkgs {
		if !rpmArchFits(p.Arch, machine) {
			continue
		}
		for _, d := range p.providesOf() {
			if !slices.Contains(byName[d.Name], i) {
				byName[d.Name] = append(byName[d.Name], i)
			}
		}
	}
	chosen := map[string]int{} // package name -> index
	var order []string
	queue := slices.Clone(reqs)
	for len(queue) > 0 {
		r := queue[0]
		queue = queue[1:]
		providers := byName[r.Name]
		if len(providers) == 0 {
			continue
		}
		matches := func(p rpmPackage) bool {
			for _, d := range p.providesOf() {
				if d.Name == r.Name && rpmSatisfies(d, r) {
					return true
				}
			}
			return false
		}
		if slices.ContainsFunc(providers, func(i int) bool {
			j, ok := chosen[pkgs[i].Name]
			return ok && j == i && matches(pkgs[i])
		}) {
			continue // a package already chosen serves it
		}
		best := -1
		var have []string
		for _, i := range providers {
			p := pkgs[i]
			if !matches(p) {
				have = append(have, p.Name+" "+p.EVR())
				continue
			}
			if best < 0 || better(p, pkgs[best], r.Name) {
				best = i
			}
		}
		if best < 0 {
			slices.Sort(have)
			return nil, fmt.Errorf("%s: the project repository has only %s", r, strings.Join(slices.Compact(have), ", "))
		}
		p := pkgs[best]
		if prev, ok := chosen[p.Name]; ok {
			return nil, fmt.Errorf("%s needs %s %s, another requirement %s %s", r, p.Name, p.EVR(), p.Name, pkgs[prev].EVR())
		}
		chosen[p.Name] = best
		order = append(order, p.Name)
		for _, d := range p.Requires {
			if strings.HasPrefix(d.Name, "rpmlib(") || strings.HasPrefix(d.Name, "(") {
				continue
			}
			rel := RPMRelation{Name: d.Name}
			if op := map[string]string{"EQ": "=", "LT": "<", "LE": "<=", "GT": ">", "GE": ">="}[d.Flags]; op != "" && d.Ver != "" {
				rel.Op, rel.Version = op, evr(d.Epoch, d.Ver, d.Rel)
			}
			queue = append(queue, rel)
		}
	}
	slices.Sort(order)
	out := make([]rpmPackage, 0, len(order))
	for _, n := range order {
		out = append(out, pkgs[chosen[n]])
	}
	return out, nil
}

// better reports whether a is a better provider of name than b: the
// package named name first, then the newest version, then by name and
// location (so the choice never depends on the index's order).
func better(a, b rpmPackage, name string) bool {
	if (a.Name == name) != (b.Name == name) {
		return a.Name == name
	}
	if a.Name == b.Name {
		if c := compareEVR(a.EVR(), b.EVR()); c != 0 {
			return c > 0
		}
		return a.Location < b.Location
	}
	if c := compareEVR(a.EVR(), b.EVR()); c != 0 {
		return c > 0
	}
	return a.Name < b.Name
}
