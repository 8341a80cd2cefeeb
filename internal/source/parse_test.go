package source

import (
	"errors"
	"io/fs"
	"strings"
	"testing"

	"github.com/cloud-builder/cb/internal/message"
)

// writeChunks writes s to w in pieces of n bytes, the way a pipe may
// deliver it.
func writeChunks(t *testing.T, w interface{ Write([]byte) (int, error) }, s string, n int) {
	t.Helper()
	for len(s) > 0 {
		k := min(n, len(s))
		if _, err := w.Write([]byte(s[:k])); err != nil {
			t.Fatal(err)
		}
		s = s[k:]
	}
}

func TestNulSplitter(t *testing.T) {
	in := "projects/a/x\x00projects/b/.cb/y\x00projects/c d/z\x00"
	for _, chunk := range []int{1, 2, 5, 13, len(in)} {
		var got []string
		w := &nulSplitter{fn: func(s string) { got = append(got, s) }}
		writeChunks(t, w, in, chunk)
		if strings.Join(got, "|") != "projects/a/x|projects/b/.cb/y|projects/c d/z" {
			t.Fatalf("chunk %d: got %q", chunk, got)
		}
	}
}

func TestBatchParser(t *testing.T) {
	in := "aaaa blob 5\nhello\n" +
		"x:missing missing\n" +
		"bbbb tree 12\n0123456789ab\n" +
		"cccc blob 11\nhello world\n" +
		"dddd blob 0\n\n"
	paths := []string{"a", "missing", "tree", "big", "empty"}
	for _, chunk := range []int{1, 3, 7, len(in)} {
		type res struct {
			data string
			err  error
		}
		var got []res
		b := &batchParser{paths: paths, max: 10, fn: func(p string, d []byte, err error) {
			got = append(got, res{string(d), err})
		}}
		writeChunks(t, b, in, chunk)
		if b.n != len(paths) || len(got) != len(paths) {
			t.Fatalf("chunk %d: %d answers, want %d", chunk, len(got), len(paths))
		}
		if got[0].data != "hello" || got[0].err != nil {
			t.Errorf("chunk %d: a = %+v", chunk, got[0])
		}
		if !errors.Is(got[1].err, fs.ErrNotExist) || !errors.Is(got[2].err, fs.ErrNotExist) {
			t.Errorf("chunk %d: missing/tree = %+v %+v", chunk, got[1], got[2])
		}
		if !errors.Is(got[3].err, message.ErrTooLarge) {
			t.Errorf("chunk %d: big = %+v", chunk, got[3])
		}
		if got[4].data != "" || got[4].err != nil {
			t.Errorf("chunk %d: empty = %+v", chunk, got[4])
		}
	}
}

func TestDirSet(t *testing.T) {
	s := dirSet{}
	for _, p := range []string{
		"projects/MS/xclock/xclock.spec",
		"projects/MS/xclock/.cb/root/etc/x",
		"projects/top-file",
		"README",
		"projects/a\nb/c",
	} {
		s.add(p)
	}
	got := map[string]uint8(s)
	want := map[string]uint8{
		"projects/MS":        fileChanged,
		"projects/MS/xclock": fileChanged | metaChanged,
	}
	if len(got) != len(want) {
		t.Fatalf("dirs = %v, want %v", got, want)
	}
	for d, f := range want {
		if got[d] != f {
			t.Errorf("%s: flags %b, want %b", d, got[d], f)
		}
	}
}
