package artifact

import (
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/cloud-builder/cb/internal/proc"
	"github.com/cloud-builder/cb/internal/target"
)

// serveLog serves a log file, or with follow streams it: everything there
// is, then new bytes as the build writes them, until the log's phase is
// over. The build log's phase ends with the build; the prepare log's
// phase also ends as soon as the build log exists.
func (h *handler) serveLog(w http.ResponseWriter, r *http.Request, root *os.Root, t target.Target, rel string, follow bool, log *slog.Logger) {
	if !follow {
		serveFile(w, r, root, rel, "text/plain; charset=utf-8", log)
		return
	}
	ctx := r.Context()
	var notRunningSince time.Time
	ended := h.endedFunc(&notRunningSince)
	over := func() bool {
		if rel == t.PrepareLog() && exists(root, t.BuildLog()) {
			return true
		}
		return ended(root, t)
	}

	header := func() {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusOK)
	}
	rc := http.NewResponseController(w)

	f, _, err := openRegular(root, rel)
	if errors.Is(err, fs.ErrNotExist) && !over() {
		// The build runs but has not started this log yet: answer at
		// once (a client must not time out waiting for headers), then
		// wait for the log; if the phase ends without one, the stream
		// ends empty.
		header()
		if rc.Flush() != nil {
			return
		}
		for {
			// Decide before opening: a log written and finished in
			// between is still read.
			done := over()
			if f, _, err = openRegular(root, rel); !errors.Is(err, fs.ErrNotExist) {
				break
			}
			if done || !proc.Sleep(ctx, h.cfg.PollInterval) {
				return
			}
		}
		if err != nil {
			log.Warn("open followed log", "err", err)
			return
		}
	} else if err != nil {
		notFound(w, err, log)
		return
	} else {
		header()
	}
	defer func() { f.Close() }()

	buf := make([]byte, 32<<10)
	var offset int64
	for {
		// Decide about the end before draining: bytes written before
		// the build ended are then always sent.
		done := over()
		for {
			n, err := f.Read(buf)
			if n > 0 {
				if _, werr := w.Write(buf[:n]); werr != nil {
					return
				}
				offset += int64(n)
			}
			if err == io.EOF || n == 0 {
				break
			}
			if err != nil {
				log.Warn("read followed log", "err", err)
				return
			}
		}
		if err := rc.Flush(); err != nil {
			return
		}
		if done {
			return
		}
		if !proc.Sleep(ctx, h.cfg.PollInterval) {
			return
		}
		// A new build truncates or replaces the log: start over.
		if nf, replaced := reopened(root, rel, f, offset); replaced {
			f.Close()
			f, offset = nf, 0
		}
	}
}

// endedFunc returns the end test of a followed build: the build process
// is gone and the result file is written, or the process has been gone for
// EndGrace without one (a job that died before writing its result).
func (h *handler) endedFunc(since *time.Time) func(*os.Root, target.Target) bool {
	return func(root *os.Root, t target.Target) bool {
		if runningIn(root, t.PIDFile()) {
			*since = time.Time{}
			return false
		}
		if exists(root, t.ResultFile()) {
			return true
		}
		if since.IsZero() {
			*since = time.Now()
		}
		return time.Since(*since) >= h.cfg.EndGrace
	}
}

// reopened reports whether rel now names another file than f, or f shrank
// below what was already sent, and returns the newly opened file if so.
func reopened(root *os.Root, rel string, f *os.File, offset int64) (*os.File, bool) {
	cur, err := f.Stat()
	if err != nil {
		return nil, false
	}
	nf, nfi, err := openRegular(root, rel)
	if err != nil {
		return nil, false
	}
	if !os.SameFile(cur, nfi) || nfi.Size() < offset {
		return nf, true
	}
	nf.Close()
	return nil, false
}

func exists(root *os.Root, rel string) bool {
	_, err := root.Stat(rel)
	return err == nil
}
