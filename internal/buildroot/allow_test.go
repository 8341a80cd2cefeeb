package buildroot

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cloud-builder/cb/internal/mirror"
	"github.com/cloud-builder/cb/internal/target"
)

func TestCheckRepositories(t *testing.T) {
	allowed := []string{"http://deb.example.org/debian", "https://repo.example.net:8443/", "file:///srv/mirror"}
	repo := func(path string, keys ...string) *Profile {
		return &Profile{Repositories: []Repository{{Type: RepoAptDeb, Path: path, SigningKeys: keys}}}
	}
	for _, tc := range []struct {
		name string
		p    *Profile
		ok   bool
	}{
		{"the mirror itself", repo("http://deb.example.org/debian"), true},
		{"below the mirror", repo("http://deb.example.org/debian/dists/"), true},
		{"collector project repo", repo("https://repo.example.net:8443/projects/Debian/bookworm"), true},
		{"runner's own file mirror", repo("file:///srv/mirror/debian"), true},
		{"system keyring", repo("http://deb.example.org/debian", "file:///usr/share/keyrings/debian-archive-keyring.gpg"), true},
		{"foreign host", repo("http://evil.example.com/debian"), false},
		{"sibling path", repo("http://deb.example.org/debian-evil"), false},
		{"dot dot", repo("http://deb.example.org/debian/../evil"), false},
		{"encoded dot dot", repo("http://deb.example.org/debian/%2e%2e/evil"), false},
		{"encoded slash dot dot", repo("http://deb.example.org/debian%2f..%2fevil"), false},
		{"dots in a file name", repo("http://deb.example.org/debian/pool/x/a..b_1.0_all.deb"), true},
		{"escaped package name", repo("http://deb.example.org/debian/pool/main/g/gcc-12/libstdc%2b%2b6_12.2.0-14%2bdeb12u1_amd64.deb"), true},
		{"user info", repo("http://deb.example.org@evil.example.com/debian"), false},
		{"other port", repo("https://repo.example.net:9443/projects"), false},
		{"other scheme", repo("https://deb.example.org/debian"), false},
		{"file path from git", repo("file:///etc"), false},
		{"file root", repo("file:///"), false},
		{"key from a host path", repo("http://deb.example.org/debian", "file:///etc/shadow"), false},
		{"key escaping the keyrings", repo("http://deb.example.org/debian", "file:///usr/share/keyrings/../../../etc/shadow"), false},
		{"key from a foreign host", repo("http://deb.example.org/debian", "http://evil.example.com/key.gpg"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckRepositories(tc.p, allowed)
			if tc.ok && err != nil {
				t.Fatal(err)
			}
			if !tc.ok {
				if !errors.Is(err, ErrNotAllowed) {
					t.Fatalf("err %v, want ErrNotAllowed", err)
				}
				if !strings.Contains(err.Error(), tc.p.Repositories[0].Path) {
					t.Errorf("error %q does not name the repository", err)
				}
			}
		})
	}
}

// TestPrepareRefusesHostileDescription runs Prepare on descriptions that
// name a forbidden repository, a file:// path and a host key: each must
// fail before any backend runs, name the repository and the setting that
// allows it, and leave no cache entry or target directory behind.
func TestPrepareRefusesHostileDescription(t *testing.T) {
	t.Setenv(mirror.EnvOverride, "http://deb.example.org/debian")
	src, err := os.ReadFile("../../examples/projects/Debian/cb-hello/" + DescriptionFile)
	must(t, err)
	for _, tc := range []struct{ name, from, to, want string }{
		{"forbidden repository", mirror.Placeholder, "http://evil.example.com/debian", "repository http://evil.example.com/debian is not allowed"},
		{"file path", mirror.Placeholder, "file:///var/lib/cb", "repository file:///var/lib/cb is not allowed"},
		{"host key", "file:///usr/share/keyrings/debian-archive-keyring.gpg", "file:///root/.gnupg/secring.gpg", "signing key file:///root/.gnupg/secring.gpg"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pkg := filepath.Join(t.TempDir(), "hello")
			must(t, CopyTree("../../examples/projects/Debian/cb-hello", pkg))
			must(t, os.WriteFile(filepath.Join(pkg, DescriptionFile), bytes.ReplaceAll(src, []byte(tc.from), []byte(tc.to)), 0o644))
			root := t.TempDir()
			tg, err := target.New(root, "projects/Debian/hello", "bookworm", "x86_64")
			must(t, err)
			before := testBackend.creates.Load()
			var plog bytes.Buffer
			_, err = Prepare(context.Background(), Options{Backend: "status-test", Log: &plog}, pkg, tg)
			if !errors.Is(err, ErrNotAllowed) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want %q", err, tc.want)
			}
			if !strings.Contains(err.Error(), AllowSetting) && !strings.Contains(err.Error(), SystemKeyrings) {
				t.Errorf("error %q does not say how to allow it", err)
			}
			if testBackend.creates.Load() != before {
				t.Error("the backend ran for a refused description")
			}
			var left []string
			_ = filepath.Walk(root, func(p string, _ os.FileInfo, _ error) error {
				if p != root {
					left = append(left, p)
				}
				return nil
			})
			if len(left) > 0 {
				t.Errorf("prepare left %v behind", left)
			}
		})
	}
}

func TestCapWriter(t *testing.T) {
	var out bytes.Buffer
	w := &capWriter{w: &out, left: 10}
	for _, s := range []string{"12345", "67890", "abc", "def"} {
		if n, err := w.Write([]byte(s)); err != nil || n != len(s) {
			t.Fatalf("write %q: %d %v", s, n, err)
		}
	}
	if got := out.String(); !strings.HasPrefix(got, "1234567890\n[prepare log truncated") || strings.Contains(got, "abc") {
		t.Errorf("log %q", got)
	}
}
