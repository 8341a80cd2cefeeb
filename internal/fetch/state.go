package fetch

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/cloud-builder/cb/internal/atomicfile"
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

// saveState stores commit at path durably (fsync of the file and the
// directory), so neither a crash nor a power cut leaves a torn file.
func saveState(path, commit string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	if err := atomicfile.WriteFile(path, []byte(commit+"\n"), 0o600); err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
