package ctl_test

import (
	"bytes"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cloud-builder/cb/internal/ctl"
	"github.com/cloud-builder/cb/internal/message"
)

var bins = map[string]string{
	"projects/MS/TW/x86_64/xclock-1.0-0.x86_64.rpm": strings.Repeat("rpm payload ", 10000),
	"projects/MS/TW/src/xclock-1.0-0.src.rpm":       "source rpm",
}

func TestGetBinaries(t *testing.T) {
	c := newCluster(t)
	a := c.startRunner("runner-a", false, nil)
	tg := a.built(t, xclock, time.Now(), bins)
	cl, stdout, _ := c.client(1, 5*time.Second)
	dir := filepath.Join(t.TempDir(), "out")
	got, err := cl.GetBinaries(testCtx(t), xclock, dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(bins) {
		t.Fatalf("downloaded %v", got)
	}
	for rel := range bins {
		want, err := os.ReadFile(filepath.Join(tg.Binaries(), rel))
		if err != nil {
			t.Fatal(err)
		}
		have, err := os.ReadFile(filepath.Join(dir, filepath.Base(rel)))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(want, have) {
			t.Fatalf("%s differs from the runner's file", rel)
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != len(bins) {
		t.Fatalf("target dir holds %d entries, want %d (leftover temp files?)", len(entries), len(bins))
	}
	if !strings.Contains(stdout.String(), `"target_dir": "`+dir+`"`) {
		t.Fatalf("output %s", stdout)
	}
}

// corrupt wraps the artifact handler and damages binary downloads (not
// the listing, which keeps announcing the real sizes and digests).
func corrupt(mode string) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !strings.Contains(r.URL.Path, "/binaries/") || strings.HasSuffix(r.URL.Path, "/binaries/") || !strings.HasSuffix(r.URL.Path, ".x86_64.rpm") {
				next.ServeHTTP(w, r)
				return
			}
			rec := httptest.NewRecorder()
			next.ServeHTTP(rec, r)
			body := rec.Body.Bytes()
			switch mode {
			case "short":
				// Honest about its length, but short.
				w.Write(body[:len(body)/2])
			case "cut":
				// Announces the full length, then the connection dies.
				w.Header().Set("Content-Length", strconv.Itoa(len(body)))
				w.Write(body[:len(body)/2])
				conn, _, err := http.NewResponseController(w).Hijack()
				if err == nil {
					conn.Close()
				}
			case "long":
				w.Write(append(body, "trailing garbage"...))
			case "flipped":
				body = bytes.Clone(body)
				body[len(body)/2] ^= 0xff
				w.Write(body)
			}
		})
	}
}

func TestGetBinariesCorruptTransfer(t *testing.T) {
	for _, mode := range []string{"short", "cut", "long", "flipped"} {
		t.Run(mode, func(t *testing.T) {
			c := newCluster(t)
			a := c.startRunner("runner-a", false, corrupt(mode))
			a.built(t, xclock, time.Now(), bins)
			cl, stdout, _ := c.client(1, 5*time.Second)
			dir := t.TempDir()
			_, err := cl.GetBinaries(testCtx(t), xclock, dir)
			if err == nil {
				t.Fatal("corrupted transfer succeeded")
			}
			t.Logf("refused: %v", err)
			entries, _ := os.ReadDir(dir)
			if len(entries) != 0 {
				t.Fatalf("left files behind: %v", entries)
			}
			if stdout.String() != "" {
				t.Fatalf("printed %q", stdout)
			}
		})
	}
}

func TestBuildLogKeepOpen(t *testing.T) {
	c := newCluster(t)
	a := c.startRunner("runner-a", false, nil)
	tg := a.running(t, xclock)
	writeFile(t, tg.PrepareLog(), "prepare done\n")
	writeFile(t, tg.BuildLog(), "line 1\n")
	cl, stdout, _ := c.client(1, 5*time.Second)
	done := make(chan error, 1)
	go func() { done <- cl.BuildLog(testCtx(t), xclock, true) }()

	waitFor := func(s string) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for !strings.Contains(stdout.String(), s) {
			if time.Now().After(deadline) {
				t.Fatalf("output never contained %q: %q", s, stdout)
			}
			select {
			case err := <-done:
				t.Fatalf("build log ended early (%v): %q", err, stdout)
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
	waitFor("line 1\n")
	f, err := os.OpenFile(tg.BuildLog(), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("line 2, written after the call started\n")
	waitFor("line 2, written after the call started\n")
	f.WriteString("last line\n")
	f.Close()
	// The build ends.
	os.Remove(tg.PIDFile())
	writeFile(t, tg.ResultFile(), "schema_version: 0.2\nidentity: CBRun:a:1:x\nresponse_code: package build succeeded\n")
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("--keep-open did not end when the build ended")
	}
	want := "prepare done\nline 1\nline 2, written after the call started\nlast line\n"
	if stdout.String() != want {
		t.Fatalf("output %q, want %q", stdout, want)
	}
}

func TestBuildLogAndDependencies(t *testing.T) {
	c := newCluster(t)
	a := c.startRunner("runner-a", false, nil)
	a.built(t, xclock, time.Now(), nil)
	cl, stdout, _ := c.client(1, 5*time.Second)
	if err := cl.BuildLog(testCtx(t), xclock, false); err != nil {
		t.Fatal(err)
	}
	if got := stdout.String(); got != "prepare on runner-a\nbuild on runner-a\n" {
		t.Fatalf("log %q", got)
	}
	cl2, stdout2, _ := c.client(1, 5*time.Second)
	if err := cl2.BuildDependencies(testCtx(t), xclock); err != nil {
		t.Fatal(err)
	}
	if got := stdout2.String(); got != `{"solver":"runner-a"}`+"\n" {
		t.Fatalf("solver %q", got)
	}
	// A wrong token is one clear error, not a printed error page.
	cl3, stdout3, _ := c.client(1, 5*time.Second)
	cl3.ArtifactToken = "wrong"
	err := cl3.BuildLog(testCtx(t), xclock, false)
	if err == nil || !strings.Contains(err.Error(), "refused the credentials") || stdout3.String() != "" {
		t.Fatalf("wrong token: err %v, output %q", err, stdout3)
	}
	// A target nobody built.
	other := ctl.Query{Project: "projects/MS/other", Package: &message.PackageTarget{Arch: "x86_64", Dist: "TW"}}
	cl4, _, _ := c.client(1, 800*time.Millisecond)
	if err := cl4.BuildLog(testCtx(t), other, false); !errors.Is(err, ctl.ErrNotFound) {
		t.Fatalf("unknown target: %v", err)
	}
}
