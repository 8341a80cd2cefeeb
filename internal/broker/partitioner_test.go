package broker

import "testing"

// A fresh producer must not always start on partition 0: one-shot clients
// (cb-ctl, cb-fetch) would otherwise feed only the first runner.
func TestPartitionerStartsAtARandomPartition(t *testing.T) {
	first := map[int]bool{}
	for i := 0; i < 200; i++ {
		p := randomStartRoundRobin{}.ForTopic("debian")
		first[p.Partition(nil, 3)] = true
	}
	if len(first) != 3 {
		t.Fatalf("first partitions of 200 producers: %v, want all of 0..2", first)
	}
	p := randomStartRoundRobin{}.ForTopic("debian")
	a, b, c, d := p.Partition(nil, 3), p.Partition(nil, 3), p.Partition(nil, 3), p.Partition(nil, 3)
	if b != (a+1)%3 || c != (a+2)%3 || d != a {
		t.Fatalf("not round robin: %d %d %d %d", a, b, c, d)
	}
}
