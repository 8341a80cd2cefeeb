package kiwi

import (
	"slices"
	"strings"
	"testing"

	"github.com/cloud-builder/cb/internal/buildroot"
)

func TestCommand(t *testing.T) {
	got := Command("bookworm.x86_64", "/w/description", "/cache/tmp-1", "/cache/downloads/kiwi", []string{"build-essential", "debhelper-compat"})
	want := []string{"kiwi-ng", "--profile", "bookworm.x86_64", "--shared-cache-dir", "/cache/downloads/kiwi",
		"system", "prepare", "--description", "/w/description", "--allow-existing-root", "--root", "/cache/tmp-1",
		"--add-package=build-essential", "--add-package=debhelper-compat"}
	if !slices.Equal(got, want) {
		t.Fatalf("argv = %q\nwant %q", got, want)
	}
}

const description = `<?xml version="1.0" encoding="utf-8"?>
<!-- a <repository> in a comment is not an element -->
<image schemaversion="7.4" name="cb-hello">
    <preferences profiles="bookworm.x86_64">
        <packagemanager>apt</packagemanager>
    </preferences>
    <profiles><profile name="bookworm.x86_64" description="x" arch="x86_64"/></profiles>
    <repository type="apt-deb" alias="debian" distribution="bookworm" components="main" repository_gpgcheck="true">
        <source path="http://mirror.invalid/debian">
            <signing key="file:///usr/share/keyrings/debian-archive-keyring.gpg"/>
        </source>
    </repository>
    <packages type="bootstrap"><package name="gcc"/></packages>
</image>
`

// The project repositories go into kiwi's description copy before the
// description's repositories (kiwi bootstraps from the last one), each
// verified with the collector's key; the rest of the description is kept
// byte for byte.
func TestWithProjectRepos(t *testing.T) {
	base := buildroot.Repository{Type: buildroot.RepoAptDeb, Path: "http://mirror.invalid/debian", Distribution: "bookworm", Components: []string{"main"}, Alias: "debian"}
	repos := []buildroot.Repository{base,
		{Type: buildroot.RepoAptDeb, Path: "http://collector.invalid:8080/projects/Deps/bookworm", Distribution: "bookworm",
			Components: []string{"main"}, Alias: "cb-project", SignedBy: "/var/cache/cb/collector-key/ab12.gpg", KeyDigest: "x"},
		{Type: buildroot.RepoAptDeb, Path: "http://collector.invalid:8080/projects/Shared/bookworm?a=1&b=\"2\"", Distribution: "bookworm",
			Components: []string{"main"}, Alias: "cb-project", SignedBy: "/var/cache/cb/collector-key/ab12.gpg", KeyDigest: "y"},
	}
	out, err := WithProjectRepos([]byte(description), repos)
	if err != nil {
		t.Fatal(err)
	}
	d, err := buildroot.ParseDescription(out)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	p, err := d.Profile("bookworm.x86_64")
	if err != nil {
		t.Fatal(err)
	}
	type repo struct{ alias, path, dist, keys string }
	var got []repo
	for _, r := range p.Repositories {
		got = append(got, repo{r.Alias, r.Path, r.Distribution, strings.Join(r.SigningKeys, " ")})
	}
	want := []repo{
		{"cb-project", repos[1].Path, "bookworm", "file:///var/cache/cb/collector-key/ab12.gpg"},
		{"cb-project-2", repos[2].Path, "bookworm", "file:///var/cache/cb/collector-key/ab12.gpg"},
		{"debian", base.Path, "bookworm", "file:///usr/share/keyrings/debian-archive-keyring.gpg"},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("repositories kiwi sees:\n%+v\nwant\n%+v\n%s", got, want, out)
	}
	// The signatures of the project repositories are checked.
	if n := strings.Count(string(out), `repository_gpgcheck="true"`); n != 3 {
		t.Errorf("repository_gpgcheck=\"true\" appears %d times, want 3:\n%s", n, out)
	}
	// Everything but the inserted elements is unchanged.
	i := strings.Index(string(out), `<repository type="apt-deb" alias="cb-project"`)
	j := strings.Index(string(out), `<repository type="apt-deb" alias="debian"`)
	if string(out[:i])+string(out[j:]) != description {
		t.Fatalf("description changed beyond the inserted repositories:\n%s", out)
	}
	// Without project repositories the description is handed on as is.
	if same, err := WithProjectRepos([]byte(description), repos[:1]); err != nil || string(same) != description {
		t.Fatalf("no project repositories: %v\n%s", err, same)
	}
}

func TestWithProjectReposNoRepository(t *testing.T) {
	desc := `<image name="x"><packages type="bootstrap"><package name="gcc"/></packages></image>`
	out, err := WithProjectRepos([]byte(desc), []buildroot.Repository{{Type: buildroot.RepoAptDeb, Path: "http://c.invalid/p/bookworm",
		Distribution: "bookworm", Components: []string{"main"}, Alias: "cb-project", SignedBy: "/k.gpg"}})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(string(out), `<signing key="file:///k.gpg"/></source></repository>`+"\n    </image>") {
		t.Fatalf("not inserted before </image>:\n%s", out)
	}
	for _, bad := range []string{`<other/>`, `<image>`, `not xml`} {
		if _, err := WithProjectRepos([]byte(bad), []buildroot.Repository{{Type: buildroot.RepoAptDeb, Path: "http://c.invalid/", SignedBy: "/k"}}); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
	if _, err := WithProjectRepos([]byte(description), []buildroot.Repository{{Type: buildroot.RepoRpmMd, Path: "http://c.invalid/", SignedBy: "/k"}}); err == nil {
		t.Error("an rpm-md project repository was accepted")
	}
}
