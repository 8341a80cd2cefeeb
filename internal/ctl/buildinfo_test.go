package ctl_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/cloud-builder/cb/internal/message"
)

func TestBuildInfoOneRunner(t *testing.T) {
	c := newCluster(t)
	a := c.startRunner("runner-a", false, nil)
	c.startRunner("runner-b", false, nil)
	a.built(t, xclock, time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), map[string]string{"x.rpm": "x"})

	cl, stdout, stderr := c.client(2, 1500*time.Millisecond)
	if err := cl.BuildInfo(testCtx(t), xclock); err != nil {
		t.Fatal(err)
	}
	var got message.InfoResponse
	if err := json.Unmarshal([]byte(stdout.String()), &got); err != nil {
		t.Fatalf("output is not one JSON object: %v\n%s", err, stdout)
	}
	if got.SourceIP != "runner-a" || got.BuildStatus != message.PackageBuildSucceeded || got.UTCModificationTime != "2026-01-02 03:04:05.000000" {
		t.Fatalf("answer %+v", got)
	}
	if !strings.HasPrefix(got.ArtifactURL, a.srv.URL+"/") {
		t.Fatalf("artifact url %q", got.ArtifactURL)
	}
	if !strings.Contains(stderr.String(), "1 of 2 runners answered") {
		t.Fatalf("no warning about the silent runner: %q", stderr)
	}
}

func TestBuildInfoNewestWins(t *testing.T) {
	older := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	newer := older.Add(time.Hour)
	for _, tc := range []struct {
		name       string
		aT, bT     time.Time
		wantSource string
	}{
		{"b newer", older, newer, "runner-b"},
		{"a newer", newer, older, "runner-a"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCluster(t)
			a := c.startRunner("runner-a", false, nil)
			b := c.startRunner("runner-b", false, nil)
			a.built(t, xclock, tc.aT, nil)
			b.built(t, xclock, tc.bT, nil)
			cl, _, stderr := c.client(2, 30*time.Second)
			res, err := cl.Info(testCtx(t), xclock)
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Answers) != 2 || res.Newest.SourceIP != tc.wantSource {
				t.Fatalf("%d answers, newest from %s, want %s", len(res.Answers), res.Newest.SourceIP, tc.wantSource)
			}
			if stderr.String() != "" {
				t.Fatalf("unexpected stderr %q", stderr)
			}
		})
	}
}

// TestRespondAlwaysStopsAtRunnerCount: with both runners answering and
// runner_count 2, the request completes on the second answer instead of
// waiting for the (here: ten minute) silence timeout.
func TestRespondAlwaysStopsAtRunnerCount(t *testing.T) {
	c := newCluster(t)
	a := c.startRunner("runner-a", true, nil)
	c.startRunner("runner-b", true, nil)
	a.built(t, xclock, time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), nil)
	cl, _, _ := c.client(2, 10*time.Minute)
	res, err := cl.Info(testCtx(t), xclock)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Complete || len(res.Answers) != 2 {
		t.Fatalf("complete=%v with %d answers", res.Complete, len(res.Answers))
	}
	if res.Newest.SourceIP != "runner-a" {
		t.Fatalf("newest from %s; runner-b never built it", res.Newest.SourceIP)
	}
	for _, ans := range res.Answers {
		if ans.SourceIP == "runner-b" && (ans.UTCModificationTime != "none" || ans.ArtifactURL != "") {
			t.Fatalf("runner-b claims a build: %+v", ans)
		}
	}
}

func TestBuildInfoNoAnswer(t *testing.T) {
	c := newCluster(t)
	c.startRunner("runner-a", false, nil)
	cl, stdout, _ := c.client(1, 800*time.Millisecond)
	err := cl.BuildInfo(testCtx(t), xclock)
	if err == nil || !strings.Contains(err.Error(), "no runner answered") {
		t.Fatalf("err = %v", err)
	}
	if stdout.String() != "" {
		t.Fatalf("printed %q", stdout)
	}
}
