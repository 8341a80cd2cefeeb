package ctl_test

import (
	"context"
	"testing"
	"time"
)

// BenchmarkBuildInfo measures what one `cb-ctl --build-info` costs against
// two respond-always runners on the embedded broker: connect, subscribe,
// send, collect runner_count answers.
func BenchmarkBuildInfo(b *testing.B) {
	c := newCluster(b)
	a := c.startRunner("runner-a", true, nil)
	c.startRunner("runner-b", true, nil)
	a.built(b, xclock, time.Now(), nil)
	cl, _, _ := c.client(2, 30*time.Second)
	ctx := context.Background()
	b.ResetTimer()
	for b.Loop() {
		res, err := cl.Info(ctx, xclock)
		if err != nil || !res.Complete {
			b.Fatalf("%v complete=%v", err, res != nil && res.Complete)
		}
	}
}
