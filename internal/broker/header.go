package broker

import "context"

// Header is a Kafka record header.
type Header struct {
	Key   string
	Value string
}

// Header keys of the extensions this implementation carries next to the
// original's message bodies.
const (
	// HeaderArtifactURL on a cb-info-response and on the responses of a
	// runner's build job: the base URL of the answering runner's artifact
	// endpoint for the target (logs, solver file, binaries).
	HeaderArtifactURL = "cb-artifact-url"
	// HeaderFreshBuildRoot "true" on a build request: it was caused by a
	// change of the package's build metadata (.cb/), so a cached
	// buildroot must not be reused.
	HeaderFreshBuildRoot = "cb-fresh-build-root"
)

// Header returns the value of the record's header key, "" when absent.
func (r Record) Header(key string) string {
	for _, h := range r.Headers {
		if h.Key == key {
			return h.Value
		}
	}
	return ""
}

// HeaderPublisher publishes records with headers; *Client is one.
type HeaderPublisher interface {
	PublishHeaders(ctx context.Context, topic string, value []byte, headers []Header) error
}

// WithHeaders returns a publisher that sends every record with headers.
// A p that cannot send headers is returned unchanged: headers only carry
// extensions, never what a message needs.
func WithHeaders(p Publisher, headers ...Header) Publisher {
	hp, ok := p.(HeaderPublisher)
	if !ok || len(headers) == 0 {
		return p
	}
	return headerPublisher{hp, headers}
}

type headerPublisher struct {
	p       HeaderPublisher
	headers []Header
}

func (h headerPublisher) Publish(ctx context.Context, topic string, value []byte) error {
	return h.p.PublishHeaders(ctx, topic, value, h.headers)
}
