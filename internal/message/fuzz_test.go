package message

import (
	"reflect"
	"strings"
	"testing"
)

// The fuzzers start from every wire sample of the original services (any
// decoder may be handed any message: topics get mixed up) plus the committed
// corpus in testdata/fuzz/<FuzzName>/. They check what must hold for any
// input: no panic, a one-line error, and for accepted input that the
// validated fields are safe and that encoding and decoding again gives the
// same value.

func addWireSeeds(f *testing.F) {
	for _, file := range wireSamples(f) {
		f.Add(readFile(f, file))
	}
	f.Add([]byte(validBuildRequest))
	f.Add([]byte(packageMetadata))
	f.Add([]byte(imageMetadata))
}

func checkError(t *testing.T, err error) {
	t.Helper()
	if msg := err.Error(); msg == "" || strings.Contains(msg, "\n") {
		t.Fatalf("error is not one line: %q", msg)
	}
}

func roundTrip[T any](t *testing.T, v T, decode func([]byte) (T, error)) {
	t.Helper()
	enc, err := Encode(v)
	if err != nil {
		t.Fatalf("encode accepted message: %v", err)
	}
	// Aliases may not blow a message up: what passed the decoder must stay
	// in proportion to the document size for everyone who prints it.
	if len(enc) > 10*MaxDocumentSize {
		t.Fatalf("accepted message encodes to %d bytes", len(enc))
	}
	again, err := decode(enc)
	if err != nil {
		t.Fatalf("decode our own encoding: %v\n%s", err, enc)
	}
	if !reflect.DeepEqual(v, again) {
		t.Fatalf("round trip changed the message\nbefore %#v\nafter  %#v\n%s", v, again, enc)
	}
}

func FuzzDecodeBuildRequest(f *testing.F) {
	addWireSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := DecodeBuildRequest(data)
		if err != nil {
			checkError(t, err)
			return
		}
		if err := ValidateProject(r.Project); err != nil {
			t.Fatalf("accepted project %q: %v", r.Project, err)
		}
		if (r.Package == nil) == (r.Image == nil) {
			t.Fatalf("accepted request with package %v and image %v", r.Package, r.Image)
		}
		for _, n := range []string{r.RunnerGroup, r.Arch(), r.RequestID} {
			if err := ValidateName(n); err != nil {
				t.Fatalf("accepted name %q: %v", n, err)
			}
		}
		if !requestActions[r.Action] {
			t.Fatalf("accepted action %q", r.Action)
		}
		roundTrip(t, r, DecodeBuildRequest)
	})
}

func FuzzDecodeResponse(f *testing.F) {
	addWireSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := DecodeResponse(data)
		if err != nil {
			checkError(t, err)
			return
		}
		if r.Identity == "" || r.ResponseCode == "" {
			t.Fatalf("accepted response without identity or code: %#v", r)
		}
		roundTrip(t, r, DecodeResponse)
	})
}

func FuzzDecodeInfoRequest(f *testing.F) {
	addWireSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := DecodeInfoRequest(data)
		if err != nil {
			checkError(t, err)
			return
		}
		if err := ValidateProject(r.Project); err != nil {
			t.Fatalf("accepted project %q: %v", r.Project, err)
		}
		if r.Package == nil && r.Image == nil {
			t.Fatal("accepted info request without target")
		}
		roundTrip(t, r, DecodeInfoRequest)
	})
}

func FuzzDecodeInfoResponse(f *testing.F) {
	addWireSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := DecodeInfoResponse(data)
		if err != nil {
			checkError(t, err)
			return
		}
		if r.RequestID == "" || r.Identity == "" || r.Project == "" {
			t.Fatalf("accepted info response without request_id, identity or project: %#v", r)
		}
		roundTrip(t, r, DecodeInfoResponse)
	})
}

func FuzzDecodeMetadata(f *testing.F) {
	addWireSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := DecodeMetadata(data, "")
		if err != nil {
			checkError(t, err)
			return
		}
		if err := ValidateName(m.Name); err != nil {
			t.Fatalf("accepted name %q: %v", m.Name, err)
		}
		for _, d := range m.Distributions {
			for _, n := range []string{d.Dist, d.Arch, d.RunnerGroup} {
				if err := ValidateName(n); err != nil {
					t.Fatalf("accepted distribution name %q: %v", n, err)
				}
			}
		}
		for _, i := range m.Images {
			for _, n := range append([]string{i.Arch, i.RunnerGroup, i.Selection.Name}, i.Selection.Profiles...) {
				if err := ValidateName(n); err != nil {
					t.Fatalf("accepted image name %q: %v", n, err)
				}
			}
		}
		// The directory check holds exactly when the names match.
		if _, err := DecodeMetadata(data, m.Name); err != nil {
			t.Fatalf("refused with its own name as directory: %v", err)
		}
		if _, err := DecodeMetadata(data, m.Name+"x"); err == nil {
			t.Fatal("accepted with a different directory name")
		}
		roundTrip(t, m, func(b []byte) (*Metadata, error) { return DecodeMetadata(b, "") })
	})
}
