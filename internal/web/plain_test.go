package web

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/cloud-builder/cb/internal/bearer"
	"github.com/cloud-builder/cb/internal/bearer/bearertest"
)

// The UI never sends the artifact token over plain HTTP to a runner that
// is not loopback: it refuses before it connects, unless allowed.
func TestArtifactTokenNotSentOverPlainHTTP(t *testing.T) {
	ln := bearertest.Listen(t)
	hs := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("[]"))
	})}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	for _, allow := range []bool{false, true} {
		s, err := New(Config{Model: NewModel(), ArtifactToken: "artifact-token", ArtifactAllowPlainHTTP: allow})
		if err != nil {
			t.Fatal(err)
		}
		var v []any
		err = s.fetchJSON(ctx, ln.URL()+"/v1/targets/projects/MS/xclock@TW.x86_64/binaries/", &v)
		s.Close()
		switch {
		case !allow && !errors.Is(err, bearer.ErrPlainHTTP):
			t.Fatalf("fetch from %s: %v, want ErrPlainHTTP", ln.URL(), err)
		case !allow && ln.Accepted() != 0:
			t.Fatalf("the endpoint accepted %d connections: the token went out", ln.Accepted())
		case allow && err != nil:
			t.Fatalf("fetch with allow_plain_http: %v", err)
		case allow && ln.Accepted() == 0:
			t.Fatal("the allowed fetch did not reach the endpoint")
		}
	}
}
