package collect_test

import (
	"os"
	"testing"
)

func TestMain(m *testing.M) {
	code := m.Run()
	// The benchmark's synthetic packages are shared between its
	// sub-benchmarks, so they live outside any one TempDir.
	synthOnce.Range(func(_, v any) bool {
		if s := v.(*synthSet); s.dir != "" {
			os.RemoveAll(s.dir)
		}
		return true
	})
	os.Exit(code)
}
