package collect_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloud-builder/cb/internal/collect"
	"github.com/cloud-builder/cb/internal/repo"
	"github.com/cloud-builder/cb/internal/repo/repotest"
	"github.com/cloud-builder/cb/internal/upload"
)

// The benchmark measures what a runner waits for: one upload of a new
// package into a repository that already holds N packages, from the first
// byte sent to "published" (receive, verify, install, regenerate, sign,
// swap). Run it with
//
//	go test -run '^$' -bench Publish -benchtime 5x ./internal/collect
const benchExtra = 10

var benchSizes = []int{200, 2000}

func BenchmarkPublish(b *testing.B) {
	for _, kind := range []string{"rpm", "deb"} {
		for _, n := range benchSizes {
			b.Run(fmt.Sprintf("%s/%d", kind, n), func(b *testing.B) { benchPublish(b, kind, n) })
		}
	}
}

func benchPublish(b *testing.B, kind string, n int) {
	var pkgs []string
	var dir string
	switch kind {
	case "rpm":
		repotest.RequireTools(b, "rpmbuild", "createrepo_c", "gpg")
		pkgs, dir = synthRPMs(b), "noarch"
	case "deb":
		repotest.RequireTools(b, "dpkg-deb", "gpg")
		pkgs, dir = synthDebs(b), "all"
	}
	base := b.TempDir()
	cfg := collect.Config{RepoRoot: filepath.Join(base, "repo"), StateDir: filepath.Join(base, "state"),
		Token: testToken, UpdateInterval: time.Hour, Logger: slog.New(slog.DiscardHandler)}
	s, err := collect.New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	hs := httptest.NewServer(s.Handler())
	defer hs.Close()

	// Fill the repository directly, then publish once so the metadata
	// and its caches exist, as on a collector that has been running.
	r, err := repo.Open(cfg.RepoRoot, "projects/Bench/dist")
	if err != nil {
		b.Fatal(err)
	}
	fill := time.Now()
	for _, p := range pkgs[:n] {
		name := strings.SplitN(filepath.Base(p), "_", 2)[0]
		name = strings.TrimSuffix(strings.SplitN(name, "-1-1.", 2)[0], ".rpm")
		f := repo.File{Name: dir + "/" + filepath.Base(p), Size: fileSize(b, p), SHA256: "-"}
		staged := filepath.Join(base, "stage-"+filepath.Base(p))
		if err := os.Link(p, staged); err != nil {
			b.Fatal(err)
		}
		if _, err := r.Install(repo.Type(kind), repo.Build{Project: "projects/Bench/" + name, Name: name, Arch: "x86_64",
			RequestID: "fill", Files: []repo.File{f}}, map[string]string{f.Name: staged}); err != nil {
			b.Fatal(err)
		}
	}
	pub := &repo.Publisher{Signer: mustSigner(b, filepath.Join(cfg.StateDir, "gnupg"))}
	if err := pub.Publish(context.Background(), r); err != nil {
		b.Fatal(err)
	}
	b.Logf("filled %d packages and published from scratch in %s", n, time.Since(fill))
	c := &collect.Client{URL: hs.URL, Token: testToken, Attempts: 1, Logger: slog.New(slog.DiscardHandler)}
	extra := pkgs[len(pkgs)-benchExtra:]
	i := 0
	for b.Loop() {
		p := extra[i%len(extra)]
		name := fmt.Sprintf("extra%d", i%len(extra))
		u := upload.Upload{RequestID: fmt.Sprintf("bench-%d", i), Project: "projects/Bench/" + name, Name: name,
			RepoPath: "projects/Bench/dist", Arch: "x86_64", RepoType: kind,
			Files: []upload.File{{Path: p, Name: dir + "/" + filepath.Base(p)}}}
		if err := c.Upload(context.Background(), u); err != nil {
			b.Fatal(err)
		}
		i++
	}
	b.ReportMetric(b.Elapsed().Seconds()/float64(i), "s/publish")
}

func fileSize(b *testing.B, p string) int64 {
	st, err := os.Stat(p)
	if err != nil {
		b.Fatal(err)
	}
	return st.Size()
}

func mustSigner(b *testing.B, home string) *repo.Signer {
	s, err := repo.NewSigner(context.Background(), home, "", slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s
}

var (
	synthOnce  sync.Map // kind -> *synthSet
	synthTotal = benchSizes[len(benchSizes)-1] + benchExtra
)

type synthSet struct {
	dir   string
	once  sync.Once
	paths []string
	err   error
}

func synth(b *testing.B, kind string, make func(dir string) ([]string, error)) []string {
	v, _ := synthOnce.LoadOrStore(kind, &synthSet{})
	s := v.(*synthSet)
	s.once.Do(func() {
		dir, err := os.MkdirTemp("", "cb-bench-"+kind+"-")
		if err != nil {
			s.err = err
			return
		}
		s.dir = dir
		start := time.Now()
		s.paths, s.err = make(dir)
		b.Logf("made %d synthetic %s packages in %s", len(s.paths), kind, time.Since(start))
	})
	if s.err != nil {
		b.Fatal(s.err)
	}
	return s.paths
}

// synthRPMs builds every synthetic rpm in one rpmbuild run: one spec with
// a few thousand empty subpackages is much faster than as many specs.
func synthRPMs(b *testing.B) []string {
	return synth(b, "rpm", func(dir string) ([]string, error) {
		var spec strings.Builder
		spec.WriteString("Name: synth\nVersion: 1\nRelease: 1\nSummary: s\nLicense: MIT\nBuildArch: noarch\n%description\ns\n")
		for i := 0; i < synthTotal; i++ {
			fmt.Fprintf(&spec, "%%package -n synth%05d\nSummary: s\n%%description -n synth%05d\ns\n%%files -n synth%05d\n", i, i, i)
		}
		specFile := filepath.Join(dir, "synth.spec")
		if err := os.WriteFile(specFile, []byte(spec.String()), 0o644); err != nil {
			return nil, err
		}
		out := filepath.Join(dir, "out")
		cmd := exec.Command("rpmbuild", "-bb", "--nodeps", "--quiet", "--define", "_topdir "+filepath.Join(dir, "top"),
			"--define", "_rpmdir "+out, "--define", "__os_install_post %{nil}", "--define", "debug_package %{nil}", specFile)
		if o, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("rpmbuild: %v: %s", err, o)
		}
		var paths []string
		for i := 0; i < synthTotal; i++ {
			paths = append(paths, filepath.Join(out, "noarch", fmt.Sprintf("synth%05d-1-1.noarch.rpm", i)))
		}
		return paths, nil
	})
}

// synthDebs writes minimal .deb archives directly (ar of debian-binary,
// control.tar.gz, data.tar.gz); dpkg-deb reads them like any other.
func synthDebs(b *testing.B) []string {
	return synth(b, "deb", func(dir string) ([]string, error) {
		var paths []string
		for i := 0; i < synthTotal; i++ {
			name := fmt.Sprintf("synth%05d", i)
			control := fmt.Sprintf("Package: %s\nVersion: 1-1\nArchitecture: all\nMaintainer: Bench <b@example.org>\nDescription: synthetic %s\n", name, name)
			p := filepath.Join(dir, name+"_1-1_all.deb")
			if err := os.WriteFile(p, debArchive(map[string]string{"./control": control}, nil), 0o644); err != nil {
				return nil, err
			}
			paths = append(paths, p)
		}
		return paths, nil
	})
}

func debArchive(control, data map[string]string) []byte {
	tgz := func(files map[string]string) []byte {
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		tw := tar.NewWriter(zw)
		for n, c := range files {
			tw.WriteHeader(&tar.Header{Name: n, Mode: 0o644, Size: int64(len(c)), Typeflag: tar.TypeReg, ModTime: time.Unix(1700000000, 0)})
			tw.Write([]byte(c))
		}
		tw.Close()
		zw.Close()
		return buf.Bytes()
	}
	var ar bytes.Buffer
	ar.WriteString("!<arch>\n")
	member := func(name string, body []byte) {
		fmt.Fprintf(&ar, "%-16s%-12d%-6d%-6d%-8s%-10d`\n", name, 1700000000, 0, 0, "100644", len(body))
		ar.Write(body)
		if len(body)%2 == 1 {
			ar.WriteByte('\n')
		}
	}
	member("debian-binary", []byte("2.0\n"))
	member("control.tar.gz", tgz(control))
	member("data.tar.gz", tgz(data))
	return ar.Bytes()
}
