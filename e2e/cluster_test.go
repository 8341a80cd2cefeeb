package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/cloud-builder/cb/internal/message"
)

// TestClusterOfThreeRunners runs three runners and a collector as separate
// processes against one broker, sends 30 build requests to one runner
// group, and checks that every request gets exactly one final response,
// that every runner built some, and that the repository has every package.
func TestClusterOfThreeRunners(t *testing.T) {
	needRoot(t, "mmdebstrap", "dpkg-deb", "gpg")
	const n = 30
	s := newSystem(t)

	// 30 cheap packages sharing cb-hello's buildroot.
	var names []string
	for i := 1; i <= n; i++ {
		name := fmt.Sprintf("cb-tiny-%02d", i)
		names = append(names, name)
		dir := filepath.Join(s.work, "projects", "Cluster", name)
		copyTree(t, filepath.Join(repoRoot, "examples", "projects", "Debian", "cb-hello"), dir)
		for _, f := range []string{"debian/control", "debian/changelog", ".cb/cloud_builder.yml", "Makefile", "debian/copyright"} {
			p := filepath.Join(dir, f)
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte(strings.ReplaceAll(string(b), "cb-hello", name)), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	git(t, s.work, "add", "-A")
	git(t, s.work, "commit", "-q", "-m", "cluster packages")
	git(t, s.work, "push", "-q", "origin", "HEAD:main")

	var roots []string
	for i := 1; i <= 3; i++ {
		root := filepath.Join(s.dir, fmt.Sprintf("runner%d", i))
		sources := filepath.Join(s.dir, fmt.Sprintf("sources%d", i))
		git(t, s.dir, "clone", "-q", "--branch", "main", s.origin, sources)
		roots = append(roots, root)
		start(t, s.env, "cb-scheduler", "--runner-root", root, "--sources", sources, "--runner-group", "debian",
			"--this-host", fmt.Sprintf("runner%d", i), "--cache-dir", cacheDir(), "--build-limit", "2", "--poll-timeout", "1000")
	}
	waitGroupMembers(t, s.brokerAddr, "debian", 3)

	ids := map[string]string{}
	for _, name := range names {
		ids[s.requestPackage("Cluster", name)] = name
	}
	for id, name := range ids {
		final := s.resp.waitFinal(t, id, 30*time.Minute)
		if final.ResponseCode != message.PackageBuildSucceeded {
			t.Errorf("%s: %s (%s)", name, final.ResponseCode, final.Message)
		}
	}
	time.Sleep(3 * time.Second) // room for duplicates to show
	builtBy := map[string]int{}
	for id, name := range ids {
		finals := s.resp.finals(id)
		if len(finals) != 1 {
			t.Errorf("%s: %d final responses: %s", name, len(finals), joinCodes(codes(s.resp.of(id))))
			continue
		}
		host := strings.Split(finals[0].Identity, ":")[1]
		builtBy[host]++
	}
	t.Logf("builds per runner: %v", builtBy)
	if len(builtBy) != 3 {
		t.Errorf("want all three runners to build, got %v", builtBy)
	}
	// Every package is in the repository's metadata.
	waitFor(t, 2*time.Minute, "all packages in the repository index", func() bool {
		idx := repoIndex(t, filepath.Join(s.repoRoot, "projects", "Cluster", "bookworm"))
		for _, name := range names {
			if !strings.Contains(idx, "Package: "+name+"\n") {
				return false
			}
		}
		return true
	})
}

// waitGroupMembers waits until the consumer group has want members.
func waitGroupMembers(t *testing.T, addr, group string, want int) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	waitFor(t, 2*time.Minute, fmt.Sprintf("%d members in group %s", want, group), func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		gs, err := adm.DescribeGroups(ctx, group)
		if err != nil {
			return false
		}
		g, ok := gs[group]
		return ok && g.State == "Stable" && len(g.Members) == want
	})
}

// repoIndex returns every Packages index text below an apt repository
// directory (flat or dists/ layout).
func repoIndex(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	_ = filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() && filepath.Base(p) == "Packages" {
			data, _ := os.ReadFile(p)
			b.Write(data)
			b.WriteString("\n")
		}
		return nil
	})
	return b.String()
}
