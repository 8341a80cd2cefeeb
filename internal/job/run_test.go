package job_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cloud-builder/cb/internal/broker"
	"github.com/cloud-builder/cb/internal/job"
	"github.com/cloud-builder/cb/internal/journal"
	"github.com/cloud-builder/cb/internal/message"
	"github.com/cloud-builder/cb/internal/target"
)

// runJob journals req on a runner whose checkout is sources, runs it with
// job.Run against the embedded broker and returns the entry and the
// responses published for it.
func runJob(t *testing.T, sources string, req *message.BuildRequest) (*journal.Entry, []*message.Response) {
	t.Helper()
	e, err := broker.StartEmbedded(broker.EmbeddedOptions{Listen: "127.0.0.1:0", DataDir: t.TempDir(), Partitions: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	opts := broker.Options{Brokers: e.Addrs()}
	client, err := broker.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(client.Close)
	root := t.TempDir()
	j, err := journal.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	entry, _, err := j.Add(req, false)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := job.Run(ctx, job.Config{RunnerRoot: root, Sources: sources, ThisHost: "runner-1", RunnerGroup: "debian",
		Publisher: client}, entry); err != nil {
		t.Fatalf("job.Run: %v", err)
	}
	c, err := broker.NewConsumer(opts, broker.ConsumerConfig{Topics: []string{message.TopicResponse}, Start: broker.Earliest})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var got []*message.Response
	for ctx.Err() == nil {
		pctx, pcancel := context.WithTimeout(ctx, time.Second)
		recs, _ := c.Poll(pctx)
		pcancel()
		for _, r := range recs {
			m, err := message.DecodeResponse(r.Value)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, m)
		}
		if len(recs) == 0 && len(got) > 0 {
			break
		}
	}
	return entry, got
}

func writeTree(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for rel, content := range files {
		writeFile(t, filepath.Join(root, rel), content)
	}
}

// A package whose buildroot cannot be prepared ends with one final
// response: recorded in the result file and the journal, then published.
func TestRunPackageWithoutBuildrootDescription(t *testing.T) {
	sources := t.TempDir()
	writeTree(t, sources, map[string]string{
		"projects/Debian/hello/.cb/cloud_builder.yml": "schema_version: 0.1\nname: hello\ndistributions:\n  - {dist: bookworm, arch: x86_64, runner_group: debian}\n",
	})
	req := &message.BuildRequest{SchemaVersion: message.SchemaVersion, RequestID: "r-1", RunnerGroup: "debian",
		Action: message.ActionPackageRebuild, Project: "projects/Debian/hello",
		Package: &message.PackageTarget{Dist: "bookworm", Arch: "x86_64"}}
	entry, got := runJob(t, sources, req)
	if len(got) != 1 {
		t.Fatalf("responses %+v, want exactly the final one", got)
	}
	final := got[0]
	if final.RequestID != "r-1" || final.ResponseCode != message.BuildRootSetupFailed ||
		!strings.Contains(final.Message, "Buildroot setup failed") || final.PackagePrepare == nil || final.PackagePrepare.ExitCode == 0 {
		t.Errorf("final response %+v", final)
	}
	if entry.State != journal.Responded || entry.Code != string(message.BuildRootSetupFailed) || entry.Attempts != 1 || entry.PID != os.Getpid() {
		t.Errorf("journal entry %+v", entry)
	}
	tg, err := target.ForRequest(filepath.Dir(filepath.Dir(entry.Path())), req)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(tg.ResultFile())
	if err != nil {
		t.Fatal(err)
	}
	if recorded, err := message.DecodeResponse(data); err != nil || recorded.ResponseCode != final.ResponseCode || recorded.Message != final.Message {
		t.Errorf("result file %q (%v) is not the published response", data, err)
	}
	if _, err := os.Stat(tg.PrepareLog()); err != nil {
		t.Errorf("prepare log: %v", err)
	}
}

// An image request whose selection vanished from the metadata after it
// was accepted fails with the image's final response.
func TestRunImageSelectionVanished(t *testing.T) {
	sources := t.TempDir()
	writeTree(t, sources, map[string]string{
		"projects/images/disk/.cb/cloud_builder.yml": "schema_version: 0.1\nname: disk\nimages:\n  - arch: x86_64\n    runner_group: debian\n    selection:\n      name: standard\n",
	})
	req := &message.BuildRequest{SchemaVersion: message.SchemaVersion, RequestID: "r-2", RunnerGroup: "debian",
		Action: message.ActionImageRebuild, Project: "projects/images/disk",
		Image: &message.ImageTarget{Selection: "gone", Arch: "x86_64"}}
	entry, got := runJob(t, sources, req)
	if len(got) != 1 || got[0].ResponseCode != message.ImageBuildFailed || !strings.Contains(got[0].Message, "vanished") ||
		got[0].Image == nil || got[0].Image.ExitCode == 0 {
		t.Fatalf("responses %+v", got)
	}
	if entry.State != journal.Responded || entry.Code != string(message.ImageBuildFailed) {
		t.Errorf("journal entry %+v", entry)
	}
}

// cb-run without a prepared buildroot refuses before it builds anything.
func TestBuildNeedsPreparedBuildroot(t *testing.T) {
	req := &message.BuildRequest{SchemaVersion: message.SchemaVersion, RequestID: "local", RunnerGroup: "local",
		Action: message.ActionPackageRebuild, Project: "projects/Debian/hello",
		Package: &message.PackageTarget{Dist: "bookworm", Arch: "x86_64"}}
	_, err := job.Build(context.Background(), job.Config{RunnerRoot: t.TempDir()}, req)
	if err == nil || !strings.Contains(err.Error(), "run cb-prepare first") {
		t.Fatalf("Build = %v, want a refusal naming cb-prepare", err)
	}
}
