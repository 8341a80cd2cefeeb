// Package collect is cb-collect, the repository server: it receives
// finished builds from the runners, publishes them as signed rpm-md and
// apt repositories below the repo root (package repo does the layout and
// metadata), serves that tree read-only over HTTP and removes what left
// the sources repository.
//
// # Transfer
//
// Runners push; the collector never logs into a runner. Each finished
// build is one request:
//
//	POST /api/v1/upload
//	Authorization: Bearer <token>          (or a client certificate under TLS)
//	Content-Type: application/x-tar
//
// The body is an uncompressed tar stream. Its first entry is manifest.yml
// (see [Manifest]): request id, project, package name, repository path
// (<project parent>/<dist or selection>), arch, repository type (rpm or
// deb) and, per file, its repo-relative name (<arch dir>/<file>), size and
// SHA-256. The other entries are the files, under those names.
//
// The collector validates every field before it touches a path, streams
// the files into a private staging directory below its state dir, and
// checks each size and SHA-256. Only a stream that passed every check is
// installed; a refused or cut stream leaves nothing behind, because staging
// is discarded (and wiped at start after a crash). Installing happens under
// the repository's lock: the package's previous files for that arch are
// replaced, the bookkeeping is written, then the metadata is regenerated
// for that repository alone, signed, and swapped in. The answer comes after
// that, so a 200 means "published". The same build delivered twice (same
// request id and checksums) changes nothing and answers "unchanged".
//
// [Client] is the runner side: it hashes the files, retries transport
// errors and 5xx answers with exponential backoff (5 tries by default) and
// fails at once on 4xx, whose message names the problem.
//
// # Work
//
// Uploads trigger publishing. The --update-interval loop only cleans up:
// it updates the collector's own clone of the sources repository, removes
// packages whose directory, target or arch left git, deletes files a crash
// left unrecorded and republishes repositories whose .updaterepo mark says
// their metadata is outdated. Both paths take the same per-repository
// lock, so they never race, and two uploads into one repository serialise
// without losing either. Uploads that arrive together share one metadata
// update: each installs under the lock, then the first to publish covers
// every install made before it started.
package collect
