package image

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/cloud-builder/cb/internal/atomicfile"
	"github.com/cloud-builder/cb/internal/buildroot"
	"github.com/cloud-builder/cb/internal/cgroup"
	"github.com/cloud-builder/cb/internal/message"
	"github.com/cloud-builder/cb/internal/mirror"
	"github.com/cloud-builder/cb/internal/target"
)

// RepoType is the repository type of image bundles: kiwi packs them as rpm.
const RepoType = "rpm"

// Kiwi is the kiwi-ng program; tests and odd installations may change it.
var Kiwi = "kiwi-ng"

// DefaultCacheRoot holds one kiwi shared cache directory per image target.
//
// kiwi bind-mounts its shared cache into the image root at the same path,
// so the path must exist with sane permissions in a freshly bootstrapped
// root: a cache below /tmp, for instance, makes kiwi create the image's /tmp
// without the sticky bit and apt's unprivileged download method fails.
// One directory per target keeps concurrent builds on a runner from racing
// on kiwi's keyring and package cache, while a rebuild of the same target
// reuses its downloads.
const DefaultCacheRoot = "/var/cache/kiwi/cloud-builder"

// EnvCacheRoot names the environment variable that overrides
// DefaultCacheRoot.
const EnvCacheRoot = "CB_IMAGE_CACHE"

// Options describe one image build.
type Options struct {
	// Description is the image description directory: the .kiwi file or
	// config.xml, config.sh, root/ and .cb/. It is never modified.
	Description string
	// Target names the runner-state paths: Dir is the bundle directory,
	// BuildLog, SolverFile and Binaries the results, Work the scratch
	// space (the description copy and the image root live below it).
	Target target.Target
	// BundleID is passed to kiwi-ng result bundle --id: kiwi appends it to
	// the version in the file names inside the bundle rpm, so it tells the
	// builds of one image version apart. Letters, digits and . _ + ~ only,
	// no '-'; the runner uses the first group of the request id.
	BundleID string
	// Profiles are the selection's KIWI profiles.
	Profiles []string
	// BuildArgs are the selection's build_arguments; Build checks them
	// with ValidateBuildArgs before kiwi runs.
	BuildArgs []string
	// Log receives the whole build output as it happens: progress lines
	// and the output of every kiwi-ng call. Nil discards it.
	Log io.Writer
	// Progress, if set, receives the progress lines only (they are written
	// to Log as well).
	Progress io.Writer
	// CacheDir is kiwi's shared cache directory; empty means a directory
	// of this target below $CB_IMAGE_CACHE or DefaultCacheRoot.
	CacheDir string
	Logger   *slog.Logger
	// Timeout bounds the whole build (DefaultTimeout when 0); a build
	// that takes longer is killed and fails with ErrTimeout.
	Timeout time.Duration
	// Limits are the cgroup limits of each kiwi-ng call; zero fields set
	// no limit.
	Limits cgroup.Limits
	// AllowRepositories are the repository URLs (prefixes) the
	// description may name besides the runner's apt sources, as for
	// buildroots (buildroot.CheckRepositories).
	AllowRepositories []string

	// Skip names top-level entries of Description that are not part of
	// it (local build output next to the description).
	Skip func(name string) bool
}

// DefaultTimeout bounds an image build when Options.Timeout is 0.
const DefaultTimeout = 4 * time.Hour

// ErrTimeout is the cause of a build that ran longer than its timeout.
var ErrTimeout = errors.New("image build timed out")

// Result is the outcome of an image build that ran.
type Result struct {
	// ExitCode is 0 when the image was built and bundled, else the exit
	// code of the kiwi-ng call that failed (1 when kiwi bundled nothing).
	ExitCode int
	// Binaries are the bundle rpms, sorted below
	// Target.Binaries()/<Target.RepoPath()>/<rpm arch>/ (kiwi's bundle
	// rpm is noarch: the image's arch is in the file names inside it).
	Binaries []string
	RepoType string // always RepoType
}

var bundleIDRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.+~]{0,63}$`)

func (o *Options) validate() error {
	if o.Description == "" {
		return errors.New("no image description directory given")
	}
	st, err := os.Stat(o.Description)
	if err != nil {
		return fmt.Errorf("image description: %w", err)
	}
	if !st.IsDir() {
		return fmt.Errorf("image description %s is not a directory", o.Description)
	}
	if o.Target.Root == "" || o.Target.Project == "" || o.Target.Profile == "" {
		return errors.New("image target not set")
	}
	if !bundleIDRe.MatchString(o.BundleID) {
		return fmt.Errorf("invalid bundle id %q: letters, digits and . _ + ~ only, at most 64", o.BundleID)
	}
	for _, p := range o.Profiles {
		if err := message.ValidateName(p); err != nil {
			return fmt.Errorf("profile: %w", err)
		}
	}
	return ValidateBuildArgs(o.BuildArgs)
}

// Build builds the image description as kiwi-ng does it for the original
// cb-image: it writes the solved package list to Target.SolverFile(),
// builds the image from a fresh image root (whatever a previous build
// left is wiped first), bundles the result as rpm into Target.Dir() and
// sorts the rpm into Target.Binaries(), replacing older bundles.
//
// Build returns an error, and no Result, when the options are invalid or
// the build could not be started; a Result with a non-zero ExitCode when
// kiwi failed (the reason is in the log); and a Result together with the
// context's cause when ctx ended during the build. The image root and the
// description copy are removed in every case.
func Build(ctx context.Context, o Options) (*Result, error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeoutCause(ctx, o.Timeout, fmt.Errorf("%w after %s", ErrTimeout, o.Timeout))
	defer cancel()
	// kiwi runs in the work directory; every path it gets is absolute.
	var err error
	if o.Description, err = filepath.Abs(o.Description); err != nil {
		return nil, fmt.Errorf("image description: %w", err)
	}
	if o.Target.Root, err = filepath.Abs(o.Target.Root); err != nil {
		return nil, fmt.Errorf("image target: %w", err)
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	t := o.Target
	b := &build{
		o:      o,
		t:      t,
		log:    o.Log,
		logger: o.Logger.With("target", t.ID(), "project", t.Project),
		work:   filepath.Join(t.Work(), "kiwi"),
	}
	b.desc = filepath.Join(b.work, "description")
	b.out = filepath.Join(b.work, "target")
	b.cache = o.CacheDir
	if b.cache == "" {
		b.cache = defaultCacheDir(t)
	}
	return b.run(ctx)
}

// defaultCacheDir is the target's directory below the cache root; the
// hash keeps targets of the same name in different projects or runner
// roots apart.
func defaultCacheDir(t target.Target) string {
	root := os.Getenv(EnvCacheRoot)
	if root == "" {
		root = DefaultCacheRoot
	}
	sum := sha256.Sum256([]byte(t.Root + "\x00" + t.Project))
	return filepath.Join(root, t.ID()+"-"+hex.EncodeToString(sum[:6]))
}

type build struct {
	o      Options
	t      target.Target
	log    io.Writer
	logger *slog.Logger
	work   string // scratch root, removed before and after
	desc   string // the substituted copy of the description
	out    string // kiwi's --target-dir: results and build/image-root
	cache  string
	gnupg  string // GNUPGHOME of kiwi's key import
	env    []string
	repos  []string // the description's repository and key URLs: kiwi's only way out
}

func (b *build) progress(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	line := fmt.Sprintf("[cb-image %s] %s\n", time.Now().UTC().Format("15:04:05"), msg)
	io.WriteString(b.log, line)
	if b.o.Progress != nil {
		io.WriteString(b.o.Progress, line)
	}
	b.logger.Info(msg)
}

func (b *build) run(ctx context.Context) (res *Result, err error) {
	start := time.Now()
	b.progress("building image %s (%s), bundle id %s", b.t.Project, b.t.Profile, b.o.BundleID)
	defer func() {
		if b.gnupg != "" {
			os.RemoveAll(b.gnupg)
		}
		// The image root is hundreds of megabytes and never reused.
		if rerr := removeAll(b.work); rerr != nil {
			b.logger.Warn("remove image work directory", "err", rerr)
			if err == nil && res == nil {
				err = rerr
			}
		}
		_ = os.Remove(b.t.Work()) // only if nothing else lives there
	}()
	if err := b.setup(); err != nil {
		return nil, err
	}
	args, err := expandBuildArgs(b.o.BuildArgs)
	if err != nil {
		return nil, err
	}
	if err := b.solve(ctx); err != nil {
		return nil, err
	}

	res = &Result{RepoType: RepoType, Binaries: []string{}}
	argv := b.global(true)
	argv = append(argv, "system", "build", "--description", b.desc, "--target-dir", b.out)
	argv = append(argv, args...)
	b.progress("building the image root and image")
	step := time.Now()
	code, err := b.kiwi(ctx, nil, b.repos, argv)
	if err != nil {
		res.ExitCode = -1
		return res, err
	}
	if code != 0 {
		b.progress("kiwi-ng system build failed with exit code %d after %s", code, since(step))
		res.ExitCode = code
		return res, nil
	}
	for _, s := range confinedScripts(filepath.Join(b.work, "bin")) {
		b.progress("ran confined by bubblewrap: %s", s)
	}
	b.progress("image built in %s", since(step))

	if err := os.MkdirAll(filepath.Dir(b.t.Dir()), 0o755); err != nil {
		return nil, fmt.Errorf("create bundle directory: %w", err)
	}
	b.progress("bundling the image as rpm")
	step = time.Now()
	code, err = b.kiwi(ctx, nil, []string{}, []string{Kiwi, "result", "bundle",
		"--id", b.o.BundleID, "--target-dir", b.out, "--bundle-dir", b.t.Dir(), "--package-as-rpm"})
	if err != nil {
		res.ExitCode = -1
		return res, err
	}
	if code != 0 {
		b.progress("kiwi-ng result bundle failed with exit code %d", code)
		res.ExitCode = code
		return res, nil
	}
	bins, err := b.sortBundle()
	if err != nil {
		return nil, err
	}
	if len(bins) == 0 {
		b.progress("kiwi-ng result bundle produced no rpm in %s", b.t.Dir())
		res.ExitCode = 1
		return res, nil
	}
	res.Binaries = bins
	b.progress("image bundled in %s", since(step))
	for _, p := range bins {
		b.progress("binary: %s", p)
	}
	b.progress("image build succeeded in %s", since(start))
	return res, nil
}

func since(t time.Time) time.Duration { return time.Since(t).Round(time.Second) }

// setup wipes what a previous build left and creates the scratch layout.
func (b *build) setup() error {
	if err := removeAll(b.work); err != nil {
		return err
	}
	for _, d := range []string{b.work, filepath.Join(b.work, "home"), filepath.Join(b.work, "tmp"), b.cache} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("create build directory: %w", err)
		}
	}
	// gpg-agent's socket lives in GNUPGHOME, and a socket path must be
	// shorter than 108 bytes: a directory below the target's work
	// directory is too long for deep projects, and gpg then fails.
	g, err := os.MkdirTemp("", "cb-gnupg-")
	if err != nil {
		return fmt.Errorf("create build directory: %w", err)
	}
	b.gnupg = g
	bin := filepath.Join(b.work, "bin")
	if err := installChroot(bin); err != nil {
		return err
	}
	b.env = commandEnv(bin, filepath.Join(b.work, "home"), b.gnupg)
	if err := copyDescription(b.o.Description, b.desc, b.o.Skip); err != nil {
		return err
	}
	// The copy is checked, not the source: it is what kiwi reads, with
	// the mirror substituted, and nobody else can change it any more.
	repos, err := checkDescription(b.desc)
	if err != nil {
		b.progress("%v", err)
		return err
	}
	// The packages of the repositories run their maintainer scripts as
	// root in kiwi's chroot, outside the confinement of the description's
	// own scripts: only repositories the runner trusts are allowed, as
	// for buildroots.
	allowed, err := mirror.Sources()
	if err != nil {
		return err
	}
	allowed = append(allowed, b.o.AllowRepositories...)
	p := &buildroot.Profile{Repositories: repos}
	if err := buildroot.CheckRepositories(p, allowed); err != nil {
		err = fmt.Errorf("%w: %w", ErrRefused, err)
		b.progress("%v", err)
		return err
	}
	b.repos = buildroot.RepositoryURLs(p)
	return nil
}

// global are kiwi-ng and its options before the service name. kiwi's
// temporary files go below the work directory, so a killed build's are
// removed with it. Only the system service knows --shared-cache-dir.
func (b *build) global(system bool) []string {
	argv := []string{Kiwi, "--temp-dir", filepath.Join(b.work, "tmp")}
	if system {
		argv = append(argv, "--shared-cache-dir", b.cache)
	}
	for _, p := range b.o.Profiles {
		argv = append(argv, "--profile", p)
	}
	return argv
}

// kiwi runs one kiwi-ng call with its standard output to stdout (nil:
// the log, written through the same serialised writer as its standard
// error and the proxy's notes); it may reach repos over the network
// proxy and nothing else.
func (b *build) kiwi(ctx context.Context, stdout io.Writer, repos []string, argv []string) (int, error) {
	return run(ctx, runOptions{env: b.env, dir: b.work, stdout: stdout, log: b.log, repos: repos, limits: b.o.Limits}, argv...)
}

// solve writes the solver file from kiwi's package list. A failure to
// solve does not stop the build, as in the original: the build reports the
// real problem (kiwi's solver needs python3-solv and deb2solv, which a
// runner may lack while it builds fine). A stale solver file is removed so
// nobody reads an older build's list.
func (b *build) solve(ctx context.Context) error {
	sf := b.t.SolverFile()
	if err := os.Remove(sf); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove old solver file: %w", err)
	}
	b.progress("solving the image package list")
	argv := append(b.global(false), "image", "info", "--description", b.desc, "--resolve-package-list")
	var out bytes.Buffer
	code, err := b.kiwi(ctx, &out, b.repos, argv)
	if err != nil {
		b.log.Write(out.Bytes())
		return err
	}
	data, perr := parseSolverOutput(out.Bytes(), b.log)
	switch {
	case code != 0:
		b.progress("solving the package list failed with exit code %d; building anyway", code)
		return nil
	case perr != nil:
		b.progress("solving the package list failed: %v; building anyway", perr)
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(sf), 0o755); err != nil {
		return fmt.Errorf("write solver file: %w", err)
	}
	if err := atomicfile.WriteFile(sf, data, 0o644); err != nil {
		return fmt.Errorf("write solver file: %w", err)
	}
	b.progress("package list written to %s", sf)
	return nil
}

// sortBundle moves the rpms kiwi bundled into Target.Dir() to
// Binaries()/<repo path>/<arch>/, after removing the previous bundles.
func (b *build) sortBundle() ([]string, error) {
	bin := b.t.Binaries()
	if err := removeAll(bin); err != nil {
		return nil, fmt.Errorf("remove old binaries: %w", err)
	}
	entries, err := os.ReadDir(b.t.Dir())
	if err != nil {
		return nil, fmt.Errorf("read bundle directory: %w", err)
	}
	var out []string
	for _, e := range entries {
		if !e.Type().IsRegular() || !strings.HasSuffix(e.Name(), ".rpm") {
			continue
		}
		arch, err := rpmArch(e.Name())
		if err != nil {
			return nil, err
		}
		dir := filepath.Join(bin, filepath.FromSlash(b.t.RepoPath()), arch)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("sort binaries: %w", err)
		}
		dst := filepath.Join(dir, e.Name())
		if err := os.Rename(filepath.Join(b.t.Dir(), e.Name()), dst); err != nil {
			return nil, fmt.Errorf("sort binaries: %w", err)
		}
		out = append(out, dst)
	}
	sort.Strings(out)
	return out, nil
}

var archRe = regexp.MustCompile(`^[A-Za-z0-9_]+$`)

// rpmArch is the arch of an rpm file named NAME-VERSION-RELEASE.ARCH.rpm,
// as rpmbuild names its output.
func rpmArch(name string) (string, error) {
	base := strings.TrimSuffix(name, ".rpm")
	i := strings.LastIndexByte(base, '.')
	if i < 0 || !archRe.MatchString(base[i+1:]) {
		return "", fmt.Errorf("sort binaries: no arch in rpm file name %q", name)
	}
	return base[i+1:], nil
}
