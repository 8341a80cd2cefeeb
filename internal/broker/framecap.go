package broker

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
	"golang.org/x/sync/semaphore"
)

// Limits of the request frames the embedded broker accepts. kfake reads
// the 4-byte length of a request and allocates that much before it looks
// at a single byte of the body, and it panics on an API key it does not
// know; frameCapListener stands between the network and kfake so that
// neither a length nor a key from an unauthenticated client reaches it
// unchecked.
const (
	// DefaultMaxRequestBytes is Kafka's socket.request.max.bytes default:
	// the largest request frame accepted.
	DefaultMaxRequestBytes = 100 << 20
	// DefaultMaxBufferedBytes bounds the request bodies being received
	// on all connections together.
	DefaultMaxBufferedBytes = 256 << 20
	// DefaultMaxConnections bounds the open client connections: each may
	// hold a small request (below smallFrame) without a share of the
	// buffer budget.
	DefaultMaxConnections = 4096
	// smallFrame is the size below which a frame needs no share of the
	// buffer budget: requests of this implementation's services are a
	// few KiB, and they must not wait behind large ones.
	smallFrame = 64 << 10
	// minFrame is the smallest possible request: API key, version,
	// correlation id and the client id length.
	minFrame = 2 + 2 + 4 + 2
	// maxUnauthenticated is the largest request before a client has
	// authenticated, when the broker requires SASL: Kafka's
	// sasl.server.max.receive.size. The requests allowed then (API
	// versions and the SASL exchange) are small.
	maxUnauthenticated = 512 << 10
	// bodyGrace plus one second per MiB is how long a client may take to
	// send the body of a request once its header is accepted; a client
	// that trickles the body of a large frame would otherwise hold its
	// share of the buffer budget for ever.
	bodyGrace = 30 * time.Second
)

// errFrameRefused ends a connection whose request frame is refused.
var errFrameRefused = errors.New("request frame refused")

// frameCapListener hands out connections whose request frames are checked
// before the broker reads them.
type frameCapListener struct {
	net.Listener
	max    uint32
	budget *semaphore.Weighted
	log    *slog.Logger

	maxConns int64
	conns    atomic.Int64 // open connections
	held     atomic.Int64 // budget held by large requests being received

	// sasl: clients must authenticate, and until they have, requests
	// are limited to maxUnauthenticated.
	sasl bool
}

func newFrameCapListener(ln net.Listener, maxRequest, maxBuffered int64, maxConns int, sasl bool, log *slog.Logger) *frameCapListener {
	if maxRequest <= 0 {
		maxRequest = DefaultMaxRequestBytes
	}
	if maxRequest > 1<<31-1 {
		maxRequest = 1<<31 - 1 // the length is a signed 32-bit integer
	}
	if maxBuffered <= 0 {
		maxBuffered = DefaultMaxBufferedBytes
	}
	if maxBuffered < maxRequest {
		maxBuffered = maxRequest
	}
	if maxConns <= 0 {
		maxConns = DefaultMaxConnections
	}
	return &frameCapListener{Listener: ln, max: uint32(maxRequest), budget: semaphore.NewWeighted(maxBuffered), log: log, maxConns: int64(maxConns), sasl: sasl}
}

// Accept returns the next connection; one beyond the connection limit is
// closed at once.
func (l *frameCapListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.conns.Add(1) > l.maxConns {
			l.conns.Add(-1)
			l.log.Warn("too many client connections; closing a new one", "client", c.RemoteAddr(), "max", l.maxConns)
			c.Close()
			continue
		}
		ctx, cancel := context.WithCancel(context.Background())
		return &frameCapConn{Conn: c, l: l, ctx: ctx, cancel: cancel, authCorr: map[int32]int16{}}, nil
	}
}

// frameCapConn passes a request stream through frame by frame: a header
// (length, API key, version, correlation id) is read and checked in full
// before any of it reaches the reader, and the body that follows is passed
// on unchanged. With SASL it watches the broker's answers to the SASL
// exchange to learn when the client has authenticated.
type frameCapConn struct {
	net.Conn
	l      *frameCapListener
	ctx    context.Context // cancelled by Close: stops a wait for budget
	cancel context.CancelFunc

	// Read is called by one goroutine at a time (kfake's reader); the
	// fields below are that goroutine's alone, which is why the budget is
	// given back by Read, when the closed connection fails it, and not by
	// Close.
	hdr     [12]byte
	pending []byte // checked header bytes not yet returned
	remain  int64  // body bytes of the current frame not yet returned
	held    int64  // budget held for the current frame

	closeOnce sync.Once

	// The SASL exchange: correlation ids (and versions) of authenticate
	// requests not yet answered, and whether one completed.
	mu       sync.Mutex
	authCorr map[int32]int16
	authed   atomic.Bool
}

func (c *frameCapConn) Read(p []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	if c.remain > 0 {
		if int64(len(p)) > c.remain {
			p = p[:c.remain]
		}
		n, err := c.Conn.Read(p)
		c.remain -= int64(n)
		switch {
		case c.remain == 0:
			c.release()
			// The next header is read in full under its own check.
			_ = c.Conn.SetReadDeadline(time.Time{})
		case err != nil:
			// The frame will never be complete: kfake drops the
			// connection on any read error.
			c.release()
		}
		return n, err
	}
	if _, err := io.ReadFull(c.Conn, c.hdr[:4]); err != nil {
		return 0, err
	}
	size := binary.BigEndian.Uint32(c.hdr[:4])
	limit := c.l.max
	if c.l.sasl && !c.authed.Load() {
		limit = min(limit, maxUnauthenticated)
	}
	if size < minFrame || size > limit {
		return 0, c.refuse(fmt.Errorf("request of %d bytes (allowed %d to %d)", int32(size), minFrame, limit))
	}
	if _, err := io.ReadFull(c.Conn, c.hdr[4:12]); err != nil {
		return 0, err
	}
	key := int16(binary.BigEndian.Uint16(c.hdr[4:6]))
	version := int16(binary.BigEndian.Uint16(c.hdr[6:8]))
	corr := int32(binary.BigEndian.Uint32(c.hdr[8:12]))
	req := kmsg.RequestForKey(key)
	if req == nil {
		return 0, c.refuse(fmt.Errorf("unknown API key %d", key))
	}
	if version < 0 {
		return 0, c.refuse(fmt.Errorf("%s version %d", kmsg.NameForKey(key), version))
	}
	if size > smallFrame {
		if err := c.l.budget.Acquire(c.ctx, int64(size)); err != nil {
			return 0, fmt.Errorf("wait for request buffer: %w", err)
		}
		c.held = int64(size)
		c.l.held.Add(c.held)
		// A body that does not arrive in time gives its budget back.
		_ = c.Conn.SetReadDeadline(time.Now().Add(bodyGrace + time.Duration(size>>20)*time.Second))
	}
	if c.l.sasl && key == int16(kmsg.SASLAuthenticate) {
		c.mu.Lock()
		if len(c.authCorr) < 16 { // one at a time is the protocol
			c.authCorr[corr] = version
		}
		c.mu.Unlock()
	}
	c.remain = int64(size) - 8 // key, version and correlation id are part of the body
	c.pending = c.hdr[:12]
	n := copy(p, c.pending)
	c.pending = c.pending[n:]
	return n, nil
}

// Write passes a response on; kfake writes each response with one call.
// Before a client has authenticated, the answers to its authenticate
// requests are read: one without error that ends the exchange (PLAIN:
// nothing to say; SCRAM: the server's final message, "v=…") means it has.
// kfake answers a failed exchange by closing the connection.
func (c *frameCapConn) Write(b []byte) (int, error) {
	if c.l.sasl && !c.authed.Load() && len(b) >= 8 {
		corr := int32(binary.BigEndian.Uint32(b[4:8]))
		c.mu.Lock()
		version, ok := c.authCorr[corr]
		delete(c.authCorr, corr)
		c.mu.Unlock()
		if ok && authenticated(version, b[8:]) {
			c.authed.Store(true)
		}
	}
	return c.Conn.Write(b)
}

// authenticated reports whether body, a SASLAuthenticate response of
// version after the correlation id, completes the exchange.
func authenticated(version int16, body []byte) bool {
	resp := kmsg.NewPtrSASLAuthenticateResponse()
	resp.SetVersion(version)
	if resp.IsFlexible() {
		if len(body) == 0 || body[0] != 0 { // kfake's empty header tags
			return false
		}
		body = body[1:]
	}
	if err := resp.ReadFrom(body); err != nil || resp.ErrorCode != 0 {
		return false
	}
	return len(resp.SASLAuthBytes) == 0 || bytes.HasPrefix(resp.SASLAuthBytes, []byte("v="))
}

func (c *frameCapConn) refuse(why error) error {
	c.l.log.Warn("refused request frame; closing the connection", "client", c.RemoteAddr(), "reason", why)
	_ = c.Close()
	return fmt.Errorf("%w: %w", errFrameRefused, why)
}

func (c *frameCapConn) release() {
	if c.held > 0 {
		c.l.held.Add(-c.held)
		c.l.budget.Release(c.held)
		c.held = 0
	}
}

func (c *frameCapConn) Close() error {
	err := c.Conn.Close()
	c.closeOnce.Do(func() {
		c.cancel()
		c.l.conns.Add(-1)
	})
	return err
}
