package web

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/cloud-builder/cb/internal/broker"
	"github.com/cloud-builder/cb/internal/collect"
	"github.com/cloud-builder/cb/internal/message"
)

func TestReadingIsOpenOnLoopbackOnly(t *testing.T) {
	s := newUISystem(t, Config{})
	h := s.ui.Handler()
	for _, p := range []string{"/ui/", "/api/v1/targets", "/api/v1/runners", "/ui/runners", "/ui/events"} {
		t.Run(p, func(t *testing.T) {
			if w := remote(h, httptest.NewRequest("GET", p, nil)); w.Code != http.StatusUnauthorized {
				t.Errorf("remote without credential: %d", w.Code)
			}
			r := httptest.NewRequest("GET", p, nil)
			r.Header.Set("Authorization", "Bearer wrong")
			if w := remote(h, r); w.Code != http.StatusUnauthorized {
				t.Errorf("remote with a wrong token: %d", w.Code)
			}
			if p == "/ui/events" {
				return // a stream; the loopback case is covered by the browser tests
			}
			r = httptest.NewRequest("GET", p, nil)
			r.Header.Set("Authorization", "Bearer "+testToken)
			if w := remote(h, r); w.Code != http.StatusOK {
				t.Errorf("remote with the token: %d", w.Code)
			}
			resp, err := http.Get(s.url + p)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("loopback: %d", resp.StatusCode)
			}
		})
	}
}

func TestLoginSetsACookie(t *testing.T) {
	s := newUISystem(t, Config{})
	h := s.ui.Handler()
	w := remote(h, httptest.NewRequest("POST", "/ui/login", strings.NewReader(url.Values{"token": {"nope"}, "next": {"/ui/runners"}}.Encode())))
	if w.Code != http.StatusUnauthorized {
		t.Fatalf("wrong token accepted: %d", w.Code)
	}
	r := httptest.NewRequest("POST", "/ui/login", strings.NewReader(url.Values{"token": {testToken}, "next": {"//evil.example/"}}.Encode()))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	w = remote(h, r)
	if w.Code != http.StatusSeeOther || w.Header().Get("Location") != "/ui/" {
		t.Fatalf("login: %d to %q (an off-site next must not be followed)", w.Code, w.Header().Get("Location"))
	}
	cookie := w.Result().Cookies()
	if len(cookie) != 1 || !cookie[0].HttpOnly || cookie[0].SameSite != http.SameSiteStrictMode {
		t.Fatalf("cookie %+v", cookie)
	}
	r = httptest.NewRequest("GET", "/ui/", nil)
	r.AddCookie(cookie[0])
	if w := remote(h, r); w.Code != http.StatusOK {
		t.Errorf("with the cookie: %d", w.Code)
	}
}

// The rebuild button sends an ordinary build request, and only with a
// credential: loopback alone is not enough.
func TestRebuildNeedsACredentialAndSendsARequest(t *testing.T) {
	s := newUISystem(t, Config{})
	const p = "projects/Debian/cb-hello"
	s.request("first", p, "bookworm")
	post := func(auth, ctype, body string) *http.Response {
		req, _ := http.NewRequest("POST", s.url+"/api/v1/rebuild", strings.NewReader(body))
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		req.Header.Set("Content-Type", ctype)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	body := `{"target":"` + Key(p, "bookworm.x86_64") + `"}`
	if r := post("", "application/json", body); r.StatusCode != http.StatusUnauthorized {
		t.Errorf("rebuild from loopback without a token: %d", r.StatusCode)
	}
	if r := post("Bearer "+testToken, "application/x-www-form-urlencoded", body); r.StatusCode != http.StatusUnsupportedMediaType {
		t.Errorf("rebuild as a form: %d", r.StatusCode)
	}
	if r := post("Bearer "+testToken, "application/json", `{"target":"projects/../etc@x.y"}`); r.StatusCode != http.StatusBadRequest {
		t.Errorf("rebuild of an invalid target: %d", r.StatusCode)
	}
	r := post("Bearer "+testToken, "application/json", body)
	if r.StatusCode != http.StatusAccepted {
		t.Fatalf("rebuild: %d", r.StatusCode)
	}
	var out struct {
		RequestID string `json:"request_id"`
	}
	json.NewDecoder(r.Body).Decode(&out)
	r.Body.Close()
	// The request is on the runner group's topic, as cb-ctl would send it.
	cons, err := broker.NewConsumer(broker.Options{Brokers: s.broker.Addrs()}, broker.ConsumerConfig{Topics: []string{"debian"}})
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		recs, err := cons.Poll(ctx)
		if err != nil {
			t.Fatalf("rebuild request not found: %v", err)
		}
		for _, rec := range recs {
			req, err := message.DecodeBuildRequest(rec.Value)
			if err != nil {
				t.Fatal(err)
			}
			if req.RequestID == out.RequestID {
				if req.Action != message.ActionPackageRebuild || req.Project != p || req.Package.Dist != "bookworm" || req.RunnerGroup != "debian" {
					t.Errorf("request %+v", req)
				}
				return
			}
		}
	}
}

func TestJSONHasThePagesData(t *testing.T) {
	s := newUISystem(t, Config{Status: func(context.Context) (*collect.Status, error) {
		lu := time.Date(2026, 11, 30, 8, 0, 0, 0, time.UTC)
		return &collect.Status{SigningKey: "ABCDEF0123456789", Repositories: []collect.RepoStatus{
			{Path: "projects/Debian/bookworm", Type: "deb", Packages: 1, Files: 2, Names: []string{"cb-hello"}, LastUpdate: &lu},
			{Path: "projects/RPM/bookworm", Type: "rpm", Packages: 1, Files: 1, Names: []string{"cb-hello-rpm"}, LastError: "createrepo_c failed"},
		}}, nil
	}})
	const p = "projects/Debian/cb-hello"
	key := Key(p, "bookworm.x86_64")
	s.heartbeat("10.0.0.7", "")
	s.request("r1", p, "bookworm")
	s.respond("r1", p, message.PackageRequestAccepted, "Accept", bookworm)
	s.waitState(key, Building)
	get := func(path string, v any) string {
		resp, err := http.Get(s.url + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %s", path, resp.Status)
		}
		if v != nil {
			if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
				t.Fatalf("%s: %v", path, err)
			}
			return ""
		}
		var b strings.Builder
		buf := make([]byte, 1<<16)
		for {
			n, err := resp.Body.Read(buf)
			b.Write(buf[:n])
			if err != nil {
				return b.String()
			}
		}
	}
	var o Overview
	get("/api/v1/targets?state=building", &o)
	if o.Targets != 1 || len(o.Matrix) != 1 || o.Matrix[0].Cells[0].Key != key || o.Counts[Building] != 1 {
		t.Errorf("targets %+v", o)
	}
	var tv TargetView
	get("/api/v1/targets/"+escapeKey(key), &tv)
	if tv.State != Building || len(tv.Requests) != 1 || tv.Runner != "10.0.0.7" {
		t.Errorf("target %+v", tv)
	}
	var rv RunnersView
	get("/api/v1/runners", &rv)
	if len(rv.Runners) != 1 || !rv.Runners[0].Alive || rv.Runners[0].BuildLimit != 2 {
		t.Errorf("runners %+v", rv)
	}
	var repos RepoView
	get("/api/v1/repositories", &repos)
	if repos.Status == nil || len(repos.Status.Repositories) != 2 {
		t.Errorf("repositories %+v", repos)
	}
	html := get("/ui/repositories", nil)
	for _, want := range []string{
		"ABCDEF0123456789", "cb-hello-rpm", "createrepo_c failed",
		`deb [signed-by=/etc/apt/keyrings/cloud-builder.gpg] ` + s.url + `/projects/Debian/bookworm bookworm main`,
		"baseurl=" + s.url + "/projects/RPM/bookworm", "gpgkey=" + s.url + "/repo.key",
	} {
		if !strings.Contains(html, want) {
			t.Errorf("repositories page lacks %q", want)
		}
	}
	if html := get("/ui/runners", nil); !strings.Contains(html, "10.0.0.7") || !strings.Contains(html, "alive") {
		t.Errorf("runners page:\n%s", html)
	}
	for _, p := range []string{"/api/v1/targets/projects/Debian/nope@bookworm.x86_64", "/ui/targets/projects/../x@a.b", "/ui/artifacts/projects/Debian/nope@bookworm.x86_64/build.log"} {
		resp, err := http.Get(s.url + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("%s: %s, want 404", p, resp.Status)
		}
	}
}

func TestErrorLine(t *testing.T) {
	for name, tc := range map[string]struct{ log, want string }{
		"compiler": {"cc -c x.c\nx.c:4:9: error: ‘y’ undeclared (first use in this function)\nx.c:4:9: note: each undeclared identifier is reported only once\nx.c:9:1: error: second\nmake[1]: *** [Makefile:3: x] Error 1\ndh_auto_build: error: make -j2 returned exit code 2\ndpkg-buildpackage: error: debian/rules build subprocess returned exit status 2\n=== finished 2026: exit code 2\n",
			"x.c:4:9: error: ‘y’ undeclared (first use in this function)"},
		"rpmbuild":      {"+ make\nerror: Bad exit status from /var/tmp/rpm-tmp.x (%build)\n    Bad exit status from /var/tmp/rpm-tmp.x (%build)\n", "error: Bad exit status from /var/tmp/rpm-tmp.x (%build)"},
		"no error word": {"step 1\nsegmentation fault\n=== finished: exit code 139\n", "segmentation fault"},
		"failed":        {"E: Unable to locate package libnope\nmmdebstrap failed\n", "mmdebstrap failed"},
	} {
		t.Run(name, func(t *testing.T) {
			if got := ErrorLine(strings.NewReader(tc.log)); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}
