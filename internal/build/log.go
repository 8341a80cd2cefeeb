package build

import (
	"fmt"
	"io"
	"sync"
)

// cappedLog passes build output to the log until max bytes were written,
// then notes the truncation once and swallows the rest. It never fails a
// write, so a chatty build keeps running with its log cut short instead of
// dying of a broken pipe.
type cappedLog struct {
	mu        sync.Mutex
	w         io.Writer
	max       int64 // <= 0: no cap
	n         int64
	truncated bool
	err       error // first write error of the underlying log
}

func (c *cappedLog) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.truncated {
		return len(p), nil
	}
	q := p
	if c.max > 0 && c.n+int64(len(p)) > c.max {
		q = p[:c.max-c.n]
		c.truncated = true
	}
	c.write(q)
	if c.truncated {
		c.write([]byte(fmt.Sprintf("\n[build log truncated: it reached the limit of %d bytes; the build goes on]\n", c.max)))
	}
	return len(p), nil
}

func (c *cappedLog) write(p []byte) {
	if len(p) == 0 || c.err != nil {
		return
	}
	n, err := c.w.Write(p)
	c.n += int64(n)
	c.err = err
}

// Printf writes a line of the build's own (header, footer, step) outside
// the cap, so the log always says how the build ended.
func (c *cappedLog) Printf(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err == nil {
		_, c.err = fmt.Fprintf(c.w, format, args...)
	}
}
