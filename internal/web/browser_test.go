package web

import (
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/cloud-builder/cb/internal/artifact"
	"github.com/cloud-builder/cb/internal/message"
	"github.com/cloud-builder/cb/internal/target"
	"github.com/cloud-builder/cb/internal/web/webtest"
)

// cellJS is the state shown in the matrix cell of key ("" when none).
func cellJS(key string) string {
	return fmt.Sprintf(`(() => { const td = document.querySelector('td[data-key="' + CSS.escape(%s) + '"]'); return td ? td.dataset.state : ''; })()`, webtest.JSString(key))
}

// A build requested while the page is open goes queued → building →
// succeeded in the matrix, without a reload.
func TestBrowserMatrixFollowsABuild(t *testing.T) {
	s := newUISystem(t, Config{})
	// Some history, so the matrix has rows and columns already.
	s.request("old1", "projects/Debian/cb-hello", "bookworm")
	s.respond("old1", "projects/Debian/cb-hello", message.PackageRequestAccepted, "Accept package build request", bookworm)
	s.respond("old1", "projects/Debian/cb-hello", message.PackageBuildSucceeded, "Package build finished", nil)
	s.request("old2", "projects/Debian/cb-broken", "bookworm")
	s.respond("old2", "projects/Debian/cb-broken", message.PackageRequestAccepted, "Accept package build request", bookworm)
	s.respond("old2", "projects/Debian/cb-broken", message.PackageBuildFailed, "Package build failed: exit status 2", nil)
	s.waitState(Key("projects/Debian/cb-broken", "bookworm.x86_64"), Failed)

	ctx := webtest.NewBrowser(t, 1200, 700)
	webtest.Do(t, ctx, chromedp.Navigate(s.url+"/ui/"), chromedp.WaitVisible("#matrix"))
	webtest.WaitJS(t, ctx, 10*time.Second, "live updates connect", `document.querySelector('#conn').textContent === 'live'`)
	// A marker that a reload would wipe.
	webtest.Eval[bool](t, ctx, `window.notReloaded = true`)

	const p = "projects/RPM/cb-hello-rpm"
	key := Key(p, "bookworm.x86_64")
	s.publish("debian", pkgRequest("new", p, "bookworm"))
	webtest.WaitJS(t, ctx, 10*time.Second, "new target shows queued", cellJS(key)+` === 'queued'`)
	s.respond("new", p, message.PackageRequestAccepted, "Accept package build request", bookworm)
	webtest.WaitJS(t, ctx, 10*time.Second, "target shows building", cellJS(key)+` === 'building'`)
	s.respond("new", p, message.BuildRootSetupSucceeded, "Buildroot ready for package build", nil)
	s.respond("new", p, message.PackageBuildSucceeded, "Package build finished", nil)
	webtest.WaitJS(t, ctx, 10*time.Second, "target shows succeeded", cellJS(key)+` === 'succeeded'`)

	if !webtest.Eval[bool](t, ctx, `window.notReloaded === true`) {
		t.Fatal("the page was reloaded")
	}
	hist := webtest.Eval[[]string](t, ctx, fmt.Sprintf(`cbLive.history.filter(h => h[0] === %s).map(h => h[1]).filter((s, i, a) => i === 0 || a[i-1] !== s)`, webtest.JSString(key)))
	if strings.Join(hist, ",") != "queued,building,succeeded" {
		t.Errorf("states shown %v, want queued, building, succeeded", hist)
	}
	// The cell carries its age and duration, the reason as text.
	text := webtest.Eval[string](t, ctx, `document.querySelector('td[data-key="`+key+`"]').innerText`)
	if !strings.Contains(text, "ago") || !strings.Contains(text, "Package build finished") {
		t.Errorf("cell text %q lacks age or reason", text)
	}

	// Every other state, a second dist and an image, for the picture.
	trixie := &message.Target{Arch: "x86_64", Dist: "trixie"}
	s.publish("debian", pkgRequest("t1", "projects/Debian/cb-hello", "trixie"))
	s.respond("t1", "projects/Debian/cb-hello", message.PackageRequestAccepted, "Accept package build request", trixie)
	s.publish("debian", pkgRequest("t2", "projects/Debian/libfoo", "trixie"))
	s.publish("debian", pkgRequest("t3", "projects/Debian/foo-tools", "trixie"))
	s.respond("t3", "projects/Debian/foo-tools", message.PackageBuildBlocked, "waits for projects/Debian/libfoo@trixie.x86_64", trixie)
	s.publish("debian", pkgRequest("t4", "projects/Debian/foo-tools", "bookworm"))
	s.respond("t4", "projects/Debian/foo-tools", message.PackageBuildUnresolvable, "nothing provides libbar-dev (>= 2)", bookworm)
	s.publish("debian", pkgRequest("t5", "projects/Debian/cb-hello-arm", "bookworm"))
	s.respond("t5", "projects/Debian/cb-hello-arm", message.PackageTargetNotConfigured, "No package config for: bookworm.x86_64 in runner group debian", bookworm)
	img := &message.BuildRequest{SchemaVersion: message.SchemaVersion, RequestID: "t6", RunnerGroup: "debian",
		Action: message.ActionImageRebuild, Project: "projects/images/debian/cb-image-tbz", Image: &message.ImageTarget{Arch: "x86_64", Selection: "standard"}}
	s.publish("debian", img)
	s.respond("t6", img.Project, message.ImageRequestAccepted, "Accept image build request", &message.Target{Arch: "x86_64", Selection: "standard"})
	s.respond("t6", img.Project, message.ImageBuildSucceeded, "Image build finished", nil)
	webtest.WaitJS(t, ctx, 10*time.Second, "all states shown", `['queued','blocked','building','succeeded','failed','unresolvable','rejected'].every(st => document.querySelector('td[data-state="' + st + '"]'))`)
	webtest.WaitJS(t, ctx, 10*time.Second, "image shown", cellJS(Key(img.Project, "standard.x86_64"))+` === 'succeeded'`)
	webtest.Screenshot(t, ctx, "overview")
}

// A filter lives in the URL: it survives a reload.
func TestBrowserFilterSurvivesReload(t *testing.T) {
	s := newUISystem(t, Config{})
	for i, st := range []string{message.PackageBuildSucceeded, message.PackageBuildFailed, message.PackageBuildFailed} {
		p := fmt.Sprintf("projects/Debian/pkg%d", i)
		id := fmt.Sprintf("r%d", i)
		s.request(id, p, "bookworm")
		s.respond(id, p, message.PackageRequestAccepted, "Accept", bookworm)
		s.respond(id, p, st, "done", nil)
	}
	s.waitState(Key("projects/Debian/pkg2", "bookworm.x86_64"), Failed)

	// A phone-sized window: the page must not need sideways scrolling
	// (the matrix scrolls inside its box).
	ctx := webtest.NewBrowser(t, 390, 844)
	webtest.Do(t, ctx, chromedp.Navigate(s.url+"/ui/"), chromedp.WaitVisible("#filters"))
	if w := webtest.Eval[[]int](t, ctx, `[document.documentElement.scrollWidth, document.documentElement.clientWidth]`); w[0] > w[1] {
		t.Errorf("page is %dpx wide in a %dpx window", w[0], w[1])
	}
	webtest.Do(t, ctx,
		chromedp.SetValue(`select[name=state]`, "failed"),
		chromedp.Submit(`#filters`),
	)
	webtest.WaitJS(t, ctx, 10*time.Second, "filtered page", `location.search.includes('state=failed')`)
	check := func(when string) {
		rows := webtest.Eval[[]string](t, ctx, `Array.from(document.querySelectorAll('#matrix tbody tr')).map(r => r.dataset.project)`)
		if strings.Join(rows, ",") != "projects/Debian/pkg1,projects/Debian/pkg2" {
			t.Errorf("%s: rows %v, want the two failed packages", when, rows)
		}
		if v := webtest.Eval[string](t, ctx, `document.querySelector('select[name=state]').value`); v != "failed" {
			t.Errorf("%s: state filter shows %q", when, v)
		}
	}
	check("after filtering")
	webtest.Do(t, ctx, chromedp.Reload(), chromedp.WaitVisible("#matrix"))
	check("after reload")
}

// A request for an unknown target shows "rejected" with its reason.
func TestBrowserRejectedRequest(t *testing.T) {
	s := newUISystem(t, Config{})
	const p = "projects/Debian/no-such-package"
	key := Key(p, "bookworm.x86_64")
	ctx := webtest.NewBrowser(t, 1000, 700)
	webtest.Do(t, ctx, chromedp.Navigate(s.url+"/ui/"), chromedp.WaitVisible("#filters"))
	webtest.WaitJS(t, ctx, 10*time.Second, "live updates connect", `document.querySelector('#conn').textContent === 'live'`)
	s.publish("debian", pkgRequest("bad", p, "bookworm"))
	s.respond("bad", p, message.ProjectDoesNotExist, "Project does not exist: "+p, bookworm)
	webtest.WaitJS(t, ctx, 10*time.Second, "cell shows rejected", cellJS(key)+` === 'rejected'`)
	if text := webtest.Eval[string](t, ctx, `document.querySelector('td[data-key="`+key+`"]').innerText`); !strings.Contains(text, "Project does not exist") {
		t.Errorf("rejected cell %q does not say why", text)
	}
	webtest.Do(t, ctx, chromedp.Navigate(s.url+targetURL(key)), chromedp.WaitVisible("#live"))
	if got := webtest.Eval[string](t, ctx, `document.querySelector('#state').textContent + ' | ' + document.querySelector('#reason').textContent`); got != "rejected | Project does not exist: "+p {
		t.Errorf("target page says %q", got)
	}
}

// runnerRoot is a runner's state as the artifact endpoint serves it.
type runnerRoot struct {
	dir string
	tg  target.Target
	url string
}

func newRunnerRoot(t *testing.T, project, dist string) *runnerRoot {
	dir := t.TempDir()
	tg, err := target.New(dir, project, dist, "x86_64")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(tg.Dir()), 0o755); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(artifact.New(artifact.Config{Root: dir, Token: "artifact-token", PollInterval: 50 * time.Millisecond,
		EndGrace: time.Second}))
	t.Cleanup(srv.Close)
	return &runnerRoot{dir: dir, tg: tg, url: srv.URL}
}

// heartbeat announces the runner (and its artifact endpoint) to the UI.
func (s *uiSystem) heartbeat(host, artifactURL string, running ...string) {
	s.publish(message.TopicHeartbeat, &message.Heartbeat{SchemaVersion: message.SchemaVersion,
		Identity: "CBScheduler:" + host + ":1:(system)", RunnerGroup: "debian", SourceIP: host, ArtifactURL: artifactURL,
		BuildLimit: 2, Interval: 10, QueueLag: 0, Running: running, Time: message.FormatTime(time.Now())})
}

// The target page streams the build log while it grows, says whether it
// runs or finished, and offers the binaries.
func TestBrowserTargetPageStreamsTheLog(t *testing.T) {
	const p = "projects/Debian/cb-slow"
	rr := newRunnerRoot(t, p, "bookworm")
	s := newUISystem(t, Config{ArtifactToken: "artifact-token"})
	key := Key(p, "bookworm.x86_64")
	s.heartbeat("10.0.0.7", rr.url, key)
	s.request("slow", p, "bookworm")
	s.respond("slow", p, message.PackageRequestAccepted, "Accept package build request", bookworm)
	s.waitState(key, Building)

	// A running build: a live process in the pid file, a log that grows.
	sleeper := exec.Command("sleep", "300")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	defer sleeper.Process.Kill()
	if err := os.WriteFile(rr.tg.PIDFile(), []byte(fmt.Sprint(sleeper.Process.Pid)), 0o644); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(rr.tg.BuildLog())
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	fmt.Fprintln(logf, "cb-slow: compiling line 1")

	ctx := webtest.NewBrowser(t, 1100, 800)
	webtest.Do(t, ctx, chromedp.Navigate(s.url+targetURL(key)), chromedp.WaitVisible("#logtext"))
	webtest.WaitJS(t, ctx, 10*time.Second, "first line streamed", `document.querySelector('#logtext').textContent.includes('compiling line 1')`)
	webtest.WaitJS(t, ctx, 5*time.Second, "log state running", `document.querySelector('#logstate').textContent === 'running'`)
	for i := 2; i <= 5; i++ {
		fmt.Fprintf(logf, "cb-slow: compiling line %d\n", i)
		webtest.WaitJS(t, ctx, 10*time.Second, fmt.Sprintf("line %d streamed", i), fmt.Sprintf(`document.querySelector('#logtext').textContent.includes('compiling line %d')`, i))
	}
	if got := webtest.Eval[string](t, ctx, `document.querySelector('#state').textContent`); got != "building" {
		t.Errorf("state %q while the build runs", got)
	}
	webtest.Screenshot(t, ctx, "target")

	// The build ends: binaries, result file, final response.
	bin := filepath.Join(rr.tg.Binaries(), "projects", "Debian", "bookworm", "amd64")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bin, "cb-slow_1.0-1_amd64.deb"), []byte("not really a deb"), 0o644); err != nil {
		t.Fatal(err)
	}
	fmt.Fprintln(logf, "=== finished: exit code 0")
	if err := os.WriteFile(rr.tg.ResultFile(), []byte("response_code: package build succeeded\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	sleeper.Process.Kill()
	sleeper.Wait()
	s.respond("slow", p, message.PackageBuildSucceeded, "Package build finished", nil)
	webtest.WaitJS(t, ctx, 15*time.Second, "log finished", `document.querySelector('#logstate').textContent === 'finished'`)
	webtest.WaitJS(t, ctx, 10*time.Second, "state succeeded", `document.querySelector('#state').textContent === 'succeeded'`)
	webtest.WaitJS(t, ctx, 10*time.Second, "binary offered", `!!document.querySelector('#binaries a[href$="cb-slow_1.0-1_amd64.deb"]')`)
	// The download goes through the UI, which holds the runner's token.
	got := webtest.Eval[string](t, ctx, `fetch(document.querySelector('#binaries a').href).then(r => r.text())`)
	if got != "not really a deb" {
		t.Errorf("download through the UI: %q", got)
	}
	if text := webtest.Eval[string](t, ctx, `document.querySelector('#logtext').textContent`); !strings.Contains(text, "line 1") || !strings.Contains(text, "=== finished") {
		t.Errorf("the whole log is not shown: %q", text)
	}
}

// A failing build shows its failed state and the line of its log that
// explains it.
func TestBrowserFailedBuildShowsTheErrorLine(t *testing.T) {
	const p = "projects/Debian/cb-broken"
	rr := newRunnerRoot(t, p, "bookworm")
	s := newUISystem(t, Config{ArtifactToken: "artifact-token"})
	key := Key(p, "bookworm.x86_64")
	s.heartbeat("10.0.0.7", rr.url)
	const errLine = "broken.c:4:9: error: 'undefined_symbol_for_the_test' undeclared (first use in this function)"
	log := "dpkg-buildpackage: info: source package cb-broken\ncc -o broken broken.c\n" + errLine +
		"\nmake[1]: *** [Makefile:3: broken] Error 1\ndpkg-buildpackage: error: debian/rules build subprocess returned exit status 2\n=== finished: exit code 2\n"
	if err := os.WriteFile(rr.tg.BuildLog(), []byte(log), 0o644); err != nil {
		t.Fatal(err)
	}
	s.request("broken", p, "bookworm")
	s.respond("broken", p, message.PackageRequestAccepted, "Accept package build request", bookworm)
	s.respond("broken", p, message.PackageBuildFailed, "Package build failed: exit status 2", nil)
	s.waitState(key, Failed)

	ctx := webtest.NewBrowser(t, 1000, 700)
	webtest.Do(t, ctx, chromedp.Navigate(s.url+targetURL(key)), chromedp.WaitVisible("#live"))
	if got := webtest.Eval[string](t, ctx, `document.querySelector('#state').textContent`); got != "failed" {
		t.Errorf("state %q", got)
	}
	if got := webtest.Eval[string](t, ctx, `(document.querySelector('#errorline') || {}).textContent || ''`); got != errLine {
		t.Errorf("error line %q, want %q", got, errLine)
	}
	webtest.WaitJS(t, ctx, 10*time.Second, "whole log shown", `document.querySelector('#logtext').textContent.includes('=== finished: exit code 2')`)
	// The overview shows it failed as well.
	webtest.Do(t, ctx, chromedp.Navigate(s.url+"/ui/?state=failed"), chromedp.WaitVisible("#matrix"))
	if got := webtest.Eval[string](t, ctx, cellJS(key)); got != "failed" {
		t.Errorf("overview cell %q", got)
	}
}

// The live state never stops silently: a lost connection is shown, and
// the page catches up once it is back.
func TestBrowserShowsALostConnection(t *testing.T) {
	s := newUISystem(t, Config{})
	ctx := webtest.NewBrowser(t, 1000, 700)
	webtest.Do(t, ctx, chromedp.Navigate(s.url+"/ui/"), chromedp.WaitVisible("#filters"))
	webtest.WaitJS(t, ctx, 10*time.Second, "live", `document.querySelector('#conn').textContent === 'live'`)
	s.srv.CloseClientConnections()
	webtest.WaitJS(t, ctx, 10*time.Second, "lost connection shown", `document.querySelector('#conn').textContent.startsWith('connection lost')`)
	s.request("late", "projects/Debian/late", "bookworm")
	webtest.WaitJS(t, ctx, 20*time.Second, "reconnected and caught up", `document.querySelector('#conn').textContent === 'live' && `+cellJS(Key("projects/Debian/late", "bookworm.x86_64"))+` === 'queued'`)
}

// The rebuild button needs the token, even on loopback, and then sends a
// request that the page shows as queued.
func TestBrowserRebuildButton(t *testing.T) {
	s := newUISystem(t, Config{})
	const p = "projects/Debian/cb-hello"
	key := Key(p, "bookworm.x86_64")
	s.request("r1", p, "bookworm")
	s.respond("r1", p, message.PackageRequestAccepted, "Accept", bookworm)
	s.respond("r1", p, message.PackageBuildSucceeded, "Package build finished", nil)
	s.waitState(key, Succeeded)

	ctx := webtest.NewBrowser(t, 1000, 700)
	webtest.Do(t, ctx, chromedp.Navigate(s.url+targetURL(key)), chromedp.WaitVisible("#rebuild"))
	webtest.WaitJS(t, ctx, 10*time.Second, "live", `document.querySelector('#conn').textContent === 'live'`)
	webtest.Do(t, ctx, chromedp.Click(`#rebuild button`))
	webtest.WaitJS(t, ctx, 10*time.Second, "refused without token", `document.querySelector('#rebuildmsg').textContent.includes('needs the UI token')`)
	webtest.Do(t, ctx, chromedp.SendKeys(`#token`, testToken), chromedp.Click(`#rebuild button`))
	webtest.WaitJS(t, ctx, 10*time.Second, "requested", `document.querySelector('#rebuildmsg').textContent.startsWith('requested: ')`)
	webtest.WaitJS(t, ctx, 10*time.Second, "new request queued", `document.querySelector('#state').textContent === 'queued'`)
	tg, _ := s.model.Target(key)
	if len(tg.Requests) != 2 || tg.Requests[1].Action != message.ActionPackageRebuild {
		t.Errorf("requests after the rebuild: %+v", tg.Requests)
	}
}
