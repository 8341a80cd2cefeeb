package broker

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
