package bearer

import (
	"errors"
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	for _, tt := range []struct {
		url   string
		allow bool
		ok    bool
	}{
		{"https://repo.example:8080", false, true},
		{"http://127.0.0.1:8080", false, true},
		{"http://127.9.9.9:8080/x", false, true},
		{"http://[::1]:8080", false, true},
		{"http://localhost:8080", false, true},
		{"http://LOCALHOST", false, true},
		{"http://192.0.2.1:1", false, false},
		{"http://10.77.0.1:8080", false, false},
		{"http://[2001:db8::1]:8080", false, false},
		{"http://[::ffff:192.0.2.1]:80", false, false},
		{"http://repo.example:8080", false, false},
		{"http://localhost.evil.example", false, false},
		{"http://127.0.0.1.nip.io", false, false},
		{"http://192.0.2.1:1", true, true},
		{"ftp://127.0.0.1", true, false},
		{"://bad", true, false},
	} {
		err := Check(tt.url, tt.allow, "collector.allow_plain_http")
		if (err == nil) != tt.ok {
			t.Errorf("Check(%q, %v) = %v, want ok=%v", tt.url, tt.allow, err, tt.ok)
		}
	}
	err := Check("http://user:pw@192.0.2.1:1/p?token=x", false, "collector.allow_plain_http")
	if !errors.Is(err, ErrPlainHTTP) {
		t.Fatalf("got %v, want ErrPlainHTTP", err)
	}
	for _, want := range []string{"http://192.0.2.1:1/p", "collector.allow_plain_http"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
	for _, leak := range []string{"pw", "token=x"} {
		if strings.Contains(err.Error(), leak) {
			t.Errorf("error %q shows %q", err, leak)
		}
	}
}
