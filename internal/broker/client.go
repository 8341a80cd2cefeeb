package broker

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"strings"
	"sync"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
	"github.com/twmb/franz-go/plugin/kslog"
)

// SASL holds credentials for SASL authentication. Mechanism is one of PLAIN,
// SCRAM-SHA-256 or SCRAM-SHA-512.
type SASL struct{ Mechanism, User, Password string }

// Options says how to reach the broker. They are shared by [New] and
// [NewConsumer].
type Options struct {
	Brokers  []string     // host:port seeds
	TLS      *tls.Config  // nil = plaintext
	SASL     *SASL        // nil = none
	ClientID string       // "" = "cloud-builder"
	Logger   *slog.Logger // nil = slog.Default(); bridged to kgo via kslog
}

// ErrClosed is returned by operations on a closed Client or Consumer.
var ErrClosed = errors.New("broker client closed")

func (o Options) logger() *slog.Logger {
	if o.Logger != nil {
		return o.Logger
	}
	return slog.Default()
}

// kgoOpts validates o once and turns it into the client options every
// producer and consumer shares. Protocol versions are deliberately not
// capped: the broker negotiates, so old clients (kafka-python speaks Produce
// v7, Fetch v4) and new ones meet on the same cluster.
func (o Options) kgoOpts() ([]kgo.Opt, error) {
	if len(o.Brokers) == 0 {
		return nil, errors.New("no broker address configured")
	}
	for _, b := range o.Brokers {
		if _, _, err := net.SplitHostPort(b); err != nil {
			return nil, fmt.Errorf("broker address %q: %w", b, err)
		}
	}
	id := o.ClientID
	if id == "" {
		id = "cloud-builder"
	}
	opts := []kgo.Opt{
		kgo.SeedBrokers(o.Brokers...),
		kgo.ClientID(id),
		kgo.WithLogger(kslog.New(quietKafkaLogger(o.logger().With("component", "kafka")))),
	}
	if o.TLS != nil {
		opts = append(opts, kgo.DialTLSConfig(o.TLS.Clone()))
	}
	if o.SASL != nil {
		m, err := o.SASL.mechanism()
		if err != nil {
			return nil, err
		}
		opts = append(opts, kgo.SASL(m))
	}
	return opts, nil
}

func (s *SASL) mechanism() (sasl.Mechanism, error) {
	if s.User == "" {
		return nil, errors.New("sasl: user is empty")
	}
	switch strings.ToUpper(s.Mechanism) {
	case "PLAIN":
		return plain.Auth{User: s.User, Pass: s.Password}.AsMechanism(), nil
	case "SCRAM-SHA-256":
		return scram.Auth{User: s.User, Pass: s.Password}.AsSha256Mechanism(), nil
	case "SCRAM-SHA-512":
		return scram.Auth{User: s.User, Pass: s.Password}.AsSha512Mechanism(), nil
	}
	return nil, fmt.Errorf("sasl: unsupported mechanism %q (want PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)", s.Mechanism)
}

// Client publishes records and administers topics.
type Client struct {
	cl      *kgo.Client
	adm     *kadm.Client
	brokers string
	log     *slog.Logger

	closeOnce sync.Once

	mu       sync.Mutex
	asyncErr error // first failure of PublishAsync since the last Flush
	asyncN   int   // number of failures since the last Flush
}

// New returns a producer/admin client. It does not connect: use [Client.Ping]
// to check that the broker is reachable.
func New(opts Options) (*Client, error) {
	kopts, err := opts.kgoOpts()
	if err != nil {
		return nil, fmt.Errorf("configure broker client: %w", err)
	}
	kopts = append(kopts,
		// Requests must spread over the partitions of a runner group so
		// that every runner gets work; the original clients chose a random
		// partition per keyless record. Round robin is the even version,
		// started at a random partition: cb-ctl and cb-fetch are often
		// short-lived and send one record each, which a round robin
		// starting at 0 would put on partition 0 every time.
		kgo.RecordPartitioner(randomStartRoundRobin{}),
		// A synchronous Publish is one record: waiting for more only adds
		// latency. Bulk producers batch anyway while earlier batches are
		// in flight.
		kgo.ProducerLinger(0),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		// gzip only: franz-go would otherwise pick snappy, and Debian's
		// python3-kafka, the client of the original services, has no
		// snappy codec and stops at the first such batch; gzip is in
		// every Kafka client. Batches that gzip does not make smaller
		// go uncompressed. Uncompressed batches of real messages cost
		// the embedded broker two to three times the throughput, gzip
		// costs none (BenchmarkPublishConsume, payload=response).
		kgo.ProducerBatchCompression(kgo.GzipCompression()),
		// Kafka creates unknown topics on first use by default and the
		// original services relied on that; EnsureTopics is the
		// explicit way.
		kgo.AllowAutoTopicCreation(),
	)
	cl, err := kgo.NewClient(kopts...)
	if err != nil {
		return nil, fmt.Errorf("create broker client: %w", err)
	}
	return &Client{
		cl:      cl,
		adm:     kadm.NewClient(cl),
		brokers: strings.Join(opts.Brokers, ","),
		log:     opts.logger().With("component", "broker"),
	}, nil
}

// Publish writes one keyless record and returns once the broker has it
// durably (acks=all). The record lands on one of the topic's partitions.
func (c *Client) Publish(ctx context.Context, topic string, value []byte) error {
	return c.PublishHeaders(ctx, topic, value, nil)
}

// PublishHeaders is Publish with record headers. Headers carry what this
// implementation adds to a message: the original services validate message
// bodies strictly and drop a message with an unknown field, but never look
// at headers.
func (c *Client) PublishHeaders(ctx context.Context, topic string, value []byte, headers []Header) error {
	r := &kgo.Record{Topic: topic, Value: value}
	for _, h := range headers {
		r.Headers = append(r.Headers, kgo.RecordHeader{Key: h.Key, Value: []byte(h.Value)})
	}
	// ProduceSync may wait far past ctx: a record that kgo already
	// handed to a connection is retried until the broker answers, and a
	// broker that went away never does. So the wait ends with ctx; kgo
	// still fails the record itself through ctx where it can.
	done := make(chan error, 1)
	c.cl.Produce(ctx, r, func(_ *kgo.Record, err error) { done <- err })
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("publish to %s: %w", topic, mapClosed(err))
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("publish to %s: %w", topic, context.Cause(ctx))
	}
}

// PublishAsync queues one keyless record and returns at once, so that bulk
// producers get batching. done, if not nil, is called with the outcome;
// failures are also reported by the next [Client.Flush]. The record is not
// durable until Flush returned nil.
func (c *Client) PublishAsync(ctx context.Context, topic string, value []byte, done func(error)) {
	c.cl.Produce(ctx, &kgo.Record{Topic: topic, Value: value}, func(_ *kgo.Record, err error) {
		if err != nil {
			err = fmt.Errorf("publish to %s: %w", topic, mapClosed(err))
			c.mu.Lock()
			if c.asyncErr == nil {
				c.asyncErr = err
			}
			c.asyncN++
			c.mu.Unlock()
		}
		if done != nil {
			done(err)
		}
	})
}

// Flush waits until every record queued by PublishAsync is acknowledged or
// failed, and returns the first failure since the previous Flush.
func (c *Client) Flush(ctx context.Context) error {
	if err := c.cl.Flush(ctx); err != nil {
		return fmt.Errorf("flush records: %w", err)
	}
	c.mu.Lock()
	err, n := c.asyncErr, c.asyncN
	c.asyncErr, c.asyncN = nil, 0
	c.mu.Unlock()
	if n > 1 {
		return fmt.Errorf("%d records failed, first: %w", n, err)
	}
	return err
}

// Ping checks that at least one broker answers.
func (c *Client) Ping(ctx context.Context) error {
	return ping(ctx, c.cl, c.brokers)
}

func ping(ctx context.Context, cl *kgo.Client, brokers string) error {
	if err := cl.Ping(ctx); err != nil {
		return fmt.Errorf("broker unreachable: %s: %w", brokers, mapClosed(err))
	}
	return nil
}

// Close flushes nothing and releases the connections; records queued by
// PublishAsync and not yet flushed fail. Safe to call more than once.
func (c *Client) Close() {
	c.closeOnce.Do(c.cl.Close)
}

func mapClosed(err error) error {
	if errors.Is(err, kgo.ErrClientClosed) {
		return ErrClosed
	}
	return err
}

// randomStartRoundRobin is a round-robin partitioner whose first partition
// per topic is random.
type randomStartRoundRobin struct{}

func (randomStartRoundRobin) ForTopic(string) kgo.TopicPartitioner {
	return &randomStartTopic{on: -1}
}

type randomStartTopic struct{ on int }

func (*randomStartTopic) RequiresConsistency(*kgo.Record) bool { return false }

func (r *randomStartTopic) Partition(_ *kgo.Record, n int) int {
	if r.on < 0 {
		r.on = rand.IntN(n)
	}
	if r.on >= n {
		r.on = 0
	}
	p := r.on
	r.on++
	return p
}
