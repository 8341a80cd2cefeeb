package broker

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/cloud-builder/cb/internal/tlstest"
)

// vmHWM returns the peak resident set size of this process in bytes.
func vmHWM(t testing.TB) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skipf("no /proc/self/status: %v", err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatalf("VmHWM %q: %v", v, err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmHWM in /proc/self/status")
	return 0
}

// frame is a request frame: a 4-byte length, then body.
func frame(size uint32, body []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, size)
	return append(b, body...)
}

// header is the start of a request body: API key, version, correlation
// id and a null client id.
func header(key, version int16) []byte {
	b := binary.BigEndian.AppendUint16(nil, uint16(key))
	b = binary.BigEndian.AppendUint16(b, uint16(version))
	b = binary.BigEndian.AppendUint32(b, 1)
	return binary.BigEndian.AppendUint16(b, 0xffff)
}

// apiVersionsV0 is a complete ApiVersions v0 request, padded to size bytes
// of body; the broker ignores what follows its (empty) fields.
func apiVersionsV0(size int) []byte {
	body := header(18, 0)
	body = append(body, make([]byte, size-len(body))...)
	return frame(uint32(len(body)), body)
}

// dial connects to the broker like any unauthenticated client would.
func dial(t *testing.T, addr string, tc *tls.Config) net.Conn {
	t.Helper()
	var c net.Conn
	var err error
	if tc != nil {
		c, err = tls.Dial("tcp", addr, tc)
	} else {
		c, err = net.Dial("tcp", addr)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// closedByBroker reports whether the broker hangs up on c within d,
// without sending a response.
func closedByBroker(c net.Conn, d time.Duration) error {
	_ = c.SetReadDeadline(time.Now().Add(d))
	n, err := c.Read(make([]byte, 1))
	switch {
	case n > 0:
		return errors.New("the broker answered")
	case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed), err != nil && strings.Contains(err.Error(), "connection reset"):
		return nil
	default:
		return err
	}
}

// hostileFrames are sent by an unauthenticated client, each on its own
// connection. Every one must make the broker hang up, without a response
// and without allocating the announced size.
func hostileFrames() map[string][]byte {
	garbage := make([]byte, 4096)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range garbage {
		garbage[i] = byte(rng.Uint32())
	}
	fourGiB := bytes.Repeat(frame(0xffffffff, nil), 4)
	return map[string][]byte{
		"four 4 GiB headers":       fourGiB,
		"2 GiB header":             frame(1<<31-1, header(0, 9)),
		"just above the cap":       frame(DefaultMaxRequestBytes+1, header(0, 9)),
		"negative length":          frame(0x80000000, header(0, 9)),
		"empty frame":              frame(0, nil),
		"shorter than a header":    frame(3, []byte{0, 18, 0}),
		"unknown api key":          frame(10, header(999, 0)),
		"negative api key":         frame(10, header(-1, 0)),
		"negative version":         frame(10, header(18, -3)),
		"random bytes":             garbage,
		"known key, random body":   frame(uint32(len(garbage)+10), append(header(0, 9), garbage...)),
		"metadata, truncated body": frame(100, header(3, 12)),
	}
}

// TestEmbeddedSurvivesHostileFrames is the attack of an unauthenticated
// client on the broker port: oversized length headers and garbage. The
// broker must hang up on each without allocating what they announce, and
// serve a normal client afterwards.
func TestEmbeddedSurvivesHostileFrames(t *testing.T) {
	e := newCluster(t, withTopics(1, "after"))
	addr := e.Addrs()[0]

	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	hwmBefore := vmHWM(t)

	for name, b := range hostileFrames() {
		t.Run(name, func(t *testing.T) {
			c := dial(t, addr, nil)
			if _, err := c.Write(b); err != nil {
				t.Fatal(err)
			}
			if strings.Contains(name, "truncated") {
				// A body that never comes: the client gives up.
				c.(*net.TCPConn).CloseWrite()
			}
			if err := closedByBroker(c, 10*time.Second); err != nil {
				t.Fatalf("broker did not hang up: %v", err)
			}
		})
	}

	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	hwmAfter := vmHWM(t)
	allocated := int64(after.TotalAlloc - before.TotalAlloc)
	t.Logf("hostile frames: %d MiB allocated in all, peak RSS %d MiB before, %d MiB after",
		allocated>>20, hwmBefore>>20, hwmAfter>>20)
	// Four 4 GiB headers alone would be 16 GiB; anything near the cap
	// (100 MiB) means a length got through.
	if allocated > 32<<20 {
		t.Errorf("%d MiB allocated while refusing hostile frames", allocated>>20)
	}
	if grew := hwmAfter - hwmBefore; grew > 32<<20 {
		t.Errorf("peak RSS grew by %d MiB", grew>>20)
	}

	// The broker still serves a normal client.
	ctx := testContext(t, 20*time.Second)
	publishN(t, ctx, newClient(t, e), "after", "ok", 3)
	if got := values(readAll(t, e, "after", 3)); len(got) != 3 {
		t.Fatalf("after the attack: %v", got)
	}
}

// TestEmbeddedBoundsBufferedRequests: clients that announce large requests
// and then stall may hold MaxBufferedBytes in all; one more large request
// waits until they are gone, small requests never wait.
func TestEmbeddedBoundsBufferedRequests(t *testing.T) {
	const max = 1 << 20
	e := newCluster(t, func(o *EmbeddedOptions) { o.MaxRequestBytes, o.MaxBufferedBytes = max, 2*max })
	addr := e.Addrs()[0]

	// Two stalled requests take the whole budget.
	var stalled []net.Conn
	for range 2 {
		c := dial(t, addr, nil)
		if _, err := c.Write(apiVersionsV0(max)[:100]); err != nil {
			t.Fatal(err)
		}
		stalled = append(stalled, c)
	}
	waitFor(t, 10*time.Second, "both stalled requests admitted", func() bool { return e.front.held.Load() == 2*max })
	// A complete large request waits for them …
	waiting := dial(t, addr, nil)
	if _, err := waiting.Write(apiVersionsV0(max)); err != nil {
		t.Fatal(err)
	}
	_ = waiting.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	if n, err := waiting.Read(make([]byte, 1)); n > 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("large request beyond the budget answered at once: %d, %v", n, err)
	}
	// … while a normal client is served.
	if err := newClient(t, e).Ping(testContext(t, 10*time.Second)); err != nil {
		t.Fatalf("small requests wait behind stalled large ones: %v", err)
	}
	// A stalled client that goes away gives its share back.
	stalled[0].Close()
	_ = waiting.SetReadDeadline(time.Now().Add(10 * time.Second))
	var size [4]byte
	if _, err := io.ReadFull(waiting, size[:]); err != nil {
		t.Fatalf("large request not answered once the budget was free: %v", err)
	}
	// Over the cap is refused outright.
	over := dial(t, addr, nil)
	if _, err := over.Write(apiVersionsV0(max + 1)[:100]); err != nil {
		t.Fatal(err)
	}
	if err := closedByBroker(over, 10*time.Second); err != nil {
		t.Fatalf("request over MaxRequestBytes: %v", err)
	}
}

// TestEmbeddedSASL: with users configured the broker refuses clients
// without credentials and with wrong ones, and serves the right ones, with
// and without TLS. Frames are checked behind TLS as well.
func TestEmbeddedSASL(t *testing.T) {
	dir := t.TempDir()
	ca := tlstest.NewCA(t, dir, "ca")
	srv := ca.Server(t, dir, "server")
	serverTLS := &tls.Config{Certificates: []tls.Certificate{srv.Pair}, MinVersion: tls.VersionTLS12}
	clientTLS, err := TLSConfig(ca.File, "", "")
	if err != nil {
		t.Fatal(err)
	}
	users := []SASL{{"SCRAM-SHA-512", "cb", "s3cret"}, {"PLAIN", "ctl", "other"}}
	for _, withTLS := range []bool{false, true} {
		t.Run("tls="+strconv.FormatBool(withTLS), func(t *testing.T) {
			var tc *tls.Config
			e := newCluster(t, withTopics(1, "secure"), func(o *EmbeddedOptions) {
				o.Users = users
				if withTLS {
					o.TLS, o.ClientTLS = serverTLS, clientTLS
					tc = clientTLS
				}
			})
			// The broker's own clients authenticate: topics were created.
			if o := e.ClientOptions("x", nil); o.SASL == nil || o.SASL.User != "cb" || (o.TLS != nil) != withTLS {
				t.Fatalf("client options: %+v", o)
			}
			for _, tt := range []struct {
				name string
				sasl *SASL
				ok   bool
			}{
				{"no credentials", nil, false},
				{"wrong password", &SASL{"SCRAM-SHA-512", "cb", "guess"}, false},
				{"unknown user", &SASL{"SCRAM-SHA-512", "eve", "s3cret"}, false},
				{"other mechanism", &SASL{"SCRAM-SHA-256", "cb", "s3cret"}, false},
				{"scram", &SASL{"SCRAM-SHA-512", "cb", "s3cret"}, true},
				{"plain", &SASL{"PLAIN", "ctl", "other"}, true},
			} {
				t.Run(tt.name, func(t *testing.T) {
					opts := Options{Brokers: e.Addrs(), SASL: tt.sasl, TLS: tc, Logger: testLogger()}
					cl, err := New(opts)
					if err != nil {
						t.Fatal(err)
					}
					defer cl.Close()
					if !tt.ok {
						// The right credentials take milliseconds.
						err := cl.Publish(testContext(t, 2*time.Second), "secure", []byte(tt.name))
						if err == nil {
							t.Fatal("published without valid credentials")
						}
						t.Logf("refused: %v", err)
						return
					}
					ctx := testContext(t, 10*time.Second)
					err = cl.Publish(ctx, "secure", []byte(tt.name))
					if err != nil {
						t.Fatalf("publish: %v", err)
					}
					// Once authenticated, requests beyond the limit
					// before authentication pass.
					big := make([]byte, maxUnauthenticated+100<<10)
					for i := range big {
						big[i] = byte(rand.Uint32()) // gzip must not shrink it
					}
					if err := cl.Publish(ctx, "secure", big); err != nil {
						t.Fatalf("publish %d KiB: %v", len(big)>>10, err)
					}
					con, err := NewConsumer(opts, ConsumerConfig{Topics: []string{"secure"}})
					if err != nil {
						t.Fatal(err)
					}
					defer con.Close()
					if recs, err := con.Poll(ctx); err != nil || len(recs) == 0 {
						t.Fatalf("poll = %v, %v", recs, err)
					}
				})
			}
			// Unauthenticated frames are checked behind TLS too.
			for _, name := range []string{"four 4 GiB headers", "unknown api key"} {
				c := dial(t, e.Addrs()[0], tc)
				if _, err := c.Write(hostileFrames()[name]); err != nil {
					t.Fatal(err)
				}
				if err := closedByBroker(c, 10*time.Second); err != nil {
					t.Fatalf("%s: %v", name, err)
				}
			}
			// Before authentication, a request is small (Kafka's
			// sasl.server.max.receive.size) even where the broker would
			// answer it.
			for _, size := range []int{maxUnauthenticated + 1, 4 << 20} {
				c := dial(t, e.Addrs()[0], tc)
				// The broker may hang up while the frame is still
				// being written: then the write fails.
				if _, err := c.Write(apiVersionsV0(size)); err != nil {
					continue
				}
				if err := closedByBroker(c, 10*time.Second); err != nil {
					t.Fatalf("%d bytes before authentication: %v", size, err)
				}
			}
			c := dial(t, e.Addrs()[0], tc)
			if _, err := c.Write(apiVersionsV0(1000)); err != nil {
				t.Fatal(err)
			}
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := io.ReadFull(c, make([]byte, 4)); err != nil {
				t.Fatalf("small API versions request before authentication: %v", err)
			}
			// A raw request before authentication gets no answer.
			c = dial(t, e.Addrs()[0], tc)
			if _, err := c.Write(frame(10, header(3, 0))); err != nil { // Metadata v0
				t.Fatal(err)
			}
			if err := closedByBroker(c, 10*time.Second); err != nil {
				t.Fatalf("metadata before authentication: %v", err)
			}
		})
	}
}

func TestEmbeddedRefusesBadSecurityOptions(t *testing.T) {
	for name, o := range map[string]EmbeddedOptions{
		"mechanism":       {Users: []SASL{{"GSSAPI", "cb", "x"}}},
		"empty user":      {Users: []SASL{{"PLAIN", "", "x"}}},
		"empty password":  {Users: []SASL{{"PLAIN", "cb", ""}}},
		"user twice":      {Users: []SASL{{"PLAIN", "cb", "x"}, {"plain", "cb", "y"}}},
		"tls without key": {TLS: &tls.Config{}},
	} {
		t.Run(name, func(t *testing.T) {
			o.Listen, o.Logger = "127.0.0.1:0", testLogger()
			if e, err := StartEmbedded(o); err == nil {
				e.Close()
				t.Fatal("started")
			}
		})
	}
}

// BenchmarkHostileFrames measures what refusing oversized headers costs:
// every iteration sends four 4 GiB length headers on a fresh connection.
// Peak RSS (VmHWM) is reported after all iterations.
func BenchmarkHostileFrames(b *testing.B) {
	e, err := StartEmbedded(EmbeddedOptions{Listen: "127.0.0.1:0", Logger: testLogger()})
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	msg := hostileFrames()["four 4 GiB headers"]
	b.ReportAllocs()
	for b.Loop() {
		c, err := net.Dial("tcp", e.Addrs()[0])
		if err != nil {
			b.Fatal(err)
		}
		if _, err := c.Write(msg); err != nil {
			b.Fatal(err)
		}
		if err := closedByBroker(c, 10*time.Second); err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
	b.ReportMetric(float64(vmHWM(b))/(1<<20), "peakRSS-MiB")
}

// TestEmbeddedSurvivesRandomRequests sends every API key the broker knows,
// at every version, with random bodies; the broker must neither stop nor
// stop serving.
func TestEmbeddedSurvivesRandomRequests(t *testing.T) {
	e := newCluster(t, withTopics(1, "after"))
	rng := rand.New(rand.NewPCG(3, 4))
	sent := 0
	for key := int16(0); key < 200; key++ {
		req := kmsg.RequestForKey(key)
		if req == nil {
			continue
		}
		for v := int16(0); v <= req.MaxVersion()+1; v++ {
			c, err := net.Dial("tcp", e.Addrs()[0])
			if err != nil {
				t.Fatal(err)
			}
			var msg []byte
			for range 3 {
				body := header(key, v)
				for range rng.IntN(64) {
					body = append(body, byte(rng.Uint32()))
				}
				msg = append(msg, frame(uint32(len(body)), body)...)
			}
			if _, err := c.Write(msg); err != nil {
				t.Fatal(err)
			}
			// Whatever the broker answers, it must not hang on to the
			// connection for ever, nor die.
			_ = c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
			_, _ = io.Copy(io.Discard, c)
			c.Close()
			sent++
		}
	}
	t.Logf("%d connections with random requests", sent)
	ctx := testContext(t, 20*time.Second)
	publishN(t, ctx, newClient(t, e), "after", "ok", 1)
	if got := readAll(t, e, "after", 1); len(got) != 1 {
		t.Fatalf("after random requests: %v", got)
	}
}

// TestEmbeddedUsersFollowTheConfiguration: across restarts on one data
// dir, the users given are the users accepted: a changed password takes
// effect at once, the old one is refused, and a data dir from a run
// without credentials does not leave the broker without users.
func TestEmbeddedUsersFollowTheConfiguration(t *testing.T) {
	dir := t.TempDir()
	publish := func(e *Embedded, a *SASL) error {
		cl, err := New(Options{Brokers: e.Addrs(), SASL: a, Logger: testLogger()})
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		return cl.Publish(testContext(t, 2*time.Second), "t", []byte("x"))
	}
	e := newCluster(t, withDataDir(dir), withTopics(1, "t"))
	if err := publish(e, nil); err != nil {
		t.Fatalf("without users: %v", err)
	}
	e.Close()
	for _, pass := range []string{"first", "second"} {
		users := []SASL{{"SCRAM-SHA-256", "cb", pass}, {"PLAIN", "p", pass}}
		e := newCluster(t, withDataDir(dir), withTopics(1, "t"), func(o *EmbeddedOptions) { o.Users = users })
		for _, u := range users {
			if err := publish(e, &u); err != nil {
				t.Fatalf("%s %s/%s after a restart: %v", u.Mechanism, u.User, pass, err)
			}
			if pass == "second" {
				old := u
				old.Password = "first"
				if err := publish(e, &old); err == nil {
					t.Errorf("%s: the old password still works", u.Mechanism)
				}
			}
		}
		e.Close()
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("data dir: %v, %v; want mode 0700", fi.Mode(), err)
	}
}

// TestEmbeddedBoundsConnections: connections beyond MaxConnections are
// closed at once; once others go, clients are served again.
func TestEmbeddedBoundsConnections(t *testing.T) {
	e := newCluster(t, withTopics(1, "t"), func(o *EmbeddedOptions) { o.MaxConnections = 4 })
	// The broker's own client, gone after the start, is noticed first.
	waitFor(t, 10*time.Second, "no connections", func() bool { return e.front.conns.Load() == 0 })
	var idle []net.Conn
	for range 4 {
		idle = append(idle, dial(t, e.Addrs()[0], nil))
	}
	waitFor(t, 10*time.Second, "four connections accepted", func() bool { return e.front.conns.Load() == 4 })
	if err := closedByBroker(dial(t, e.Addrs()[0], nil), 5*time.Second); err != nil {
		t.Fatalf("connection beyond the limit: %v", err)
	}
	for _, c := range idle {
		c.Close()
	}
	publishN(t, testContext(t, 20*time.Second), newClient(t, e), "t", "ok", 1)
}
