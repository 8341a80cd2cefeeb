package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/cloud-builder/cb/internal/web/webtest"
)

// TestWebUI watches real builds in headless Chromium: the overview follows
// a build from queued to succeeded without a reload, the target page
// streams a growing build log, a failed build shows the compiler's error
// line, and a request for an unknown package shows rejected.
func TestWebUI(t *testing.T) {
	needRoot(t, "mmdebstrap", "dpkg-deb", "gpg")
	webtest.Chromium(t)
	s := newSystem(t)

	// The runner announces its artifact endpoint in its heartbeat; the UI
	// reads logs and binaries there with the runner's token.
	artifactAddr := freePort(t)
	uiTokenFile := filepath.Join(s.dir, "ui.token")
	if err := os.WriteFile(uiTokenFile, []byte("e2e-ui-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := os.ReadFile(s.runnerConfig)
	if err != nil {
		t.Fatal(err)
	}
	const block = "\nartifacts:\n  token: e2e-artifact-token\n"
	if !strings.Contains("\n"+string(cfg), block) {
		t.Fatalf("runner config has no artifacts block:\n%s", cfg)
	}
	cfg = []byte(strings.Replace("\n"+string(cfg), block, block+fmt.Sprintf("  listen: %s\n  url: http://%s\n", artifactAddr, artifactAddr), 1)[1:])
	if err := os.WriteFile(s.runnerConfig, cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	start(t, s.env, "cb-info", "--runner-root", s.runnerRoot)
	uiAddr := freePort(t)
	start(t, s.env, "cb-web", "--listen", uiAddr, "--runner-groups", "debian", "--collector-url", s.collectorURL,
		"--token-file", uiTokenFile)
	ui := "http://" + uiAddr
	waitFor(t, 30*time.Second, "cb-web", func() bool { _, err := httpGetErr(ui + "/healthz"); return err == nil })

	ctx := webtest.NewBrowser(t, 1280, 800)
	webtest.Do(t, ctx, chromedp.Navigate(ui+"/ui/"), chromedp.WaitVisible("#filters"))
	webtest.WaitJS(t, ctx, 20*time.Second, "live updates connect", `document.querySelector('#conn').textContent === 'live'`)
	webtest.Eval[bool](t, ctx, `window.notReloaded = true`)
	cell := func(key string) string {
		return fmt.Sprintf(`(() => { const td = document.querySelector('td[data-key="%s"]'); return td ? td.dataset.state : ''; })()`, key)
	}

	// Requested before any runner runs: it waits, and the target page
	// says why.
	const hello = "projects/Debian/cb-hello@bookworm.x86_64"
	helloID := s.requestPackage("Debian", "cb-hello")
	webtest.WaitJS(t, ctx, 30*time.Second, "cb-hello queued", cell(hello)+` === 'queued'`)
	waiting, err := httpGetErr(ui + "/api/v1/targets/" + hello)
	if err != nil || !strings.Contains(string(waiting), "no runner in runner group debian") {
		t.Errorf("a queued target without runner does not say why: %v\n%s", err, waiting)
	}

	s.startScheduler("--build-limit", "2")
	webtest.WaitJS(t, ctx, 60*time.Second, "cb-hello building", cell(hello)+` === 'building'`)
	final := s.resp.waitFinal(t, helloID, buildTimeout)
	webtest.WaitJS(t, ctx, 30*time.Second, "cb-hello "+final.ResponseCode, cell(hello)+` === 'succeeded'`)
	hist := webtest.Eval[[]string](t, ctx, `cbLive.history.filter(h => h[0] === '`+hello+`').map(h => h[1]).filter((s, i, a) => i === 0 || a[i-1] !== s)`)
	if strings.Join(hist, ",") != "queued,building,succeeded" {
		t.Errorf("cb-hello went %v, want queued, building, succeeded", hist)
	}
	if !webtest.Eval[bool](t, ctx, `window.notReloaded === true`) {
		t.Error("the overview was reloaded")
	}

	// A request for a package that does not exist.
	s.requestPackage("Debian", "no-such-package")
	const missing = "projects/Debian/no-such-package@bookworm.x86_64"
	webtest.WaitJS(t, ctx, 60*time.Second, "unknown package rejected", cell(missing)+` === 'rejected'`)
	if text := webtest.Eval[string](t, ctx, `document.querySelector('td[data-key="`+missing+`"]').innerText`); !strings.Contains(text, "Project does not exist") {
		t.Errorf("rejected cell says %q", text)
	}

	// The target page of a slow build streams its log while it grows.
	const slow = "projects/Debian/cb-slow@bookworm.x86_64"
	slowID := s.requestPackage("Debian", "cb-slow")
	webtest.WaitJS(t, ctx, 60*time.Second, "cb-slow shown", cell(slow)+` !== ''`)
	webtest.Do(t, ctx, chromedp.Navigate(ui+"/ui/targets/"+slow), chromedp.WaitVisible("#logtext"))
	webtest.WaitJS(t, ctx, 5*time.Minute, "cb-slow compiling in the streamed log",
		`document.querySelector('#logtext').textContent.includes('cb-slow: compiling') && document.querySelector('#logstate').textContent === 'running'`)
	grown := webtest.Eval[int](t, ctx, `document.querySelector('#logtext').textContent.length`)
	webtest.Screenshot(t, ctx, "e2e-target-streaming")
	s.resp.waitFinal(t, slowID, buildTimeout)
	webtest.WaitJS(t, ctx, 60*time.Second, "cb-slow finished", `document.querySelector('#logstate').textContent === 'finished' && document.querySelector('#state').textContent === 'succeeded'`)
	if n := webtest.Eval[int](t, ctx, `document.querySelector('#logtext').textContent.length`); n <= grown {
		t.Errorf("log did not grow while streaming: %d then %d bytes", grown, n)
	}
	if text := webtest.Eval[string](t, ctx, `document.querySelector('#logtext').textContent`); !strings.Contains(text, "=== finished") {
		t.Errorf("the streamed log misses its end:\n%s", tail(text, 2000))
	}
	webtest.WaitJS(t, ctx, 10*time.Second, "binaries offered", `!!document.querySelector('#binaries a[href$=".deb"]')`)

	// A failing build: failed, with the compiler's error line.
	const broken = "projects/Debian/cb-broken@bookworm.x86_64"
	brokenID := s.requestPackage("Debian", "cb-broken")
	s.resp.waitFinal(t, brokenID, buildTimeout)
	webtest.Do(t, ctx, chromedp.Navigate(ui+"/ui/targets/"+broken), chromedp.WaitVisible("#live"))
	webtest.WaitJS(t, ctx, 30*time.Second, "cb-broken failed", `document.querySelector('#state').textContent === 'failed'`)
	if line := webtest.Eval[string](t, ctx, `(document.querySelector('#errorline') || {}).textContent || ''`); !strings.Contains(line, "undefined_symbol_for_the_test") {
		t.Errorf("error line %q does not name the compiler's error", line)
	}

	webtest.Do(t, ctx, chromedp.Navigate(ui+"/ui/"), chromedp.WaitVisible("#matrix"))
	webtest.Screenshot(t, ctx, "e2e-overview")
}
