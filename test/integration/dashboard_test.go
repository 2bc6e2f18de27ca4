package integration

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/parley-chat/parley/internal/stack/stacktest"
)

// TestDashboardInBrowser drives /dashboard in headless Chromium (Debian's
// chromium package, installed by scripts/install-deps.sh --test) against a
// server built by internal/app on the test stack, as a person would: sign
// in with the form, sign out, sign in with ?token= (the token leaves the
// URL at once), see the replica and its lag, reach every control with the
// keyboard, read the page at 1280×800 and at a phone's width without
// sideways scrolling; then pause the replica's replay and see its breaker
// open on the page within seconds. No console error or uncaught exception
// at any point. Screenshots go to $PARLEY_TEST_ARTIFACTS (default: a new
// temporary directory), named in the log.
func TestDashboardInBrowser(t *testing.T) {
	svc := newService(t)
	a := svc.instance(instanceOptions{monitors: true})
	u, v := a.CreateUser(), a.CreateUser()
	conv := a.CreateConversation(u, "dashboard", v)
	svc.optimize(a, true, true)
	for i := range 10 { // traffic for the latency, error and cache figures
		a.Send(conv.ID, u, fmt.Sprint("before ", i))
		a.Page(conv.ID, v, "?limit=5")
		a.Page(conv.ID, v, "?limit=5")
	}
	artifacts := artifactDir(t)
	ctx := browser(t)

	var mu sync.Mutex
	var problems []string
	console := chromedp.Console(ctx)
	go func() {
		for m, err := range console {
			if err != nil {
				return
			}
			if m.Type == chromedp.ConsoleError || m.IsException() {
				mu.Lock()
				problems = append(problems, fmt.Sprintf("%s (%s:%d)", m, m.URL, m.Line))
				mu.Unlock()
			}
		}
	}()
	run := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, steps...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	eval := func(expr string) any {
		t.Helper()
		v, err := chromedp.Run(ctx, chromedp.Evaluate[any](expr))
		if err != nil {
			t.Fatalf("%s: %v", expr, err)
		}
		return v
	}
	wait := func(what, expr string, timeout time.Duration) time.Duration {
		t.Helper()
		start := time.Now()
		for {
			// A poll that meets a navigation ("Inspected target navigated",
			// "Cannot find context") starts again.
			_, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingTimeout(timeout-time.Since(start))))
			if err == nil {
				return time.Since(start)
			}
			if time.Since(start) >= timeout || ctx.Err() != nil {
				mu.Lock()
				defer mu.Unlock()
				t.Fatalf("waiting %v for %s: %v\nconsole: %q\npage text:\n%v", timeout, what, err, problems, eval(`document.body.innerText`))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	const (
		replica   = `document.querySelector('[data-replica="replica1"]')`
		loginForm = `document.querySelector('form[action="/dashboard/login"] #token') !== null`
	)
	dashboard := a.Base + "/dashboard"

	// The login form, then the page.
	run("open the dashboard", chromedp.EmulateViewport(1280, 800), chromedp.Navigate(dashboard))
	wait("the login form", loginForm, 5*time.Second)
	run("sign in with the form", chromedp.SendKeys(chromedp.CSS("#token"), adminToken), chromedp.Click(chromedp.CSS("#sign-in")))
	wait("the dashboard after the form", replica+` !== null`, 10*time.Second)
	cookies, err := chromedp.Call(ctx, network.GetCookies, network.GetCookiesParams{URLs: []string{dashboard}})
	if err != nil {
		t.Fatal(err)
	}
	var session *network.Cookie
	for _, c := range cookies.Cookies {
		if c.Name == "parley_dashboard" {
			session = c
		}
	}
	if session == nil || !session.HTTPOnly || session.SameSite != network.CookieSameSiteStrict || session.Path != "/dashboard" ||
		strings.Contains(session.Value, adminToken) {
		t.Fatalf("session cookie %+v", session)
	}
	run("sign out", chromedp.Click(chromedp.CSS("#logout")))
	wait("the login form after signing out", loginForm, 5*time.Second)

	run("sign in with ?token=", chromedp.Navigate(dashboard+"?token="+url.QueryEscape(adminToken)))
	wait("the dashboard after ?token=", replica+` !== null`, 10*time.Second)
	if loc, err := chromedp.Run(ctx, chromedp.Location()); err != nil || loc != dashboard {
		t.Fatalf("after ?token= the page is at %q (%v), want the clean %s", loc, err, dashboard)
	}

	// The replica, its lag and the figures.
	wait("replica1 healthy, breaker closed, with its lag", `(() => { const r = `+replica+`;
		return r && r.querySelector('.breaker').dataset.breaker === 'closed' && r.querySelector('.state').dataset.state === 'healthy' &&
			/ (s|ms|µs) \(\d/.test(r.querySelector('.lag').textContent) && r.querySelector('svg.chart polyline') !== null; })()`, 10*time.Second)
	wait("latency rows", `document.querySelectorAll('#latency tr th[scope=row]').length > 0`, 5*time.Second)
	t.Logf("replica1 on the page: %v", eval(replica+`.innerText.replace(/\s+/g, ' ').slice(0, 200)`))

	// Every control is reachable with Tab.
	n := int(eval(`(() => {
		const els = [...document.querySelectorAll('a[href], button, input, select, textarea, [tabindex]')]
			.filter((e) => e.tabIndex >= 0 && !e.disabled);
		els.forEach((e, i) => { e.dataset.kb = String(i); });
		document.activeElement && document.activeElement.blur();
		return els.length; })()`).(float64))
	reached := map[string]bool{}
	for range 2*n + 2 {
		run("Tab", chromedp.KeyEvent(kb.Tab))
		if id, _ := eval(`document.activeElement ? (document.activeElement.dataset.kb || '') : ''`).(string); id != "" {
			reached[id] = true
		}
	}
	if len(reached) != n {
		t.Errorf("Tab reached %d of the %d controls: %v", len(reached), n, eval(`[...document.querySelectorAll('[data-kb]')].map((e) => e.dataset.kb + ' ' + e.tagName + ' ' + (e.id || e.textContent.trim().slice(0, 20)))`))
	}
	t.Logf("keyboard: Tab reaches all %d controls", n)

	// 1280×800 and a phone's width: no sideways scrolling.
	for _, vp := range []struct{ w, h int64 }{{390, 844}, {1280, 800}} {
		run("viewport", chromedp.EmulateViewport(vp.w, vp.h))
		wait(fmt.Sprintf("no horizontal overflow at %dx%d", vp.w, vp.h),
			`document.documentElement.scrollWidth <= document.documentElement.clientWidth && document.body.scrollWidth <= document.documentElement.clientWidth`, 3*time.Second)
		screenshot(t, ctx, artifacts, fmt.Sprintf("dashboard-%dx%d.png", vp.w, vp.h))
	}

	// Pause the replica's replay while a user writes: the page shows the
	// breaker open within seconds.
	stop := make(chan struct{})
	var writes sync.WaitGroup
	writes.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			a.Do("POST", "/v1/conversations/"+conv.ID+"/messages", u.Token, map[string]string{"body": fmt.Sprint("during ", i)})
		}
	})
	stacktest.PauseReplay(t, svc.db.ReplicaURL)
	took := wait("the breaker open on the page", replica+`.querySelector('.breaker').dataset.breaker === 'open'`, 10*time.Second)
	wait("the transition to open listed", replica+`.querySelector('.transitions') !== null && /→ open/.test(`+replica+`.querySelector('.transitions').textContent)`, 5*time.Second)
	time.Sleep(2 * time.Second) // a few more points of lag on the chart
	close(stop)
	writes.Wait()
	t.Logf("measured: the dashboard showed the replica's breaker open %v after its replay was paused (bound 10s): %v", took.Round(10*time.Millisecond),
		eval(replica+`.innerText.replace(/\s+/g, ' ').slice(0, 200)`))
	screenshot(t, ctx, artifacts, "dashboard-breaker-open.png")

	mu.Lock()
	defer mu.Unlock()
	if len(problems) > 0 {
		t.Fatalf("the browser console reported %d problems:\n%s", len(problems), strings.Join(problems, "\n"))
	}
}

// browser starts headless Chromium for the test.
func browser(t *testing.T) context.Context {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("no chromium (Debian's package; scripts/install-deps.sh --test installs it): %v", err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 800),
		chromedp.Flag("disable-dev-shm-usage", true),
	)
	if os.Geteuid() == 0 {
		opts = append(opts, chromedp.NoSandbox) // Chromium refuses root otherwise
	}
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(alloc)
	ctx, cancelTimeout := context.WithTimeout(ctx, 2*time.Minute)
	t.Cleanup(func() { cancelTimeout(); cancel(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil { // start the browser
		t.Fatalf("start %s: %v", path, err)
	}
	return ctx
}

// artifactDir is where the test leaves its screenshots.
func artifactDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("PARLEY_TEST_ARTIFACTS")
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "parley-artifacts-"); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func screenshot(t *testing.T, ctx context.Context, dir, name string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)
}
