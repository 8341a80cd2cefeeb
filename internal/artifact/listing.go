package artifact

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/cloud-builder/cb/internal/target"
)

// File is one entry of a binaries listing.
type File struct {
	Name   string `json:"name"` // path below the target's binaries directory, '/'-separated
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// Listing is the JSON document served for binaries/.
type Listing struct {
	Files []File `json:"files"`
}

func (h *handler) serveListing(w http.ResponseWriter, r *http.Request, root *os.Root, t target.Target, log *slog.Logger) {
	l, err := h.list(root, t.Binaries(), log)
	if err != nil {
		notFound(w, err, log)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "    ")
	if err := enc.Encode(l); err != nil {
		log.Debug("write listing", "err", err)
	}
}

// list walks the binaries directory. Only regular files whose every path
// element is a valid name are listed: exactly what the download route
// would serve. Symbolic links are skipped rather than followed.
func (h *handler) list(root *os.Root, dir string, log *slog.Logger) (*Listing, error) {
	fi, err := root.Stat(dir)
	if err != nil {
		return nil, err
	}
	if !fi.IsDir() {
		return nil, errors.New("binaries is not a directory")
	}
	l := &Listing{Files: []File{}}
	fsys := root.FS()
	err = fs.WalkDir(fsys, dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == dir || d.IsDir() {
			return nil
		}
		rel := strings.TrimPrefix(p, dir+"/")
		if !d.Type().IsRegular() {
			log.Debug("binaries listing skips non-regular file", "path", rel)
			return nil
		}
		if err := validateRelPath(rel); err != nil {
			log.Warn("binaries listing skips file with an unsafe name", "path", rel)
			return nil
		}
		f, err := h.hashes.file(root, p, rel)
		if err != nil {
			return err
		}
		l.Files = append(l.Files, f)
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.Slice(l.Files, func(i, j int) bool { return l.Files[i].Name < l.Files[j].Name })
	return l, nil
}

// hashCache remembers digests by path, size and modification time, so a
// listing of a multi-gigabyte image is hashed once, not per request.
type hashCache struct {
	mu sync.Mutex
	m  map[string]hashEntry
}

type hashEntry struct {
	size  int64
	mtime time.Time
	sum   string
}

const maxHashEntries = 50_000

func newHashCache() *hashCache { return &hashCache{m: map[string]hashEntry{}} }

func (c *hashCache) file(root *os.Root, p, rel string) (File, error) {
	f, fi, err := openRegular(root, p)
	if err != nil {
		return File{}, err
	}
	defer f.Close()
	c.mu.Lock()
	e, ok := c.m[p]
	c.mu.Unlock()
	if ok && e.size == fi.Size() && e.mtime.Equal(fi.ModTime()) {
		return File{Name: rel, Size: e.size, SHA256: e.sum}, nil
	}
	hsh := sha256.New()
	n, err := io.Copy(hsh, f)
	if err != nil {
		return File{}, err
	}
	e = hashEntry{size: n, mtime: fi.ModTime(), sum: hex.EncodeToString(hsh.Sum(nil))}
	if n == fi.Size() {
		c.mu.Lock()
		if len(c.m) >= maxHashEntries {
			c.m = map[string]hashEntry{}
		}
		c.m[p] = e
		c.mu.Unlock()
	}
	return File{Name: rel, Size: n, SHA256: e.sum}, nil
}
