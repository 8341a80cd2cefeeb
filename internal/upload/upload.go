// Package upload is the protocol between a runner's job and the
// collector: what one finished build hands over for publishing. The
// collector (internal/collect) implements both ends over HTTP; the job
// only needs these types, so it does not depend on the collector server.
package upload

import "context"

// Path is the collector's upload endpoint.
const Path = "/api/v1/upload"

// File is one local file of an upload and its name in the repository.
type File struct {
	Path string // local file
	Name string // repo-relative: "<arch dir>/<file>", e.g. "x86_64/hello_1.0_amd64.deb", "src/x.src.rpm"
}

// Upload is one finished build to publish.
type Upload struct {
	RequestID string
	Project   string // projects/...
	Name      string // package or image name
	RepoPath  string // "<project parent path>/<dist or selection>", as target.Target.RepoPath gives
	Arch      string
	RepoType  string // "rpm" or "deb"
	Files     []File
}

// Uploader transfers a build's results to the collector;
// *collect.Client satisfies it.
type Uploader interface {
	Upload(ctx context.Context, u Upload) error
}
