package sandbox

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cloud-builder/cb/internal/cgroup"
)

// TestRootless checks what the command is: root of its own user namespace
// mapped to the id range, with no_new_privs and the seccomp filter, in a
// root it entered with pivot_root, with the host's /proc files masked.
func TestRootless(t *testing.T) {
	needRoot(t)
	noNewMounts(t)
	lower := miniRoot(t)
	code, out, err := run(t, overlaySpec(t, lower, "sh", "-c",
		"cat /proc/self/uid_map /proc/self/gid_map /proc/self/status; echo keys:; cat /proc/keys; echo mounts:; cat /proc/self/mountinfo"))
	if err != nil || code != 0 {
		t.Fatalf("code %d err %v out %s", code, err, out)
	}
	fields := func(prefix string) string {
		for _, l := range strings.Split(out, "\n") {
			if strings.HasPrefix(l, prefix) {
				return strings.Join(strings.Fields(strings.TrimPrefix(l, prefix)), " ")
			}
		}
		return ""
	}
	if got := fields("         0     100000"); got != "65536" {
		t.Errorf("uid/gid map lacks 0 100000 65536:\n%s", out)
	}
	for prefix, want := range map[string]string{
		"Uid:":        "0 0 0 0",
		"NoNewPrivs:": "1",
		"Seccomp:":    "2",
		// full capabilities, but only in its own user namespace
		"CapEff:": "000001ffffffffff",
	} {
		if got := fields(prefix); got != want {
			t.Errorf("%s %q, want %q", prefix, got, want)
		}
	}
	keys := out[strings.Index(out, "keys:\n")+6 : strings.Index(out, "mounts:")]
	if keys != "" {
		t.Errorf("/proc/keys not masked: %q", keys)
	}
	mi := out[strings.Index(out, "mounts:"):]
	for _, want := range []string{" /proc/keys ", " /proc/sys ro,"} {
		if !strings.Contains(mi, want) {
			t.Errorf("mountinfo lacks %q:\n%s", want, mi)
		}
	}
	// pivot_root, not chroot: the old root is not reachable at all.
	if strings.Contains(mi, " / /.") || strings.Count(mi, " / / ") != 1 {
		t.Errorf("more than one root mount inside:\n%s", mi)
	}
}

func TestIdleTimeout(t *testing.T) {
	needRoot(t)
	lower := miniRoot(t)
	s := overlaySpec(t, lower, "sh", "-c", "echo working; sleep 1; echo still; sleep 30; echo survived")
	s.IdleTimeout = 1500 * time.Millisecond
	start := time.Now()
	_, out, err := run(t, s)
	if !errors.Is(err, ErrIdle) {
		t.Fatalf("err %v, want ErrIdle (out %q)", err, out)
	}
	if !strings.Contains(err.Error(), "1.5s") {
		t.Errorf("error %q does not name the limit", err)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("idle build ended after %s", took)
	}
	if out != "working\nstill\n" {
		t.Errorf("output %q", out)
	}
}

func TestWriteLimit(t *testing.T) {
	needRoot(t)
	lower := miniRoot(t)
	if err := os.WriteFile(filepath.Join(lower, "blob"), make([]byte, 256<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := ShiftOwner(lower, DefaultIDs); err != nil {
		t.Fatal(err)
	}
	// Many files, each below the cap, together far above it.
	s := overlaySpec(t, lower, "sh", "-c", "i=0; while [ $i -lt 100 ]; do cat /blob > /f$i || exit 1; i=$((i+1)); done; sleep 30; echo survived")
	s.MaxWrite = 4 << 20
	_, out, err := run(t, s)
	if !errors.Is(err, ErrWriteLimit) {
		t.Fatalf("err %v, want ErrWriteLimit (out %.500q)", err, out)
	}
	if strings.Contains(out, "survived") {
		t.Error("command survived the write limit")
	}
	t.Run("one large file", func(t *testing.T) {
		s := overlaySpec(t, lower, "sh", "-c", "cat /blob > /big")
		s.MaxWrite = 64 << 10
		code, out, err := run(t, s)
		if err != nil || code == 0 {
			t.Fatalf("code %d err %v out %.500q, want the write to fail", code, err, out)
		}
		fi, err := os.Stat(filepath.Join(s.Upper, "big"))
		if err == nil && fi.Size() > s.MaxWrite {
			t.Errorf("file of %d bytes beyond the cap of %d", fi.Size(), s.MaxWrite)
		}
	})
}

func TestMemoryLimit(t *testing.T) {
	needRoot(t)
	if cgroup.Version() == 0 {
		t.Fatal("no cgroups")
	}
	lower := miniRoot(t)
	buildHostile(t, filepath.Join(lower, "usr", "bin", "hostile"))
	s := overlaySpec(t, lower, "hostile", "-memory", "1073741824", "child", "memory-hog")
	s.Limits = cgroup.Limits{Memory: 64 << 20}
	code, out, err := run(t, s)
	if !errors.Is(err, ErrMemoryLimit) {
		t.Fatalf("code %d err %v out %q, want ErrMemoryLimit", code, err, out)
	}
	if code != 128+9 {
		t.Errorf("exit code %d, want %d (SIGKILL)", code, 128+9)
	}
}
