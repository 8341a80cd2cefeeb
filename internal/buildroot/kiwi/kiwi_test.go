package kiwi

import (
	"slices"
	"testing"
)

func TestCommand(t *testing.T) {
	got := Command("bookworm.x86_64", "/w/description", "/cache/tmp-1", "/cache/downloads/kiwi", []string{"build-essential", "debhelper-compat"})
	want := []string{"kiwi-ng", "--profile", "bookworm.x86_64", "--shared-cache-dir", "/cache/downloads/kiwi",
		"system", "prepare", "--description", "/w/description", "--allow-existing-root", "--root", "/cache/tmp-1",
		"--add-package=build-essential", "--add-package=debhelper-compat"}
	if !slices.Equal(got, want) {
		t.Fatalf("argv = %q\nwant %q", got, want)
	}
}
