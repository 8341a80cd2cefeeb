package fetch

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/cloud-builder/cb/internal/source"
)

// errNoState is returned by loadState when cb-fetch never completed a poll.
var errNoState = errors.New("no state")

// loadState returns the last processed commit stored at path.
func loadState(path string) (string, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return "", errNoState
	}
	if err != nil {
		return "", fmt.Errorf("read state: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 4096))
	if err != nil {
		return "", fmt.Errorf("read state %s: %w", path, err)
	}
	id := strings.TrimSpace(string(b))
	if !source.ValidCommit(id) {
		return "", fmt.Errorf("read state %s: %q is not a commit id", path, truncate(id, 80))
	}
	return id, nil
}

// saveState stores commit at path so that neither a crash nor a power cut
// can leave a torn file behind: the new content is written to a temporary
// file in the same directory, synced, renamed over the old one, and the
// directory is synced so the rename itself is durable.
func saveState(path, commit string) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	tmp, err := os.CreateTemp(dir, filepath.Base(path)+".tmp-")
	if err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	if _, err := tmp.WriteString(commit + "\n"); err != nil {
		tmp.Close()
		return fmt.Errorf("save state: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("save state: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("save state: sync %s: %w", dir, err)
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
