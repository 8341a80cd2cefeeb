package depsolver

import (
	"strings"
	"testing"
)

// A base repository change rebuilds only the targets whose solved
// buildroot packages would change.
func TestBaseChanged(t *testing.T) {
	s, err := New(Config{URL: "file:///nowhere.git", Dir: t.TempDir(), CollectorURL: "file:///nowhere"})
	if err != nil {
		t.Fatal(err)
	}
	a, b := pkg("a", []string{"a"}, "gcc"), pkg("b", []string{"b"}, "gcc")
	s.eng = newTestEngine(a, b)
	s.eng.Finished(a.ID, true, map[string]string{"gcc": "12.2.0-14", "make": "4.3-4.1"})
	s.eng.Finished(b.ID, true, map[string]string{"make": "4.3-4.1"})
	s.baseChanged("base", Names{"gcc": {"12.2.0-14", "12.2.0-15"}, "make": {"4.3-4.1"}})
	if st := s.eng.Status(a.ID); st.State != StateIdle {
		t.Fatalf("a's solved version is still in the index, yet %+v", st)
	}
	s.baseChanged("base", Names{"gcc": {"12.2.0-15"}, "make": {"4.3-4.1"}})
	st := s.eng.Status(a.ID)
	if st.State != StateQueued || !strings.Contains(st.Reason, "base repository change: gcc 12.2.0-14 -> 12.2.0-15") {
		t.Fatalf("a: %+v", st)
	}
	if st := s.eng.Status(b.ID); st.State != StateIdle {
		t.Fatalf("b has no changed package, yet %+v", st)
	}
}
