package collect_test

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloud-builder/cb/internal/collect"
	"github.com/cloud-builder/cb/internal/repo/repotest"
	"github.com/cloud-builder/cb/internal/upload"
)

// cuttingProxy forwards TCP to target. The first connection is cut after
// limit bytes of the request; later connections wait for release.
type cuttingProxy struct {
	ln      net.Listener
	target  string
	limit   int64
	cut     chan struct{}
	release chan struct{}
	mu      sync.Mutex
	conns   int
}

func newCuttingProxy(t *testing.T, target string, limit int64) *cuttingProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cuttingProxy{ln: ln, target: target, limit: limit, cut: make(chan struct{}), release: make(chan struct{})}
	t.Cleanup(func() { ln.Close() })
	go p.serve()
	return p
}

func (p *cuttingProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		p.conns++
		n := p.conns
		p.mu.Unlock()
		go p.handle(c, n)
	}
}

func (p *cuttingProxy) handle(c net.Conn, n int) {
	defer c.Close()
	if n > 1 {
		<-p.release
	}
	up, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	defer up.Close()
	if n == 1 {
		go io.Copy(c, up) // lets "100 Continue" through
		io.CopyN(up, c, p.limit)
		// Both sides see the connection die mid-body.
		up.(*net.TCPConn).SetLinger(0)
		c.(*net.TCPConn).SetLinger(0)
		close(p.cut)
		return
	}
	go io.Copy(c, up)
	io.Copy(up, c)
}

// A transfer cut in the middle publishes nothing; the client retries and
// the build is published exactly once.
func TestCutTransferIsRetried(t *testing.T) {
	repotest.RequireTools(t, "dpkg-deb")
	ts := newServer(t, nil)
	ctx := ctxT(t)
	u := debUpload(t, "cb-hello", "1.0", "amd64", "x86_64", "bookworm")
	st, err := os.Stat(u.Files[0].Path)
	if err != nil {
		t.Fatal(err)
	}
	// Request headers and the manifest take well under 2 KiB; cutting
	// after them plus half the package lands inside the file's bytes.
	proxy := newCuttingProxy(t, ts.http.Listener.Addr().String(), 2048+st.Size()/2)
	c := ts.client()
	c.URL = "http://" + proxy.ln.Addr().String()
	done := make(chan struct{})
	var res *collect.Result
	var upErr error
	go func() {
		defer close(done)
		res, upErr = c.UploadResult(ctx, u)
	}()
	<-proxy.cut
	// Until the retry is let through, nothing may be visible.
	deadline := time.Now().Add(10 * time.Second)
	for !stagingEmpty(t, ts) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if !stagingEmpty(t, ts) {
		t.Fatal("the cut transfer's staging was not discarded")
	}
	if exists(filepath.Join(ts.cfg.RepoRoot, "projects")) {
		t.Fatal("a cut transfer published something")
	}
	close(proxy.release)
	<-done
	if upErr != nil {
		t.Fatalf("upload after retry: %v", upErr)
	}
	if res.Status != "published" {
		t.Fatalf("retry answered %+v, want published", res)
	}
	proxy.mu.Lock()
	conns := proxy.conns
	proxy.mu.Unlock()
	if conns < 2 {
		t.Fatalf("client did not retry (%d connections)", conns)
	}
	// A second delivery of the same build changes nothing.
	before := mustRead(t, filepath.Join(ts.cfg.RepoRoot, "projects/Debian/bookworm/dists/bookworm/InRelease"))
	res, err = ts.client().UploadResult(ctx, u)
	if err != nil || res.Status != "unchanged" {
		t.Fatalf("repeated delivery: %+v %v, want unchanged", res, err)
	}
	after := mustRead(t, filepath.Join(ts.cfg.RepoRoot, "projects/Debian/bookworm/dists/bookworm/InRelease"))
	if !bytes.Equal(before, after) {
		t.Fatal("repeated delivery regenerated the metadata")
	}
}

// rawUpload builds a tar stream by hand, so the test can send what the
// client would refuse to.
type rawEntry struct {
	name string
	data []byte
}

func rawStream(t *testing.T, manifest string, entries ...rawEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range append([]rawEntry{{collect.ManifestName, []byte(manifest)}}, entries...) {
		if err := tw.WriteHeader(&tar.Header{Name: e.name, Mode: 0o644, Size: int64(len(e.data)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		tw.Write(e.data)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func sha(data []byte) string { s := sha256.Sum256(data); return hex.EncodeToString(s[:]) }

func manifest(name, sum string, size int) string {
	return strings.NewReplacer("NAME", name, "SUM", sum, "SIZE", strconv.Itoa(size)).Replace(`version: 1
request_id: r1
project: projects/Debian/hello
name: hello
repo_path: projects/Debian/bookworm
arch: x86_64
repo_type: deb
files:
  - name: NAME
    size: SIZE
    sha256: SUM
`)
}

func TestBadUploadsAreRefused(t *testing.T) {
	repotest.RequireTools(t, "dpkg-deb")
	ts := newServer(t, nil)
	pkg := []byte("not really a deb, never looked at")
	good := manifest("x86_64/hello_1.0_amd64.deb", sha(pkg), len(pkg))
	for _, tc := range []struct {
		name   string
		token  string
		body   []byte
		code   int
		errHas string
	}{
		{"wrong token", "wrong", rawStream(t, good, rawEntry{"x86_64/hello_1.0_amd64.deb", pkg}), 401, "wrong token"},
		{"no token", "", rawStream(t, good, rawEntry{"x86_64/hello_1.0_amd64.deb", pkg}), 401, "wrong token"},
		{"dot-dot path", testToken, rawStream(t, manifest("../../../etc/hello.deb", sha(pkg), len(pkg)),
			rawEntry{"../../../etc/hello.deb", pkg}), 400, "want <arch dir>/<file>"},
		{"dot-dot element", testToken, rawStream(t, manifest("../hello.deb", sha(pkg), len(pkg)),
			rawEntry{"../hello.deb", pkg}), 400, "invalid name"},
		{"checksum mismatch", testToken, rawStream(t, manifest("x86_64/hello_1.0_amd64.deb", sha([]byte("other")), len(pkg)),
			rawEntry{"x86_64/hello_1.0_amd64.deb", pkg}), 400, "checksum mismatch"},
		{"entry not in manifest", testToken, rawStream(t, good, rawEntry{"x86_64/other.deb", pkg}), 400, "not in the manifest"},
		{"missing file", testToken, rawStream(t, good), 400, "stream ended without"},
		{"project escape", testToken, rawStream(t, strings.Replace(good, "projects/Debian/hello", "projects/../hello", 1),
			rawEntry{"x86_64/hello_1.0_amd64.deb", pkg}), 400, "project"},
		{"foreign repository", testToken, rawStream(t, strings.Replace(good, "repo_path: projects/Debian/bookworm", "repo_path: projects/Other/bookworm", 1),
			rawEntry{"x86_64/hello_1.0_amd64.deb", pkg}), 400, "not <project parent>/<dist>"},
		{"unknown manifest key", testToken, rawStream(t, good+"extra: 1\n", rawEntry{"x86_64/hello_1.0_amd64.deb", pkg}), 400, "extra"},
		{"not tar", testToken, []byte("hello"), 400, "manifest"},
		{"not a package", testToken, rawStream(t, good, rawEntry{"x86_64/hello_1.0_amd64.deb", pkg}), 400, "not a readable deb package"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest("POST", ts.http.URL+upload.Path, bytes.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			if tc.token != "" {
				req.Header.Set("Authorization", "Bearer "+tc.token)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.code || !strings.Contains(string(body), tc.errHas) {
				t.Fatalf("got %d %s, want %d with %q", resp.StatusCode, body, tc.code, tc.errHas)
			}
			if exists(filepath.Join(ts.cfg.RepoRoot, "projects")) || exists(filepath.Join(ts.cfg.RepoRoot, "etc")) ||
				exists(filepath.Join(filepath.Dir(ts.cfg.RepoRoot), "etc")) {
				t.Fatal("a refused upload wrote into the repository")
			}
			if !stagingEmpty(t, ts) {
				t.Fatal("a refused upload left staging behind")
			}
		})
	}
	// The client refuses to send what the server would refuse, and a 4xx
	// is not retried.
	t.Run("client wrong token fails fast", func(t *testing.T) {
		// Big enough that the server answers long before the body could
		// be sent: the 401 must still reach the client as a 401.
		big := filepath.Join(t.TempDir(), "big_1_amd64.deb")
		if err := os.WriteFile(big, bytes.Repeat([]byte("x"), 32<<20), 0o644); err != nil {
			t.Fatal(err)
		}
		c := ts.client()
		c.Token = "wrong"
		c.Backoff = time.Hour
		err := c.Upload(ctxT(t), upload.Upload{RequestID: "r1", Project: "projects/Debian/big", Name: "big",
			RepoPath: "projects/Debian/bookworm", Arch: "x86_64", RepoType: "deb",
			Files: []upload.File{{Path: big, Name: "x86_64/big_1_amd64.deb"}}})
		var refused *collect.Error
		if !errors.As(err, &refused) || refused.Status != 401 {
			t.Fatalf("err = %v, want a 401 *collect.Error", err)
		}
	})
}
