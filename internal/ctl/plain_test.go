package ctl_test

import (
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/cloud-builder/cb/internal/bearer"
	"github.com/cloud-builder/cb/internal/bearer/bearertest"
)

// cb-ctl never sends the artifact token over plain HTTP to a runner that
// is not loopback: it refuses before it connects, unless
// cbctl.artifacts.allow_plain_http says otherwise.
func TestArtifactTokenNotSentOverPlainHTTP(t *testing.T) {
	c := newCluster(t)
	ln := bearertest.Listen(t)
	a := c.startRunnerOn(ln, "runner-a", false, nil)
	a.built(t, xclock, time.Now(), bins)

	cl, _, _ := c.client(1, 5*time.Second)
	_, err := cl.GetBinaries(testCtx(t), xclock, filepath.Join(t.TempDir(), "out"))
	if !errors.Is(err, bearer.ErrPlainHTTP) {
		t.Fatalf("get binaries from %s: %v, want ErrPlainHTTP", ln.URL(), err)
	}
	t.Logf("refused: %v", err)
	if err := cl.BuildLog(testCtx(t), xclock, false); !errors.Is(err, bearer.ErrPlainHTTP) {
		t.Fatalf("build log from %s: %v, want ErrPlainHTTP", ln.URL(), err)
	}
	if n := ln.Accepted(); n != 0 {
		t.Fatalf("the runner's endpoint accepted %d connections: the token went out", n)
	}

	cl, _, _ = c.client(1, 5*time.Second)
	cl.AllowPlainHTTP = true
	if _, err := cl.GetBinaries(testCtx(t), xclock, filepath.Join(t.TempDir(), "out")); err != nil {
		t.Fatalf("get binaries with allow_plain_http: %v", err)
	}
	if ln.Accepted() == 0 {
		t.Fatal("the allowed download did not reach the endpoint")
	}
}
