package e2e

import (
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cloud-builder/cb/internal/message"
)

// TestSchedulerCrashMidBuild kills the scheduler with SIGKILL while a
// build runs, then the scheduler and the build job together (a machine
// crash); after each restart the build completes with exactly one final
// response.
func TestSchedulerCrashMidBuild(t *testing.T) {
	needRoot(t, "mmdebstrap", "dpkg-deb")
	s := newSystem(t)
	const project = "projects/Debian/cb-slow"
	pidFile := s.target(project) + ".pid"

	// running waits until the job is in its build step and returns its pid.
	running := func(t *testing.T, id string) int {
		t.Helper()
		waitFor(t, buildTimeout, "build step of "+id, func() bool {
			return hasCode(codes(s.resp.of(id)), message.BuildRootSetupSucceeded) &&
				strings.Contains(readFile(s.target(project)+".build.log"), "cb-slow: compiling")
		})
		b, err := os.ReadFile(pidFile)
		if err != nil {
			t.Fatalf("no pid file while building: %v", err)
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			t.Fatal(err)
		}
		return pid
	}
	exactlyOneFinal := func(t *testing.T, id string) {
		t.Helper()
		final := s.resp.waitFinal(t, id, buildTimeout)
		if final.ResponseCode != message.PackageBuildSucceeded {
			t.Fatalf("final %q (%s); responses %s\nbuild log:\n%s", final.ResponseCode, final.Message,
				joinCodes(codes(s.resp.of(id))), tail(s.buildLog(project), 3000))
		}
		// Give a duplicate time to show up.
		time.Sleep(5 * time.Second)
		if n := len(s.resp.finals(id)); n != 1 {
			t.Fatalf("%d final responses: %s", n, joinCodes(codes(s.resp.of(id))))
		}
	}

	t.Run("scheduler killed, job survives and is adopted", func(t *testing.T) {
		sched := s.startScheduler()
		id := s.requestPackage("Debian", "cb-slow")
		jobPID := running(t, id)
		sched.kill9()
		if err := syscall.Kill(jobPID, 0); err != nil {
			t.Fatalf("job %d died with its scheduler: %v", jobPID, err)
		}
		again := s.startScheduler()
		exactlyOneFinal(t, id)
		again.stop(time.Minute)
	})

	t.Run("scheduler and job killed, build resumes", func(t *testing.T) {
		sched := s.startScheduler()
		id := s.requestPackage("Debian", "cb-slow")
		jobPID := running(t, id)
		sched.kill9()
		_ = syscall.Kill(-jobPID, syscall.SIGKILL)
		waitFor(t, 30*time.Second, "job to die", func() bool { return syscall.Kill(jobPID, 0) != nil })
		if n := len(s.resp.finals(id)); n != 0 {
			t.Fatalf("final response before the restart: %s", joinCodes(codes(s.resp.of(id))))
		}
		s.startScheduler()
		exactlyOneFinal(t, id)
	})

	if m := mounts(t, s.runnerRoot); len(m) > 0 {
		t.Fatalf("mounts left below the runner root:\n%s", strings.Join(m, "\n"))
	}
}
