package buildroot_test

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cloud-builder/cb/internal/buildroot"
)

// Benchmarks of buildroot creation for the Debian example; each iteration
// is one prepare, so run them with -benchtime=1x (see bench/prepare.sh).
//
//	ColdPrepare               empty cache and empty download cache
//	ColdPrepareWarmDownloads  fresh root, packages already downloaded
//	WarmPrepare               cache hit: stage the sources, nothing installed

func benchPrepare(b *testing.B, opts buildroot.Options, root string) *buildroot.Layout {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	tg := newTarget(b, root, "projects/Debian/cb-hello")
	logPath := filepath.Join(root, "prepare.log")
	f, err := os.Create(logPath)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	opts.Log = f
	opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	l, err := buildroot.Prepare(ctx, opts, debianExample, tg)
	if err != nil {
		data, _ := os.ReadFile(logPath)
		b.Fatalf("%v\n%s", err, data)
	}
	return l
}

func BenchmarkColdPrepare(b *testing.B) {
	for _, backend := range []string{buildroot.BackendKiwi, buildroot.BackendNative} {
		b.Run(backend, func(b *testing.B) {
			requireRootTools(b, "kiwi-ng", "mmdebstrap")
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				root := b.TempDir()
				b.StartTimer()
				l := benchPrepare(b, buildroot.Options{Backend: backend, NoDownloadCache: true}, root)
				b.StopTimer()
				if l.CacheHit {
					b.Fatal("cold prepare hit the cache")
				}
				b.StartTimer()
			}
		})
	}
}

func BenchmarkColdPrepareWarmDownloads(b *testing.B) {
	for _, backend := range []string{buildroot.BackendKiwi, buildroot.BackendNative} {
		b.Run(backend, func(b *testing.B) {
			requireRootTools(b, "kiwi-ng", "mmdebstrap")
			root := b.TempDir()
			b.StopTimer()
			benchPrepare(b, buildroot.Options{Backend: backend}, root)
			b.StartTimer()
			for i := 0; i < b.N; i++ {
				if l := benchPrepare(b, buildroot.Options{Backend: backend, Fresh: true}, root); l.CacheHit {
					b.Fatal("fresh prepare hit the cache")
				}
			}
		})
	}
}

func BenchmarkWarmPrepare(b *testing.B) {
	requireRootTools(b, "mmdebstrap")
	root := b.TempDir()
	b.StopTimer()
	benchPrepare(b, buildroot.Options{Backend: buildroot.BackendNative}, root)
	b.StartTimer()
	for i := 0; i < b.N; i++ {
		if l := benchPrepare(b, buildroot.Options{Backend: buildroot.BackendNative}, root); !l.CacheHit {
			b.Fatal("warm prepare missed the cache")
		}
	}
}
