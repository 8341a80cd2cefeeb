package collect_test

import (
	"errors"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/cloud-builder/cb/internal/bearer"
	"github.com/cloud-builder/cb/internal/bearer/bearertest"
	"github.com/cloud-builder/cb/internal/collect"
	"github.com/cloud-builder/cb/internal/repo/repotest"
)

// The upload client never sends its token over plain HTTP to a host that
// is not loopback: it refuses before it connects, naming the URL and the
// setting that would allow it. With the setting, the same upload goes
// through.
func TestUploadRefusesPlainHTTPOffLoopback(t *testing.T) {
	repotest.RequireTools(t, "gpg", "dpkg-deb")
	ts := newServer(t, nil)
	ln := bearertest.Listen(t)
	srv := &http.Server{Handler: ts.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	u := debUpload(t, "hello", "1.0", "amd64", "x86_64", "bookworm")
	ctx := ctxT(t)

	for _, url := range []string{ln.URL(), "http://192.0.2.1:1"} {
		c := &collect.Client{URL: url, Token: testToken, Attempts: 3, Backoff: time.Hour, Logger: slog.New(slog.DiscardHandler)}
		start := time.Now()
		err := c.Upload(ctx, u)
		if !errors.Is(err, bearer.ErrPlainHTTP) {
			t.Fatalf("upload to %s: %v, want ErrPlainHTTP", url, err)
		}
		if time.Since(start) > 10*time.Second {
			t.Errorf("the refusal took %s: it must come before any attempt", time.Since(start))
		}
		t.Logf("refused: %v", err)
	}
	if n := ln.Accepted(); n != 0 {
		t.Fatalf("the listener accepted %d connections: the token went out", n)
	}

	c := &collect.Client{URL: ln.URL(), Token: testToken, AllowPlainHTTP: true, Attempts: 1, Logger: slog.New(slog.DiscardHandler)}
	if err := c.Upload(ctx, u); err != nil {
		t.Fatalf("upload with allow_plain_http: %v", err)
	}
	if ln.Accepted() == 0 {
		t.Fatal("the allowed upload did not reach the listener")
	}
}
