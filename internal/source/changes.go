package source

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/cloud-builder/cb/internal/message"
)

// ProjectsDir is the top directory of the sources repository that holds
// every package and image (SPEC §2).
const ProjectsDir = "projects"

// commitRE is a full SHA-1 or SHA-256 object name as rev-parse prints it.
var commitRE = regexp.MustCompile(`^(?:[0-9a-f]{40}|[0-9a-f]{64})$`)

// ValidCommit reports whether id is a full object name.
func ValidCommit(id string) bool { return commitRE.MatchString(id) }

// Change is one package or image directory whose files differ between two
// commits.
type Change struct {
	// Project is the directory, relative to the repository root
	// ("projects/MS/xclock").
	Project string
	// MetadataChanged is set when files below the directory's .cb/ changed
	// (or cannot be compared): the buildroot must be created afresh.
	MetadataChanged bool
	// Deleted is set when the directory held a package in the old commit
	// and holds none in the new one (removed, renamed, or its
	// .cb/cloud_builder.yml removed).
	Deleted bool
	// Err is set when the directory holds a package but its path is not a
	// valid project (SPEC §2); such a directory must not be built.
	Err error
}

// Changes lists the package and image directories below projects/ whose
// files differ between the commits from and to, sorted by project. A
// directory counts as a package when it holds .cb/cloud_builder.yml in
// either commit; a package changes when any file below it changes, so a
// package nested in another changes both.
//
// The two commits are compared as trees, so history in between does not
// matter: after a force-push or rebase, exactly the packages whose content
// differs are listed. When from is "" or not in the checkout (history
// rewritten and pruned, checkout cloned afresh), there is nothing to compare
// with and every package of to is listed, with MetadataChanged set.
//
// git streams the changed paths; memory grows with the number of changed
// directories, not files, and a change of any size costs three git
// processes.
func Changes(ctx context.Context, dir, from, to string) ([]Change, error) {
	if !ValidCommit(to) {
		return nil, fmt.Errorf("compare commits: invalid commit %q", to)
	}
	if from != "" && !ValidCommit(from) {
		return nil, fmt.Errorf("compare commits: invalid commit %q", from)
	}
	if from == to {
		return nil, nil
	}
	l, err := lockCheckout(ctx, dir, false)
	if err != nil {
		return nil, err
	}
	defer l.unlock()
	c := &checkout{dir: dir}

	fromKnown := from != "" && c.hasCommit(ctx, from)
	dirs := dirSet{}
	split := &nulSplitter{fn: dirs.add}
	args := []string{"ls-tree", "-r", "-z", "--name-only", "--full-tree", to, "--", ProjectsDir + "/"}
	if fromKnown {
		// Plumbing: no user diff configuration (renames, external diff)
		// applies. Without rename detection a moved package is a deletion
		// plus an addition, which is what the caller needs.
		args = []string{"diff-tree", "-r", "-z", "--name-only", "--no-renames", "--no-ext-diff", from, to, "--", ProjectsDir + "/"}
	}
	if _, err := (gitCmd{dir: dir, args: args, stdout: split}).run(ctx); err != nil {
		return nil, fmt.Errorf("compare %s..%s: %w", short(from), short(to), err)
	}
	if split.err != nil {
		return nil, fmt.Errorf("compare %s..%s: %w", short(from), short(to), split.err)
	}

	cands := dirs.sorted()
	meta := make([]string, len(cands))
	for i, d := range cands {
		meta[i] = d + "/" + message.MetadataFile
	}
	inTo, err := c.blobsExist(ctx, to, meta)
	if err != nil {
		return nil, err
	}
	inFrom := make([]bool, len(cands))
	if fromKnown {
		if inFrom, err = c.blobsExist(ctx, from, meta); err != nil {
			return nil, err
		}
	}
	var out []Change
	for i, d := range cands {
		switch {
		case inTo[i]:
			ch := Change{Project: d, MetadataChanged: !fromKnown || dirs[d]&metaChanged != 0}
			if err := message.ValidateProject(d); err != nil {
				ch.Err = err
			}
			out = append(out, ch)
		case inFrom[i]:
			out = append(out, Change{Project: d, Deleted: true})
		}
	}
	return out, nil
}

// ReadFiles reads each of paths as of commit and calls fn with its content
// or an error, which does not repeat the path (wrapping fs.ErrNotExist when the path is missing or not a
// file, message.ErrTooLarge when it exceeds max bytes). data is only valid
// during the call. One git process serves all paths, so reading the
// metadata of thousands of changed packages stays cheap.
func ReadFiles(ctx context.Context, dir, commit string, paths []string, max int64, fn func(path string, data []byte, err error)) error {
	if !ValidCommit(commit) {
		return fmt.Errorf("read files: invalid commit %q", commit)
	}
	if len(paths) == 0 {
		return nil
	}
	var in strings.Builder
	for _, p := range paths {
		if strings.ContainsAny(p, "\n\x00") {
			return fmt.Errorf("read files: path %q contains a line break", p)
		}
		in.WriteString(commit + ":" + p + "\n")
	}
	l, err := lockCheckout(ctx, dir, false)
	if err != nil {
		return err
	}
	defer l.unlock()
	bp := &batchParser{paths: paths, max: max, fn: fn}
	if _, err := (gitCmd{dir: dir, args: []string{"cat-file", "--batch"}, stdin: strings.NewReader(in.String()), stdout: bp}).run(ctx); err != nil {
		return fmt.Errorf("read files of %s: %w", short(commit), err)
	}
	if bp.err != nil {
		return fmt.Errorf("read files of %s: %w", short(commit), bp.err)
	}
	if bp.n != len(paths) {
		return fmt.Errorf("read files of %s: git answered %d of %d paths", short(commit), bp.n, len(paths))
	}
	return nil
}

// hasCommit reports whether the checkout holds commit id.
func (c *checkout) hasCommit(ctx context.Context, id string) bool {
	_, err := c.git(ctx, "cat-file", "-e", id+"^{commit}")
	return err == nil
}

// blobsExist reports for each path whether it is a file in commit.
func (c *checkout) blobsExist(ctx context.Context, commit string, paths []string) ([]bool, error) {
	res := make([]bool, len(paths))
	if len(paths) == 0 {
		return res, nil
	}
	var in strings.Builder
	for _, p := range paths {
		in.WriteString(commit + ":" + p + "\n")
	}
	out, err := gitCmd{dir: c.dir, args: []string{"cat-file", "--batch-check=%(objecttype)"},
		stdin: strings.NewReader(in.String())}.run(ctx)
	if err != nil {
		return nil, fmt.Errorf("look up metadata files: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 1<<20)
	i := 0
	for sc.Scan() {
		if i >= len(res) {
			return nil, errors.New("look up metadata files: git answered more lines than asked")
		}
		res[i] = sc.Text() == "blob"
		i++
	}
	if i != len(res) {
		return nil, fmt.Errorf("look up metadata files: git answered %d of %d paths", i, len(res))
	}
	return res, nil
}

// Flags of a candidate directory.
const (
	fileChanged uint8 = 1 << iota
	metaChanged
)

// dirSet collects, from changed file paths, every directory below projects/
// that may be a package, with whether files below its .cb/ changed.
type dirSet map[string]uint8

func (s dirSet) add(p string) {
	if !strings.HasPrefix(p, ProjectsDir+"/") {
		return
	}
	// A path with a line break cannot be asked about on cat-file's
	// line-based input, and no directory above it with one can be a valid
	// project; the part of the path above the first such element is still
	// considered.
	for i := len(ProjectsDir) + 1; i < len(p); i++ {
		if p[i] != '/' {
			continue
		}
		d := p[:i]
		rest := p[i+1:]
		if strings.ContainsAny(d, "\n\x00") {
			return
		}
		if strings.HasPrefix(rest, ".cb/") {
			// Directories below .cb/ are the package's metadata, never
			// packages of their own.
			s[d] |= fileChanged | metaChanged
			return
		}
		s[d] |= fileChanged
	}
}

func (s dirSet) sorted() []string {
	out := make([]string, 0, len(s))
	for d := range s {
		out = append(out, d)
	}
	sort.Strings(out)
	return out
}

// nulSplitter is a Writer that calls fn for every NUL-terminated string
// written to it, so git's -z output is parsed while it streams.
type nulSplitter struct {
	fn      func(string)
	partial []byte
	err     error
}

// maxPath bounds one path; git's own limit on Linux is PATH_MAX-ish.
const maxPath = 64 << 10

func (w *nulSplitter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, 0)
		if i < 0 {
			w.partial = append(w.partial, p...)
			if len(w.partial) > maxPath {
				w.err = errors.New("path longer than 64 KiB in git output")
				return 0, w.err
			}
			break
		}
		if len(w.partial) > 0 {
			w.partial = append(w.partial, p[:i]...)
			w.fn(string(w.partial))
			w.partial = w.partial[:0]
		} else {
			w.fn(string(p[:i]))
		}
		p = p[i+1:]
	}
	return n, nil
}

// batchParser is a Writer that parses `git cat-file --batch` output while
// it streams: per request a header line "<oid> <type> <size>" followed by
// the content and a line feed, or "<name> missing".
type batchParser struct {
	paths []string
	max   int64
	fn    func(string, []byte, error)

	n      int    // requests answered
	header []byte // partial header line
	need   int64  // content bytes + trailing LF still expected
	keep   bool   // collect the content (else discard)
	data   []byte
	cerr   error // error to report for the current object
	err    error
}

func (b *batchParser) Write(p []byte) (int, error) {
	total := len(p)
	for len(p) > 0 {
		if b.need > 0 {
			k := min(int64(len(p)), b.need)
			if b.keep {
				b.data = append(b.data, p[:k]...)
			}
			b.need -= k
			p = p[k:]
			if b.need == 0 {
				if b.keep {
					b.data = b.data[:len(b.data)-1] // trailing LF
				}
				b.emit(b.data, b.cerr)
			}
			continue
		}
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			b.header = append(b.header, p...)
			if len(b.header) > maxPath {
				b.err = errors.New("cat-file header too long")
				return 0, b.err
			}
			break
		}
		b.header = append(b.header, p[:i]...)
		p = p[i+1:]
		if err := b.startObject(string(b.header)); err != nil {
			b.err = err
			return 0, err
		}
		b.header = b.header[:0]
	}
	return total, nil
}

func (b *batchParser) startObject(h string) error {
	if b.n >= len(b.paths) {
		return errors.New("cat-file answered more objects than asked")
	}
	if strings.HasSuffix(h, " missing") || strings.HasSuffix(h, " ambiguous") {
		b.emit(nil, fs.ErrNotExist)
		return nil
	}
	f := strings.Fields(h)
	if len(f) != 3 {
		return fmt.Errorf("unexpected cat-file header %q", h)
	}
	size, err := strconv.ParseInt(f[2], 10, 64)
	if err != nil || size < 0 {
		return fmt.Errorf("unexpected cat-file header %q", h)
	}
	b.need, b.keep, b.data, b.cerr = size+1, true, b.data[:0], nil
	switch {
	case f[1] != "blob":
		b.keep, b.cerr = false, fmt.Errorf("is a %s, not a file: %w", f[1], fs.ErrNotExist)
	case size > b.max:
		b.keep, b.cerr = false, fmt.Errorf("%d bytes: %w", size, message.ErrTooLarge)
	}
	return nil
}

func (b *batchParser) emit(data []byte, err error) {
	if err != nil {
		data = nil
	}
	b.fn(b.paths[b.n], data, err)
	b.n++
}

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	if id == "" {
		return "(none)"
	}
	return id
}
