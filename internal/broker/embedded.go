package broker

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// EmbeddedOptions configure the in-process broker.
type EmbeddedOptions struct {
	// Listen is the address to listen on, e.g. "127.0.0.1:9092"; port 0
	// picks a free port. "" means "127.0.0.1:0".
	Listen string
	// Advertise is the host clients are told to connect to. "" means the
	// listen host, or, when listening on all interfaces, this machine's
	// host name if it resolves (127.0.0.1 otherwise).
	Advertise string
	// DataDir keeps topics, records and committed offsets across
	// restarts. "" keeps everything in memory only.
	DataDir string
	// Fsync makes every write reach the disk before it is acknowledged,
	// so that acknowledged records also survive a power loss, not only a
	// crash of the process. Costs throughput.
	Fsync bool
	// Partitions is the partition count of the topics created at start
	// and of topics created implicitly. <= 0 means 1.
	Partitions int32
	// Topics are created in addition to FixedTopics, typically the
	// runner group topics.
	Topics []string
	// MinSessionTimeout is the shortest group session timeout members may
	// ask for; 0 keeps Kafka's 6s. Tests lower it to notice dead members
	// fast.
	MinSessionTimeout time.Duration
	Logger            *slog.Logger

	// MaxRequestBytes is the largest request frame a client may send;
	// a larger one closes its connection before anything is allocated
	// for it. <= 0 means DefaultMaxRequestBytes (Kafka's
	// socket.request.max.bytes).
	MaxRequestBytes int64
	// MaxBufferedBytes bounds the large request bodies being received
	// on all connections together; a client waits for its share. <= 0
	// means DefaultMaxBufferedBytes.
	MaxBufferedBytes int64
	// MaxConnections bounds the open client connections; more are closed
	// at once. <= 0 means DefaultMaxConnections.
	MaxConnections int
	// Users, when not empty, makes the broker require SASL: a client
	// must authenticate as one of them (PLAIN, SCRAM-SHA-256 or
	// SCRAM-SHA-512) before any other request. The broker's own clients
	// use the first.
	Users []SASL
	// TLS, when set, makes the broker speak TLS only; it needs a
	// certificate. ClientTLS is what the broker's own clients use to
	// reach it (nil: TLS with this machine's roots).
	TLS       *tls.Config
	ClientTLS *tls.Config

	// extra lets tests tune the cluster (e.g. shorter session timeouts).
	extra []kfake.Opt
}

// Embedded is a Kafka-protocol broker running inside this process.
type Embedded struct {
	cluster *kfake.Cluster
	lock    *os.File
	addrs   []string
	client  Options // how the broker's own clients connect
	front   *frameCapListener

	closeOnce sync.Once
	closeErr  error
}

// lockName is the file in the data directory that keeps a second broker
// from writing the same data at the same time.
const lockName = "cb-broker.lock"

// StartEmbedded starts the broker and creates FixedTopics and opts.Topics
// (existing topics are kept, and grown if they have fewer partitions).
func StartEmbedded(opts EmbeddedOptions) (*Embedded, error) {
	logger := opts.Logger
	if logger == nil {
		logger = slog.Default()
	}
	logger = logger.With("component", "embedded-broker")
	listen := opts.Listen
	if listen == "" {
		listen = "127.0.0.1:0"
	}
	host, portStr, err := net.SplitHostPort(listen)
	if err != nil {
		return nil, fmt.Errorf("embedded broker listen address %q: %w", listen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 65535 {
		return nil, fmt.Errorf("embedded broker listen address %q: bad port", listen)
	}
	advertise := opts.Advertise
	if advertise == "" {
		advertise = advertiseHost(host)
	}
	partitions := opts.Partitions
	if partitions <= 0 {
		partitions = 1
	}
	// A topic named twice (a runner group that is also a fixed topic, or
	// given by flag and config) would make the create request invalid.
	var topics []string
	for _, t := range append(append([]string(nil), FixedTopics...), opts.Topics...) {
		if !slices.Contains(topics, t) {
			topics = append(topics, t)
		}
	}
	for _, t := range topics {
		if err := ValidateTopic(t); err != nil {
			return nil, fmt.Errorf("embedded broker: %w", err)
		}
	}

	if err := validUsers(opts.Users); err != nil {
		return nil, fmt.Errorf("embedded broker: %w", err)
	}
	if opts.TLS != nil && len(opts.TLS.Certificates) == 0 && opts.TLS.GetCertificate == nil {
		return nil, errors.New("embedded broker: TLS without a certificate")
	}

	e := &Embedded{client: Options{Logger: logger}}
	kopts := []kfake.Opt{
		kfake.Ports(port),
		// TLS is terminated here rather than by kfake.TLS, below the
		// frame check, which must see the requests in plain text.
		kfake.ListenFn(func(network, _ string) (net.Listener, error) {
			ln, err := net.Listen(network, net.JoinHostPort(host, portStr))
			if err != nil {
				return nil, err
			}
			if opts.TLS != nil {
				ln = tls.NewListener(ln, opts.TLS.Clone())
			}
			e.front = newFrameCapListener(ln, opts.MaxRequestBytes, opts.MaxBufferedBytes, opts.MaxConnections, len(opts.Users) > 0, logger)
			return advertisedListener{e.front, advertise}, nil
		}),
		kfake.ClusterID("cloud-builder"),
		kfake.DefaultNumPartitions(int(partitions)),
		kfake.AllowAutoTopicCreation(),
		kfake.WithLogger(kfakeLogger{logger}),
	}
	if opts.DataDir != "" {
		if err := os.MkdirAll(opts.DataDir, 0o700); err != nil {
			return nil, fmt.Errorf("embedded broker data dir: %w", err)
		}
		if e.lock, err = lockDir(opts.DataDir); err != nil {
			return nil, err
		}
		if err := forgetUsers(opts.DataDir); err != nil {
			e.unlock()
			return nil, err
		}
		kopts = append(kopts, kfake.DataDir(opts.DataDir))
		if opts.Fsync {
			kopts = append(kopts, kfake.SyncWrites())
		}
	}
	if len(opts.Users) > 0 {
		kopts = append(kopts, kfake.EnableSASL())
		for _, u := range opts.Users {
			// Superusers: no ACLs are configured; SASL only decides
			// who may talk to the broker at all.
			kopts = append(kopts, kfake.Superuser(strings.ToUpper(u.Mechanism), u.User, u.Password))
		}
		e.client.SASL = &opts.Users[0]
	}
	if opts.TLS != nil {
		e.client.TLS = opts.ClientTLS
		if e.client.TLS == nil {
			e.client.TLS = &tls.Config{MinVersion: tls.VersionTLS12}
		}
	}
	if opts.MinSessionTimeout > 0 {
		kopts = append(kopts, kfake.GroupMinSessionTimeout(opts.MinSessionTimeout))
	}
	kopts = append(kopts, opts.extra...)
	if e.cluster, err = kfake.NewCluster(kopts...); err != nil {
		e.unlock()
		return nil, fmt.Errorf("start embedded broker: %w", err)
	}
	e.addrs = e.cluster.ListenAddrs()
	e.client.Brokers = e.addrs

	// Topics seeded by kfake exist only in a fresh data dir; creating them
	// through the protocol also covers restarts and new runner groups.
	if err := e.ensure(partitions, topics, logger); err != nil {
		_ = e.Close()
		return nil, err
	}
	logger.Info("embedded broker listening", "addrs", e.addrs, "data_dir", opts.DataDir, "partitions", partitions, "topics", topics)
	return e, nil
}

func (e *Embedded) ensure(partitions int32, topics []string, logger *slog.Logger) error {
	o := e.client
	o.Logger = logger
	kopts, err := o.kgoOpts()
	if err != nil {
		return fmt.Errorf("embedded broker: %w", err)
	}
	cl, err := kgo.NewClient(kopts...)
	if err != nil {
		return fmt.Errorf("embedded broker: %w", err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := ensureTopics(ctx, kadm.NewClient(cl), partitions, 0, topics...); err != nil {
		return fmt.Errorf("embedded broker: %w", err)
	}
	return nil
}

// saslFile is where kfake keeps its SASL users in the data dir: PLAIN
// passwords in clear text, SCRAM ones salted.
const saslFile = "sasl.json"

// forgetUsers makes the configured users the only ones: kfake loads the
// users it saved over those it is given, so a changed password would not
// take effect, and a data dir from a run without users would leave none.
// The data dir is made private, since kfake writes its files readable to
// all.
func forgetUsers(dir string) error {
	if err := os.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("embedded broker data dir: %w", err)
	}
	if err := os.Remove(filepath.Join(dir, saslFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("embedded broker data dir: %w", err)
	}
	return nil
}

// Addrs returns the host:port addresses clients connect to.
func (e *Embedded) Addrs() []string { return append([]string(nil), e.addrs...) }

// ClientOptions returns how a client of this process reaches the broker:
// its addresses and, when configured, the first user and TLS.
func (e *Embedded) ClientOptions(clientID string, logger *slog.Logger) Options {
	o := e.client
	o.Brokers = e.Addrs()
	o.ClientID = clientID
	if logger != nil {
		o.Logger = logger
	}
	return o
}

// validUsers checks the SASL users of an embedded broker.
func validUsers(users []SASL) error {
	seen := map[string]bool{}
	for i, u := range users {
		if _, err := u.mechanism(); err != nil {
			return fmt.Errorf("sasl user %d: %w", i+1, err)
		}
		if u.Password == "" {
			return fmt.Errorf("sasl user %q: empty password", u.User)
		}
		k := strings.ToUpper(u.Mechanism) + " " + u.User
		if seen[k] {
			return fmt.Errorf("sasl user %q: given twice for %s", u.User, strings.ToUpper(u.Mechanism))
		}
		seen[k] = true
	}
	return nil
}

// Close stops the broker and, with a data dir, writes its state to disk.
// Safe to call more than once.
func (e *Embedded) Close() error {
	e.closeOnce.Do(func() {
		e.cluster.Close()
		e.closeErr = e.unlock()
	})
	return e.closeErr
}

func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, lockName), os.O_CREATE|os.O_RDWR, 0o640)
	if err != nil {
		return nil, fmt.Errorf("lock embedded broker data dir: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("lock embedded broker data dir: %s is used by another broker", dir)
		}
		return nil, fmt.Errorf("lock embedded broker data dir: %w", err)
	}
	return f, nil
}

func (e *Embedded) unlock() error {
	if e.lock == nil {
		return nil
	}
	err := e.lock.Close() // closing releases the flock
	e.lock = nil
	if err != nil {
		return fmt.Errorf("unlock embedded broker data dir: %w", err)
	}
	return nil
}

// advertiseHost picks the host name clients should dial for a listen host.
func advertiseHost(host string) string {
	ip := net.ParseIP(host)
	if host != "" && (ip == nil || !ip.IsUnspecified()) {
		return host
	}
	if name, err := os.Hostname(); err == nil && name != "" {
		if _, err := net.LookupHost(name); err == nil {
			return name
		}
	}
	return "127.0.0.1"
}

// advertisedListener reports the advertised host as its address: kfake
// hands out the listener address in metadata, and an address like [::]:9092
// is useless to a client on another machine.
type advertisedListener struct {
	net.Listener
	host string
}

func (l advertisedListener) Addr() net.Addr {
	a := l.Listener.Addr()
	_, port, err := net.SplitHostPort(a.String())
	if err != nil {
		return a
	}
	return hostPortAddr{a.Network(), net.JoinHostPort(l.host, port)}
}

type hostPortAddr struct{ network, addr string }

func (a hostPortAddr) Network() string { return a.network }
func (a hostPortAddr) String() string  { return a.addr }

// kfakeLogger bridges kfake's logger to slog. kfake logs every request at
// info level, which is debug detail for an operator.
type kfakeLogger struct{ l *slog.Logger }

func (k kfakeLogger) Logf(level kfake.LogLevel, format string, args ...any) {
	var sl slog.Level
	switch level {
	case kfake.LogLevelError:
		sl = slog.LevelError
	case kfake.LogLevelWarn:
		sl = slog.LevelWarn
	case kfake.LogLevelInfo, kfake.LogLevelDebug:
		sl = slog.LevelDebug
	default:
		return
	}
	if !k.l.Enabled(context.Background(), sl) {
		return
	}
	k.l.Log(context.Background(), sl, fmt.Sprintf(format, args...))
}
