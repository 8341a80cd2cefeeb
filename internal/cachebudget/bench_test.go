package cachebudget

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// benchTree makes a root-like tree: files of a few KiB in 200
// directories.
func benchTree(b *testing.B, dir string, files int) {
	b.Helper()
	data := make([]byte, 3000)
	for i := 0; i < files; i++ {
		d := filepath.Join(dir, fmt.Sprintf("d%03d", i%200))
		if err := os.MkdirAll(d, 0o755); err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, fmt.Sprintf("f%d", i)), data, 0o644); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEnforce is the check after each prepare with 8 roots of 20000
// files: walked (first check) and remembered (every later one).
func BenchmarkEnforce(b *testing.B) {
	dir := b.TempDir()
	for i := 0; i < 8; i++ {
		benchTree(b, filepath.Join(dir, fmt.Sprintf("root%d", i)), 20000)
	}
	for _, stable := range []bool{false, true} {
		name := "walked"
		if stable {
			name = "remembered"
		}
		b.Run(name, func(b *testing.B) {
			src := dirSource{dir: dir, stable: stable}
			state := b.TempDir()
			if _, err := Enforce(context.Background(), state, 1<<50, []Source{src}, nil); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for b.Loop() {
				if _, err := Enforce(context.Background(), state, 1<<50, []Source{src}, nil); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
