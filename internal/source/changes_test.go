package source_test

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cloud-builder/cb/internal/message"
	"github.com/cloud-builder/cb/internal/source"
	"github.com/cloud-builder/cb/internal/source/sourcetest"
)

const (
	xclock = "projects/MS/xclock"
	xsnow  = "projects/Debian/xsnow"
	leap   = "projects/images/leap/test-image"
)

// baseTree is the sources repository every case starts from: two packages,
// one image, a directory without metadata and files outside projects/.
func baseTree() map[string]string {
	return map[string]string{
		"README.md":                        "sources",
		xclock + "/.cb/cloud_builder.yml":  sourcetest.PackageMetadata("xclock", "suse", "TW.x86_64", "TW.aarch64"),
		xclock + "/.cb/build_root.kiwi":    "<image/>",
		xclock + "/xclock.spec":            "Name: xclock",
		xclock + "/patches/fix.patch":      "--- a",
		xsnow + "/.cb/cloud_builder.yml":   sourcetest.PackageMetadata("xsnow", "debian", "bookworm.x86_64"),
		xsnow + "/.cb/build_root.kiwi":     "<image/>",
		xsnow + "/debian/control":          "Source: xsnow",
		leap + "/.cb/cloud_builder.yml":    sourcetest.ImageMetadata("test-image", "suse", "standard.x86_64"),
		leap + "/appliance.kiwi":           "<image/>",
		"projects/docs/notes.txt":          "no package here",
		"projects/MS/xclock-extra/foo.txt": "sibling with a common prefix, not a package",
	}
}

type want struct {
	project       string
	meta, deleted bool
	invalid       bool
}

func TestChanges(t *testing.T) {
	for _, tc := range []struct {
		name string
		// change returns the commits to compare, after base was pushed;
		// sync brings the checkout up to date in between, as a poll does.
		change func(r *sourcetest.Repo, base string, sync func()) (from, to string)
		want   []want
	}{
		{"source file", func(r *sourcetest.Repo, base string, sync func()) (string, string) {
			return base, r.CommitAndPush("spec", map[string]string{xclock + "/xclock.spec": "Name: xclock\nVersion: 2"})
		}, []want{{project: xclock}}},
		{"file in a package subdirectory", func(r *sourcetest.Repo, base string, sync func()) (string, string) {
			return base, r.CommitAndPush("patch", map[string]string{xclock + "/patches/new.patch": "+++ b"})
		}, []want{{project: xclock}}},
		{"build_root.kiwi", func(r *sourcetest.Repo, base string, sync func()) (string, string) {
			return base, r.CommitAndPush("kiwi", map[string]string{xclock + "/.cb/build_root.kiwi": "<image schemaversion='7.4'/>"})
		}, []want{{project: xclock, meta: true}}},
		{"buildroot overlay below .cb/root", func(r *sourcetest.Repo, base string, sync func()) (string, string) {
			return base, r.CommitAndPush("overlay", map[string]string{xsnow + "/.cb/root/usr/lib/build/configs/default.conf": "type: dsc"})
		}, []want{{project: xsnow, meta: true}}},
		{"two packages", func(r *sourcetest.Repo, base string, sync func()) (string, string) {
			return base, r.CommitAndPush("two", map[string]string{xclock + "/xclock.spec": "v2", xsnow + "/debian/control": "v2"})
		}, []want{{project: xsnow}, {project: xclock}}},
		{"image", func(r *sourcetest.Repo, base string, sync func()) (string, string) {
			return base, r.CommitAndPush("image", map[string]string{leap + "/config.sh": "#!/bin/sh"})
		}, []want{{project: leap}}},
		{"outside projects", func(r *sourcetest.Repo, base string, sync func()) (string, string) {
			return base, r.CommitAndPush("readme", map[string]string{"README.md": "changed", "docs/x": "y"})
		}, nil},
		{"directory without metadata", func(r *sourcetest.Repo, base string, sync func()) (string, string) {
			return base, r.CommitAndPush("notes", map[string]string{"projects/docs/notes.txt": "changed", "projects/MS/xclock-extra/foo.txt": "changed"})
		}, nil},
		{"several commits", func(r *sourcetest.Repo, base string, sync func()) (string, string) {
			r.CommitAndPush("1", map[string]string{xclock + "/xclock.spec": "v2"})
			r.CommitAndPush("2", map[string]string{"README.md": "v2"})
			return base, r.CommitAndPush("3", map[string]string{xsnow + "/.cb/build_root.kiwi": "v2"})
		}, []want{{project: xsnow, meta: true}, {project: xclock}}},
		{"change reverted in a later commit", func(r *sourcetest.Repo, base string, sync func()) (string, string) {
			r.CommitAndPush("1", map[string]string{xclock + "/xclock.spec": "v2"})
			return base, r.CommitAndPush("2", map[string]string{xclock + "/xclock.spec": "Name: xclock"})
		}, nil},
		{"deleted package", func(r *sourcetest.Repo, base string, sync func()) (string, string) {
			r.Remove(xsnow)
			id := r.Commit("rm")
			r.Push()
			return base, id
		}, []want{{project: xsnow, deleted: true}}},
		{"metadata file removed", func(r *sourcetest.Repo, base string, sync func()) (string, string) {
			r.Remove(xsnow + "/.cb/cloud_builder.yml")
			id := r.Commit("rm meta")
			r.Push()
			return base, id
		}, []want{{project: xsnow, deleted: true}}},
		{"renamed package", func(r *sourcetest.Repo, base string, sync func()) (string, string) {
			r.Git("mv", "projects/Debian", "projects/Debian12")
			id := r.Commit("mv")
			r.Push()
			return base, id
		}, []want{{project: xsnow, deleted: true}, {project: "projects/Debian12/xsnow", meta: true}}},
		{"new package", func(r *sourcetest.Repo, base string, sync func()) (string, string) {
			return base, r.CommitAndPush("new", map[string]string{
				"projects/MS/xeyes/.cb/cloud_builder.yml": sourcetest.PackageMetadata("xeyes", "suse", "TW.x86_64"),
				"projects/MS/xeyes/xeyes.spec":            "Name: xeyes",
			})
		}, []want{{project: "projects/MS/xeyes", meta: true}}},
		{"package directory that is not a valid project", func(r *sourcetest.Repo, base string, sync func()) (string, string) {
			return base, r.CommitAndPush("bad", map[string]string{
				"projects/bad dir/.cb/cloud_builder.yml": sourcetest.PackageMetadata("bad dir", "suse", "TW.x86_64"),
			})
		}, []want{{project: "projects/bad dir", meta: true, invalid: true}}},
		{"nested package changes both", func(r *sourcetest.Repo, base string, sync func()) (string, string) {
			return base, r.CommitAndPush("nested", map[string]string{
				xclock + "/sub/.cb/cloud_builder.yml": sourcetest.PackageMetadata("sub", "suse", "TW.x86_64"),
			})
		}, []want{{project: xclock}, {project: xclock + "/sub", meta: true}}},
		{"force-push rewriting history", func(r *sourcetest.Repo, base string, sync func()) (string, string) {
			old := r.CommitAndPush("old", map[string]string{xclock + "/xclock.spec": "old"})
			sync()
			r.Git("reset", "--quiet", "--hard", base)
			r.Write(map[string]string{xsnow + "/debian/control": "new"})
			id := r.Commit("rewritten")
			r.ForcePush()
			// xclock differs (the old change is gone), xsnow differs (the
			// new change), the image is the same in both.
			return old, id
		}, []want{{project: xsnow}, {project: xclock}}},
		{"force-push of history the checkout never saw", func(r *sourcetest.Repo, base string, sync func()) (string, string) {
			// The stored commit was pruned or the checkout cloned afresh:
			// nothing to compare with, so everything is requested.
			old := r.CommitAndPush("old", map[string]string{xclock + "/xclock.spec": "old"})
			r.Git("reset", "--quiet", "--hard", base)
			r.Write(map[string]string{xsnow + "/debian/control": "new"})
			id := r.Commit("rewritten")
			r.ForcePush()
			return old, id
		}, []want{{project: xsnow, meta: true}, {project: xclock, meta: true}, {project: leap, meta: true}}},
		{"rebase keeping the same content", func(r *sourcetest.Repo, base string, sync func()) (string, string) {
			old := r.CommitAndPush("old", map[string]string{xclock + "/xclock.spec": "v2"})
			sync()
			r.Git("reset", "--quiet", "--hard", base)
			r.Write(map[string]string{xclock + "/xclock.spec": "v2"})
			r.Git("commit", "--quiet", "--all", "-m", "same change, other commit", "--date", "2001-01-01T00:00:00")
			r.ForcePush()
			return old, r.Git("rev-parse", "HEAD")
		}, nil},
		{"no previous commit", func(r *sourcetest.Repo, base string, sync func()) (string, string) {
			return "", base
		}, []want{{project: xsnow, meta: true}, {project: xclock, meta: true}, {project: leap, meta: true}}},
		{"previous commit unknown", func(r *sourcetest.Repo, base string, sync func()) (string, string) {
			return strings.Repeat("1", 40), base
		}, []want{{project: xsnow, meta: true}, {project: xclock, meta: true}, {project: leap, meta: true}}},
		{"same commit", func(r *sourcetest.Repo, base string, sync func()) (string, string) {
			return base, base
		}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			r := sourcetest.New(t)
			base := r.CommitAndPush("base", baseTree())
			dir := filepath.Join(t.TempDir(), "sources")
			if _, err := source.Update(ctx, dir, r.URL(), "main", nil); err != nil {
				t.Fatal(err)
			}
			sync := func() {
				t.Helper()
				if _, err := source.Update(ctx, dir, r.URL(), "main", nil); err != nil {
					t.Fatal(err)
				}
			}
			from, to := tc.change(r, base, sync)
			sync()
			got, err := source.Changes(ctx, dir, from, to)
			if err != nil {
				t.Fatal(err)
			}
			checkChanges(t, got, tc.want)
		})
	}
}

func checkChanges(t *testing.T, got []source.Change, want []want) {
	t.Helper()
	var g, w []string
	for _, c := range got {
		g = append(g, fmt.Sprintf("%s meta=%v deleted=%v invalid=%v", c.Project, c.MetadataChanged, c.Deleted, c.Err != nil))
	}
	for _, c := range want {
		w = append(w, fmt.Sprintf("%s meta=%v deleted=%v invalid=%v", c.project, c.meta, c.deleted, c.invalid))
	}
	if strings.Join(g, "\n") != strings.Join(w, "\n") {
		t.Fatalf("changes:\n%s\nwant:\n%s", strings.Join(g, "\n"), strings.Join(w, "\n"))
	}
}

func hugeCommit(tb testing.TB, n int) (dir, from, to string) {
	r := sourcetest.New(tb)
	from = r.CommitAndPush("base", baseTree())
	files := map[string]string{}
	for i := range n {
		files[fmt.Sprintf("%s/src/d%02d/file%05d.c", xclock, i%50, i)] = fmt.Sprint("int x", i, ";")
	}
	to = r.CommitAndPush("huge", files)
	dir = filepath.Join(tb.TempDir(), "sources")
	if _, err := source.Update(tb.Context(), dir, r.URL(), "main", nil); err != nil {
		tb.Fatal(err)
	}
	return dir, from, to
}

func TestChangesHugeCommit(t *testing.T) {
	dir, from, to := hugeCommit(t, 3000)
	start := time.Now()
	got, err := source.Changes(t.Context(), dir, from, to)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("3000 changed files compared in %v", time.Since(start))
	checkChanges(t, got, []want{{project: xclock}})
}

// BenchmarkChangesHugeCommit measures comparing a commit that adds 3,000
// files to one package.
func BenchmarkChangesHugeCommit(b *testing.B) {
	dir, from, to := hugeCommit(b, 3000)
	for b.Loop() {
		if _, err := source.Changes(b.Context(), dir, from, to); err != nil {
			b.Fatal(err)
		}
	}
}

func TestChangesRejectsBadCommits(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range [][2]string{
		{"", "HEAD"},
		{"HEAD~1", strings.Repeat("a", 40)},
		{"", "--output=/tmp/x"},
	} {
		if _, err := source.Changes(t.Context(), dir, tc[0], tc[1]); err == nil {
			t.Errorf("Changes(%q, %q) accepted a non-hex commit", tc[0], tc[1])
		}
	}
}

func TestReadFiles(t *testing.T) {
	ctx := t.Context()
	r := sourcetest.New(t)
	big := strings.Repeat("x", 200<<10) // larger than a pipe buffer
	head := r.CommitAndPush("files", map[string]string{
		"projects/a/.cb/cloud_builder.yml": "name: a",
		"projects/a/empty":                 "",
		"projects/a/big":                   big,
		"projects/a/sub/file":              "sub",
	})
	dir := filepath.Join(t.TempDir(), "sources")
	if _, err := source.Update(ctx, dir, r.URL(), "main", nil); err != nil {
		t.Fatal(err)
	}
	paths := []string{"projects/a/.cb/cloud_builder.yml", "projects/missing", "projects/a/empty", "projects/a/sub", "projects/a/big", "projects/a/sub/file"}
	type result struct {
		data string
		err  error
	}
	got := map[string]result{}
	var order []string
	err := source.ReadFiles(ctx, dir, head, paths, 100<<10, func(p string, data []byte, err error) {
		got[p] = result{string(data), err}
		order = append(order, p)
	})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(order, ",") != strings.Join(paths, ",") {
		t.Fatalf("callback order %v, want %v", order, paths)
	}
	for _, tc := range []struct {
		path, data string
		err        error
	}{
		{"projects/a/.cb/cloud_builder.yml", "name: a", nil},
		{"projects/missing", "", fs.ErrNotExist},
		{"projects/a/empty", "", nil},
		{"projects/a/sub", "", fs.ErrNotExist},
		{"projects/a/big", "", message.ErrTooLarge},
		{"projects/a/sub/file", "sub", nil},
	} {
		g := got[tc.path]
		if g.data != tc.data || !errors.Is(g.err, tc.err) || (tc.err == nil && g.err != nil) {
			t.Errorf("%s: got %.20q, %v; want %q, %v", tc.path, g.data, g.err, tc.data, tc.err)
		}
	}
	// Within the limit, a file larger than a pipe buffer arrives whole.
	err = source.ReadFiles(ctx, dir, head, []string{"projects/a/big"}, 1<<20, func(p string, data []byte, err error) {
		if err != nil || string(data) != big {
			t.Errorf("big file: %d bytes, %v", len(data), err)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
}
