package buildroot

import (
	"context"
	"net"
	"net/http"
	"os"
	"testing"
	"time"
)

// A collector that starts after the build asked for its key is waited
// for: the runner and the collector start side by side.
func TestCollectorKeyWaitsForCollector(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("key material"))
	})}
	go func() {
		time.Sleep(1500 * time.Millisecond)
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return
		}
		srv.Serve(l)
	}()
	t.Cleanup(func() { srv.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := collectorKey(ctx, &ProjectRepos{URL: "http://" + addr}, t.TempDir())
	if err != nil {
		t.Fatalf("collector key: %v", err)
	}
	if b, _ := os.ReadFile(p); string(b) != "key material" {
		t.Fatalf("pinned key holds %q", b)
	}
}
