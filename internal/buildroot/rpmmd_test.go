package buildroot

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cloud-builder/cb/internal/repo"
)

// rpmvercmpVectors are the cases of rpm's own test suite
// (tests/rpmvercmp.at): a, b and rpmvercmp(a, b). They were checked
// against rpm 4.18's rpm.vercmp.
var rpmvercmpVectors = []struct {
	a, b string
	want int
}{
	{"1.0", "1.0", 0}, {"1.0", "2.0", -1}, {"2.0", "1.0", 1},
	{"2.0.1", "2.0.1", 0}, {"2.0", "2.0.1", -1}, {"2.0.1", "2.0", 1},
	{"2.0.1a", "2.0.1a", 0}, {"2.0.1a", "2.0.1", 1}, {"2.0.1", "2.0.1a", -1},
	{"5.5p1", "5.5p1", 0}, {"5.5p1", "5.5p2", -1}, {"5.5p2", "5.5p1", 1},
	{"5.5p10", "5.5p10", 0}, {"5.5p1", "5.5p10", -1}, {"5.5p10", "5.5p1", 1},
	{"10xyz", "10.1xyz", -1}, {"10.1xyz", "10xyz", 1},
	{"xyz10", "xyz10", 0}, {"xyz10", "xyz10.1", -1}, {"xyz10.1", "xyz10", 1},
	{"xyz.4", "xyz.4", 0}, {"xyz.4", "8", -1}, {"8", "xyz.4", 1}, {"xyz.4", "2", -1}, {"2", "xyz.4", 1},
	{"5.5p2", "5.6p1", -1}, {"5.6p1", "5.5p2", 1}, {"5.6p1", "6.5p1", -1}, {"6.5p1", "5.6p1", 1},
	{"6.0.rc1", "6.0", 1}, {"6.0", "6.0.rc1", -1},
	{"10b2", "10a1", 1}, {"10a2", "10b2", -1},
	{"1.0aa", "1.0aa", 0}, {"1.0a", "1.0aa", -1}, {"1.0aa", "1.0a", 1},
	{"10.0001", "10.0001", 0}, {"10.0001", "10.1", 0}, {"10.1", "10.0001", 0},
	{"10.0001", "10.0039", -1}, {"10.0039", "10.0001", 1},
	{"4.999.9", "5.0", -1}, {"5.0", "4.999.9", 1},
	{"20101121", "20101121", 0}, {"20101121", "20101122", -1}, {"20101122", "20101121", 1},
	{"2_0", "2_0", 0}, {"2.0", "2_0", 0}, {"2_0", "2.0", 0},
	{"a", "a", 0}, {"a+", "a+", 0}, {"a+", "a_", 0}, {"a_", "a+", 0},
	{"+a", "+a", 0}, {"+a", "_a", 0}, {"_a", "+a", 0},
	{"+_", "+_", 0}, {"_+", "+_", 0}, {"_+", "_", 0}, {"+", "_", 0}, {"_", "+", 0},
	{"1.0~rc1", "1.0~rc1", 0}, {"1.0~rc1", "1.0", -1}, {"1.0", "1.0~rc1", 1},
	{"1.0~rc1", "1.0~rc2", -1}, {"1.0~rc2", "1.0~rc1", 1},
	{"1.0~rc1~git123", "1.0~rc1~git123", 0}, {"1.0~rc1~git123", "1.0~rc1", -1}, {"1.0~rc1", "1.0~rc1~git123", 1},
	{"1.0^", "1.0^", 0}, {"1.0^", "1.0", 1}, {"1.0", "1.0^", -1},
	{"1.0^git1", "1.0^git1", 0}, {"1.0^git1", "1.0", 1}, {"1.0", "1.0^git1", -1},
	{"1.0^git1", "1.0^git2", -1}, {"1.0^git2", "1.0^git1", 1},
	{"1.0^git1", "1.01", -1}, {"1.01", "1.0^git1", 1},
	{"1.0^20160101", "1.0^20160101", 0}, {"1.0^20160101", "1.0.1", -1}, {"1.0.1", "1.0^20160101", 1},
	{"1.0^20160101^git1", "1.0^20160101^git1", 0}, {"1.0^20160102", "1.0^20160101^git1", 1}, {"1.0^20160101^git1", "1.0^20160102", -1},
	{"1.0~rc1^git1", "1.0~rc1^git1", 0}, {"1.0~rc1^git1", "1.0~rc1", 1}, {"1.0~rc1", "1.0~rc1^git1", -1},
	{"1.0^git1~pre", "1.0^git1~pre", 0}, {"1.0^git1", "1.0^git1~pre", 1}, {"1.0^git1~pre", "1.0^git1", -1},
	{"1b.fc17", "1b.fc17", 0}, {"1b.fc17", "1.fc17", -1}, {"1.fc17", "1b.fc17", 1},
	{"1g.fc17", "1g.fc17", 0}, {"1g.fc17", "1.fc17", 1}, {"1.fc17", "1g.fc17", -1},
}

func TestRPMVersionOrder(t *testing.T) {
	for _, v := range rpmvercmpVectors {
		if got := compareEVR(v.a, v.b); got != v.want {
			t.Errorf("rpmvercmp(%q, %q) = %d, want %d", v.a, v.b, got, v.want)
		}
	}
	// Epoch first, then version, then release.
	for _, v := range []struct {
		a, b string
		want int
	}{
		{"1:1.0-1", "2.0-1", 1}, {"0:1.0-1", "1.0-1", 0}, {"1.0-2", "1.0-10", -1},
		{"1.1-1", "1.0-9", 1}, {"1.0~rc1-1", "1.0-1", -1},
	} {
		if got := compareEVR(v.a, v.b); got != v.want {
			t.Errorf("compareEVR(%q, %q) = %d, want %d", v.a, v.b, got, v.want)
		}
	}
}

// The vectors agree with the rpm on this machine (when it has one).
func TestRPMVersionOrderMatchesRPM(t *testing.T) {
	if _, err := exec.LookPath("rpm"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("rpm is missing")
		}
		t.Skip("rpm is missing")
	}
	var lua strings.Builder
	for _, v := range rpmvercmpVectors {
		fmt.Fprintf(&lua, "print(rpm.vercmp('%s','%s')..';')", v.a, v.b)
	}
	out, err := exec.Command("rpm", "--eval", "%{lua: "+lua.String()+"}").Output()
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Split(strings.TrimSpace(strings.ReplaceAll(string(out), "\n", "")), ";")
	for i, v := range rpmvercmpVectors {
		if i >= len(got) || got[i] != fmt.Sprint(v.want) {
			t.Errorf("rpm says rpmvercmp(%q, %q) = %v, the vector %d", v.a, v.b, got[min(i, len(got)-1)], v.want)
		}
	}
}

const primaryTmpl = `<?xml version="1.0" encoding="UTF-8"?>
<metadata xmlns="http://linux.duke.edu/metadata/common" xmlns:rpm="http://linux.duke.edu/metadata/rpm" packages="%d">
%s</metadata>
`

// pkgXML renders one primary.xml package; provides and requires are
// "name" or "name FLAG ver-rel" entries.
func pkgXML(name, arch, ver, rel, sum, loc string, provides, requires []string) string {
	deps := func(tag string, list []string) string {
		if len(list) == 0 {
			return ""
		}
		s := "<rpm:" + tag + ">"
		for _, d := range list {
			f := strings.Fields(d)
			if len(f) == 3 && f[1] != "" && strings.ToUpper(f[1]) == f[1] {
				v, r, _ := strings.Cut(f[2], "-")
				s += fmt.Sprintf(`<rpm:entry name="%s" flags="%s" epoch="0" ver="%s" rel="%s"/>`, f[0], f[1], v, r)
			} else {
				s += fmt.Sprintf(`<rpm:entry name="%s"/>`, d)
			}
		}
		return s + "</rpm:" + tag + ">"
	}
	return fmt.Sprintf(`<package type="rpm"><name>%s</name><arch>%s</arch><version epoch="0" ver="%s" rel="%s"/>
<checksum type="sha256" pkgid="YES">%s</checksum><location href="%s"/>
<format>%s%s</format></package>
`, name, arch, ver, rel, sum, loc, deps("provides", provides), deps("requires", requires))
}

func primary(pkgs ...string) string {
	return fmt.Sprintf(primaryTmpl, len(pkgs), strings.Join(pkgs, ""))
}

var zeroSum = strings.Repeat("0", 64)

func TestParsePrimary(t *testing.T) {
	x := primary(
		pkgXML("greet-devel", "noarch", "1.1", "1", strings.Repeat("AB", 32), "noarch/greet-devel-1.1-1.noarch.rpm",
			[]string{"greet-devel EQ 1.1-1", "pkgconfig(greet)"}, []string{"greet-lib GE 1.0-", "/bin/sh", "(a or b)"}),
		`<package type="srpm"><name>ignored</name></package>`,
	)
	pkgs, err := parsePrimary(strings.NewReader(x))
	if err != nil {
		t.Fatal(err)
	}
	if len(pkgs) != 1 {
		t.Fatalf("packages: %+v", pkgs)
	}
	p := pkgs[0]
	if p.Name != "greet-devel" || p.EVR() != "1.1-1" || p.Arch != "noarch" || p.Sum != strings.Repeat("ab", 32) ||
		p.Location != "noarch/greet-devel-1.1-1.noarch.rpm" || len(p.Provides) != 2 || len(p.Requires) != 3 {
		t.Fatalf("package: %+v", p)
	}
	if p.Provides[1].Name != "pkgconfig(greet)" || p.Requires[2].Name != "(a or b)" {
		t.Fatalf("dependencies: %+v %+v", p.Provides, p.Requires)
	}
}

// Every field of primary.xml that could reach a path or a process is
// refused when it is not plain.
func TestParsePrimaryRefusesHostileFields(t *testing.T) {
	ok := func(name, loc string) string {
		return pkgXML(name, "noarch", "1", "1", zeroSum, loc, nil, nil)
	}
	for what, x := range map[string]string{
		"parent location":   ok("a", "../a.rpm"),
		"nested parent":     ok("a", "noarch/../../a.rpm"),
		"absolute location": ok("a", "/etc/a.rpm"),
		"url location":      ok("a", "http://elsewhere/a.rpm"),
		"hidden file":       ok("a", "noarch/.a.rpm"),
		"not an rpm":        ok("a", "noarch/a.sh"),
		"option location":   ok("a", "noarch/a b.rpm"),
		"unclean location":  ok("a", "noarch//a.rpm"),
		"name with slash":   ok("a/b", "noarch/a.rpm"),
		"name as option":    ok("-a", "noarch/a.rpm"),
		"name with blank":   ok("a b", "noarch/a.rpm"),
		"arch":              pkgXML("a", "../x", "1", "1", zeroSum, "noarch/a.rpm", nil, nil),
		"version":           pkgXML("a", "noarch", "1 2", "1", zeroSum, "noarch/a.rpm", nil, nil),
		"release":           pkgXML("a", "noarch", "1", "1/2", zeroSum, "noarch/a.rpm", nil, nil),
		"checksum":          pkgXML("a", "noarch", "1", "1", "xyz", "noarch/a.rpm", nil, nil),
		"xml:base": `<package type="rpm"><name>a</name><arch>noarch</arch><version epoch="0" ver="1" rel="1"/>
<checksum type="sha256">` + zeroSum + `</checksum><location xml:base="http://elsewhere/" href="noarch/a.rpm"/></package>`,
		"md5": `<package type="rpm"><name>a</name><arch>noarch</arch><version epoch="0" ver="1" rel="1"/>
<checksum type="md5">00000000000000000000000000000000</checksum><location href="noarch/a.rpm"/></package>`,
		"control character in a provide": pkgXML("a", "noarch", "1", "1", zeroSum, "noarch/a.rpm", []string{"x&#x1b;y"}, nil),
	} {
		if _, err := parsePrimary(strings.NewReader(primary(x))); err == nil {
			t.Errorf("%s: accepted", what)
		}
	}
}

func TestPrimaryRef(t *testing.T) {
	md := func(href, typ, sum string) []byte {
		return []byte(fmt.Sprintf(`<repomd xmlns="http://linux.duke.edu/metadata/repo"><data type="filelists"><location href="../x"/></data>
<data type="primary"><checksum type="%s">%s</checksum><location href="%s"/></data></repomd>`, typ, sum, href))
	}
	href, typ, sum, err := primaryRef(md("repodata/abc-primary.xml.gz", "sha256", zeroSum))
	if err != nil || href != "repodata/abc-primary.xml.gz" || typ != "sha256" || sum != zeroSum {
		t.Fatalf("primaryRef = %q %q %q %v", href, typ, sum, err)
	}
	for what, doc := range map[string][]byte{
		"parent":         md("repodata/../../x.xml.gz", "sha256", zeroSum),
		"absolute":       md("/repodata/x.xml.gz", "sha256", zeroSum),
		"outside":        md("noarch/x.xml.gz", "sha256", zeroSum),
		"sha1":           md("repodata/x.xml.gz", "sha1", strings.Repeat("0", 40)),
		"short checksum": md("repodata/x.xml.gz", "sha256", "00"),
		"no primary":     []byte(`<repomd><data type="other"><location href="repodata/o.xml"/></data></repomd>`),
		"not xml":        []byte(`{"data": []}`),
		"xml:base": []byte(`<repomd><data type="primary"><checksum type="sha256">` + zeroSum +
			`</checksum><location xml:base="http://elsewhere/" href="repodata/x.xml.gz"/></data></repomd>`),
	} {
		if _, _, _, err := primaryRef(doc); err == nil {
			t.Errorf("%s: accepted", what)
		}
	}
}

func gz(t *testing.T, s string) []byte {
	t.Helper()
	var b bytes.Buffer
	w := gzip.NewWriter(&b)
	w.Write([]byte(s))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func sum256(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func requireGPG(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"gpg", "gpgv"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s is missing", tool)
			}
			t.Skipf("%s is missing", tool)
		}
	}
}

func newSigner(t *testing.T) (*repo.Signer, string) {
	t.Helper()
	ctx := context.Background()
	s, err := repo.NewSigner(ctx, filepath.Join(t.TempDir(), "gnupg"), "", slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	pub := t.TempDir()
	if err := s.ExportPublicKey(ctx, pub); err != nil {
		t.Fatal(err)
	}
	return s, pub
}

// writeRPMRepo writes repodata for primaryXML and the packages files
// (location -> content), signed by s.
func writeRPMRepo(t *testing.T, s *repo.Signer, primaryXML string, files map[string][]byte) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "repodata"), 0o755); err != nil {
		t.Fatal(err)
	}
	p := gz(t, primaryXML)
	name := "repodata/" + sum256(p) + "-primary.xml.gz"
	if err := os.WriteFile(filepath.Join(dir, name), p, 0o644); err != nil {
		t.Fatal(err)
	}
	md := fmt.Sprintf(`<?xml version="1.0" encoding="UTF-8"?>
<repomd xmlns="http://linux.duke.edu/metadata/repo"><revision>1</revision>
<data type="primary"><checksum type="sha256">%s</checksum><location href="%s"/></data></repomd>
`, sum256(p), name)
	mdPath := filepath.Join(dir, "repodata", "repomd.xml")
	if err := os.WriteFile(mdPath, []byte(md), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := s.SignDetached(context.Background(), mdPath, mdPath+".asc"); err != nil {
		t.Fatal(err)
	}
	for loc, content := range files {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, loc)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, loc), content, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// A repository is only read when repomd.xml is signed by the collector's
// key and primary.xml has the checksum repomd.xml names.
func TestFetchRPMMDVerifies(t *testing.T) {
	requireGPG(t)
	ctx := context.Background()
	s, pub := newSigner(t)
	other, _ := newSigner(t)
	content := []byte("not really an rpm")
	x := primary(pkgXML("greet-devel", "noarch", "1.0", "1", sum256(content), "noarch/greet-devel-1.0-1.noarch.rpm", nil, nil))
	dir := writeRPMRepo(t, s, x, map[string][]byte{"noarch/greet-devel-1.0-1.noarch.rpm": content})
	srv := httptest.NewServer(http.FileServer(http.Dir(dir)))
	defer srv.Close()

	for _, key := range []string{filepath.Join(pub, repo.PublicKeyBinary), filepath.Join(pub, repo.PublicKeyArmored)} {
		md, err := fetchRPMMD(ctx, srv.URL, key)
		if err != nil {
			t.Fatalf("%s: %v", filepath.Base(key), err)
		}
		raw, _ := os.ReadFile(filepath.Join(dir, "repodata", "repomd.xml"))
		if len(md.Packages) != 1 || md.RepomdSHA256 != sum256(raw) {
			t.Fatalf("%s: %+v", filepath.Base(key), md)
		}
	}
	key := filepath.Join(pub, repo.PublicKeyBinary)

	// The package file is checked against primary.xml.
	md, _ := fetchRPMMD(ctx, srv.URL, key)
	p := md.Packages[0]
	p.repo = srv.URL
	if err := downloadRPM(ctx, p, filepath.Join(t.TempDir(), "ok.rpm")); err != nil {
		t.Fatalf("download: %v", err)
	}
	// A location that leaves the repository is never fetched.
	hostile := p
	hostile.Location = "../" + p.Location
	if err := downloadRPM(ctx, hostile, filepath.Join(t.TempDir(), "hostile.rpm")); err == nil {
		t.Fatal("location outside the repository downloaded")
	}
	os.WriteFile(filepath.Join(dir, p.Location), []byte("tampered"), 0o644)
	if err := downloadRPM(ctx, p, filepath.Join(t.TempDir(), "bad.rpm")); !errors.Is(err, errChecksum) {
		t.Fatalf("tampered package: %v", err)
	}

	// Signed by another key.
	dir2 := writeRPMRepo(t, other, x, nil)
	srv2 := httptest.NewServer(http.FileServer(http.Dir(dir2)))
	defer srv2.Close()
	if _, err := fetchRPMMD(ctx, srv2.URL, key); !errors.Is(err, errUnverified) {
		t.Fatalf("repository signed by another key: %v", err)
	}

	// repomd.xml changed after signing.
	mdPath := filepath.Join(dir, "repodata", "repomd.xml")
	raw, _ := os.ReadFile(mdPath)
	os.WriteFile(mdPath, append(raw, []byte("<!-- -->\n")...), 0o644)
	if _, err := fetchRPMMD(ctx, srv.URL, key); !errors.Is(err, errUnverified) {
		t.Fatalf("changed repomd.xml: %v", err)
	}
	os.WriteFile(mdPath, raw, 0o644)

	// primary.xml changed after repomd.xml was signed.
	prim, _ := filepath.Glob(filepath.Join(dir, "repodata", "*-primary.xml.gz"))
	os.WriteFile(prim[0], gz(t, primary()), 0o644)
	if _, err := fetchRPMMD(ctx, srv.URL, key); !errors.Is(err, errChecksum) {
		t.Fatalf("changed primary.xml: %v", err)
	}

	// No signature at all.
	os.Remove(mdPath + ".asc")
	if _, err := fetchRPMMD(ctx, srv.URL, key); !errors.Is(err, errUnverified) {
		t.Fatalf("unsigned repomd.xml: %v", err)
	}

	// Not published: a missing repomd.xml is told apart.
	if _, err := fetchRPMMD(ctx, srv.URL+"/nothing", key); !errors.Is(err, errMissing) {
		t.Fatalf("missing repository: %v", err)
	}
}

func TestResolveRPMs(t *testing.T) {
	pkg := func(name, arch, ver string, provides []rpmDep, requires ...rpmDep) rpmPackage {
		v, r, _ := strings.Cut(ver, "-")
		return rpmPackage{Name: name, Arch: arch, Ver: v, Rel: r, SumType: "sha256", Sum: zeroSum,
			Location: arch + "/" + name + "-" + ver + "." + arch + ".rpm", Provides: provides, Requires: requires}
	}
	pkgs := []rpmPackage{
		pkg("greet-devel", "noarch", "1.0-1", nil, rpmDep{Name: "greet-lib"}, rpmDep{Name: "rpmlib(CompressedFileNames)"}, rpmDep{Name: "/bin/sh"}),
		pkg("greet-devel", "noarch", "1.10-1", nil, rpmDep{Name: "greet-lib", Flags: "GE", Ver: "1.1"}),
		pkg("greet-devel", "noarch", "1.9-3", nil),
		pkg("greet-lib", "x86_64", "1.0-1", nil),
		pkg("greet-lib", "x86_64", "1.1-1", nil),
		pkg("greet-lib", "aarch64", "9.0-1", nil),
		pkg("compat-greet", "noarch", "2.0-1", []rpmDep{{Name: "greet-devel", Flags: "EQ", Ver: "2.0"}, {Name: "pkgconfig(greet)"}}),
		pkg("other", "noarch", "1-1", []rpmDep{{Name: "pkgconfig(other)", Flags: "EQ", Ver: "3.0"}}),
	}
	names := func(ps []rpmPackage) string {
		var s []string
		for _, p := range ps {
			s = append(s, p.Name+"="+p.EVR()+"."+p.Arch)
		}
		return strings.Join(s, " ")
	}
	for _, c := range []struct {
		reqs []RPMRelation
		want string
	}{
		// The newest in rpm order (1.10 > 1.9), the package of that name
		// before another provider, its requirements from the project too.
		{[]RPMRelation{{Name: "greet-devel"}, {Name: "gcc"}, {Name: "make"}}, "greet-devel=1.10-1.noarch greet-lib=1.1-1.x86_64"},
		{[]RPMRelation{{Name: "greet-devel", Op: "<", Version: "1.5"}}, "greet-devel=1.0-1.noarch greet-lib=1.1-1.x86_64"},
		{[]RPMRelation{{Name: "greet-devel", Op: "=", Version: "1.9"}}, "greet-devel=1.9-3.noarch"},
		{[]RPMRelation{{Name: "greet-devel", Op: ">=", Version: "2.0"}}, "compat-greet=2.0-1.noarch"},
		// Virtual provides, unversioned.
		{[]RPMRelation{{Name: "pkgconfig(greet)", Op: ">=", Version: "7"}}, "compat-greet=2.0-1.noarch"},
		{[]RPMRelation{{Name: "pkgconfig(other)", Op: ">", Version: "2.5"}}, "other=1-1.noarch"},
		// Another arch's package is not taken.
		{[]RPMRelation{{Name: "greet-lib", Op: ">", Version: "2"}}, ""},
		{[]RPMRelation{{Name: "gcc"}}, ""},
	} {
		got, err := resolveRPMs(pkgs, "x86_64", c.reqs)
		if c.want == "" && err == nil && len(got) > 0 {
			t.Errorf("%v: got %s, want nothing", c.reqs, names(got))
		}
		if c.want != "" && (err != nil || names(got) != c.want) {
			t.Errorf("%v: got %s (%v), want %s", c.reqs, names(got), err, c.want)
		}
	}
	// A name the project provides in other versions only is an error, not
	// something the Debian root could hold.
	if _, err := resolveRPMs(pkgs, "x86_64", []RPMRelation{{Name: "greet-lib", Op: ">", Version: "2"}}); err == nil ||
		!strings.Contains(err.Error(), "greet-lib 1.1-1") {
		t.Errorf("unmet version: %v", err)
	}
	if _, err := resolveRPMs(pkgs, "x86_64", []RPMRelation{{Name: "pkgconfig(other)", Op: "<", Version: "3"}}); err == nil {
		t.Error("unmet version of a virtual provide accepted")
	}
}

func TestParseSpecBuildRequires(t *testing.T) {
	spec, err := ParseSpec([]byte(`%global lib libgreet
Name:           greet-tool
Version:        1.0
Release:        1
BuildRequires:  %{lib}-devel >= 1.0, gcc make
BuildRequires:  (a or b) %{?missing}
Provides:       greeter

%package extra
Summary: x

%description
`))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range spec.BuildRequires {
		got = append(got, r.String())
	}
	if strings.Join(got, ",") != "libgreet-devel >= 1.0,gcc,make" {
		t.Fatalf("BuildRequires: %q", got)
	}
	if len(spec.Packages) != 2 || spec.Packages[1].Name != "greet-tool-extra" || spec.Packages[0].Provides[0] != "greeter" {
		t.Fatalf("packages: %+v", spec.Packages)
	}
}
