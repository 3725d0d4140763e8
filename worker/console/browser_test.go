package console_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"

	"github.com/attune-system/attune/jobs"
)

// page drives one tab of a headless Chromium against the bundle's listener.
type page struct {
	t    *testing.T
	ctx  context.Context
	base string
}

// newPage starts Debian's Chromium with a fresh profile. Without it the
// test skips, except in CI, where a missing browser is a failure.
func newPage(t *testing.T, base string) *page {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("chromium is not installed: .ci/run installs it with apt-get install -y chromium")
		}
		t.Skip("browser tests need Chromium: apt-get install -y chromium")
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(path), chromedp.Headless, chromedp.NoSandbox, chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck, chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-extensions", true), chromedp.Flag("disable-default-apps", true),
		chromedp.WindowSize(1280, 900))
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	p := &page{t: t, ctx: ctx, base: base}
	// The first action starts the browser, which lives as long as the
	// context of that action: give it the tab's own context.
	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate("about:blank")))
	return p
}

func (p *page) do(actions ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
	defer cancel()
	require.NoError(p.t, chromedp.Do(ctx, actions...))
}

func (p *page) open(path string) { p.t.Helper(); p.do(chromedp.Navigate(p.base + path)) }

func (p *page) click(sel string) { p.t.Helper(); p.do(chromedp.Click(chromedp.CSS(sel))) }

// follow clicks sel and waits until the next document has loaded.
func (p *page) follow(sel string) {
	p.t.Helper()
	eval[bool](p, `(window.oldDocument = true)`)
	p.click(sel)
	p.waitFor(`!window.oldDocument && document.readyState === "complete"`, 15*time.Second)
}

func (p *page) typeInto(sel, text string) {
	p.t.Helper()
	p.do(chromedp.SendKeys(chromedp.CSS(sel), text))
}

func (p *page) setValue(sel, v string) { p.t.Helper(); p.do(chromedp.SetValue(chromedp.CSS(sel), v)) }

// eval evaluates js in the tab, awaiting a promise.
func eval[T any](p *page, js string) T {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](js, chromedp.EvalAwaitPromise))
	require.NoError(p.t, err, "evaluating %s", js)
	return v
}

// text is the text of the first element sel matches, "" when none does.
func (p *page) text(sel string) string {
	p.t.Helper()
	return eval[string](p, fmt.Sprintf(`document.querySelector(%q)?.textContent ?? ""`, sel))
}

func (p *page) html() string {
	p.t.Helper()
	return eval[string](p, `document.documentElement.outerHTML`)
}

// pageLoaded holds once the document being shown is parsed: location
// changes as soon as a navigation commits, before the new page's elements
// are there to read.
const pageLoaded = ` && document.readyState !== "loading"`

// waitFor polls js until it is true. Pages load and reload meanwhile, so an
// evaluation that fails is tried again.
func (p *page) waitFor(js string, timeout time.Duration) {
	p.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(p.ctx, 5*time.Second)
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool]("!!("+js+")"))
		cancel()
		if err == nil && ok {
			return
		}
		if time.Now().After(deadline) {
			loc, _ := chromedp.Run(p.ctx, chromedp.Location())
			body, _ := chromedp.Run(p.ctx, chromedp.Evaluate[string](`document.body?.innerText ?? ""`))
			p.t.Fatalf("still not %s after %s (err %v) at %s:\n%s", js, timeout, err, loc, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (p *page) path() string {
	p.t.Helper()
	return eval[string](p, `location.pathname + location.search`)
}

// TestBrowser walks the console in Chromium against a real worker and
// listener: each step is what an operator would do.
func TestBrowser(t *testing.T) {
	t.Parallel()
	start := time.Now()
	b := setup(t)
	p := newPage(t, b.base)
	t.Cleanup(func() { t.Logf("browser tests took %s", time.Since(start).Round(time.Millisecond)) })

	t.Run("Login", func(t *testing.T) {
		p.t = t
		p.open("/executions?status=running")
		require.Equal(t, "/login?next=%2Fexecutions%3Fstatus%3Drunning", p.path())

		// No token: the browser's required check is bypassed to reach the
		// server's.
		eval[bool](p, `(window.oldDocument = true, document.querySelector("form").submit(), true)`)
		p.waitFor(`!window.oldDocument && document.readyState === "complete"`, 15*time.Second)
		require.Contains(t, p.text(".problem"), "not accepted")

		p.typeInto("#token", "not-the-token-at-all")
		p.follow(`form button[type="submit"]`)
		require.Contains(t, p.text(".problem"), "not accepted")
		require.Equal(t, "", eval[string](p, `document.cookie`), "no cookie readable by scripts")

		p.typeInto("#token", testToken)
		p.follow(`form button[type="submit"]`)
		p.waitFor(`location.pathname === "/executions"`+pageLoaded, 10*time.Second)
		require.Equal(t, "/executions?status=running", p.path())
		require.Equal(t, "ci", p.text(".who"))
	})

	var formID int64
	t.Run("RunFromForm", func(t *testing.T) {
		p.t = t
		p.open("/actions")
		p.follow(`a[href="/actions/t.form"]`)
		p.waitFor(`location.pathname === "/actions/t.form"`+pageLoaded, 10*time.Second)

		// The form follows the parameter schema.
		require.Contains(t, p.text(`label[for="p-name"]`), "(required)")
		require.True(t, eval[bool](p, `document.getElementById("p-name").required`))
		require.Equal(t, "number", eval[string](p, `document.getElementById("p-n").type`))
		require.Equal(t, "2", eval[string](p, `document.getElementById("p-n").value`))
		require.Equal(t, "any", eval[string](p, `document.getElementById("p-ratio").step`))
		require.True(t, eval[bool](p, `document.getElementById("p-loud").checked`))
		require.Equal(t, `"green"`, eval[string](p, `document.getElementById("p-color").value`))
		require.Equal(t, "red green blue", eval[string](p, `[...document.querySelectorAll("#p-color option")].map(o => o.textContent).filter(t => !t.startsWith("(")).join(" ")`))
		require.Equal(t, "TEXTAREA", eval[string](p, `document.getElementById("p-extra").tagName`))
		require.Equal(t, "TEXTAREA", eval[string](p, `document.getElementById("p-tags").tagName`))
		require.Equal(t, "password", eval[string](p, `document.getElementById("p-password").type`))

		// Bad JSON comes back to the form, the secret not with it.
		p.typeInto("#p-name", "browser")
		p.typeInto("#p-extra", "{not json")
		p.typeInto("#p-password", "hunter2")
		p.follow(`form.run button[type="submit"]`)
		require.Contains(t, p.text(".problem"), "extra is not valid JSON")
		require.Equal(t, "browser", eval[string](p, `document.getElementById("p-name").value`))
		require.NotContains(t, p.html(), "hunter2")

		p.setValue("#p-n", "3")
		p.setValue("#p-extra", `{"a": 1}`)
		p.setValue("#p-color", `"blue"`)
		p.typeInto("#p-password", "hunter2")
		p.follow(`form.run button[type="submit"]`)
		p.waitFor(`/^\/executions\/\d+$/.test(location.pathname)`+pageLoaded, 10*time.Second)
		var err error
		formID, err = strconv.ParseInt(strings.TrimPrefix(p.path(), "/executions/"), 10, 64)
		require.NoError(t, err)
		p.waitFor(`document.getElementById("status")?.textContent.includes("completed")`, 30*time.Second)
		result := p.text("#result")
		require.Contains(t, result, `"greeting": "hello browser"`)
		require.Contains(t, result, `"color": "blue"`)
		require.Contains(t, result, `"got_secret": true`, "the action got the secret")
		require.Equal(t, "0", strings.TrimSpace(p.text(".facts div:nth-child(3) dd")))
	})

	t.Run("SecretMasked", func(t *testing.T) {
		p.t = t
		p.open(fmt.Sprintf("/executions/%d", formID))
		require.Contains(t, p.text("#parameters"), `"password": "********"`)
		require.NotContains(t, p.html(), "hunter2")
		for _, path := range []string{"/executions", "/", "/actions/t.form", "/events"} {
			p.open(path)
			require.NotContains(t, p.html(), "hunter2", path)
		}
		// Re-run cannot repeat a secret it does not keep: it says so.
		p.open(fmt.Sprintf("/executions/%d", formID))
		p.follow(`form[action$="/re-run"] button`)
		p.waitFor(`document.querySelector(".problem[role=alert]")`, 10*time.Second)
		require.Contains(t, p.text(".problem[role=alert]"), "secret")
	})

	t.Run("LiveOutputAndCancel", func(t *testing.T) {
		p.t = t
		id := b.enqueue(t, "t.ticks", nil)
		p.open(fmt.Sprintf("/executions/%d", id))
		p.waitFor(`document.getElementById("stdout").textContent.includes("tick 3\n")`, 20*time.Second)
		// The same document keeps growing: no reload, the stream appends.
		eval[bool](p, `(window.sameDocument = true)`)
		before := len(p.text("#stdout"))
		p.waitFor(`window.sameDocument && document.getElementById("stdout").textContent.includes("tick 8\n")`, 20*time.Second)
		require.Greater(t, len(p.text("#stdout")), before)
		require.False(t, eval[bool](p, `document.getElementById("follow").hidden`), "the page says it follows")
		require.Contains(t, p.text("#status"), "running")

		p.follow(`form[action$="/cancel"] button`)
		p.waitFor(`document.getElementById("status")?.textContent.includes("cancelled")`, 30*time.Second)
		require.Nil(t, eval[any](p, `document.querySelector('form[action$="/cancel"]')`), "no Cancel once cancelled")
		e, err := jobs.Get(b.ctx, b.pool, id)
		require.NoError(t, err)
		require.Equal(t, jobs.StatusCancelled, e.Status)
	})

	t.Run("ToggleRule", func(t *testing.T) {
		p.t = t
		p.open("/rules")
		row := `#rule-t\.hook`
		require.Contains(t, p.text(row+" .badge"), "enabled")
		p.follow(row + " button")
		p.waitFor(`document.querySelector("#rule-t\\.hook .badge")?.textContent.includes("disabled")`, 10*time.Second)
		requireRuleEnabled(t, b, false)
		p.follow(row + " button")
		p.waitFor(`document.querySelector("#rule-t\\.hook .badge")?.textContent.includes("enabled")`, 10*time.Second)
		requireRuleEnabled(t, b, true)
	})

	t.Run("EventToExecutions", func(t *testing.T) {
		p.t = t
		resp, err := http.Post(b.base+"/webhooks/push", "application/json", strings.NewReader(`{"who": "octocat"}`))
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusAccepted, resp.StatusCode)
		var eventID, execID int64
		require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT event_id, id FROM attune.execution WHERE event_id IS NOT NULL ORDER BY id DESC LIMIT 1").Scan(&eventID, &execID))

		p.open("/events")
		ev := fmt.Sprintf("#event-%d", eventID)
		require.Contains(t, p.text(ev+" .fired"), "by rule t.hook")
		p.follow(ev + " .fired a")
		p.waitFor(fmt.Sprintf(`location.pathname === "/executions/%d"`, execID)+pageLoaded, 10*time.Second)
		require.Contains(t, p.text("h1"), fmt.Sprintf("Execution %d", execID))
		p.waitFor(`document.getElementById("status")?.textContent.includes("completed")`, 30*time.Second)
		require.Contains(t, p.text("#result"), "hello octocat")

		// And back from the execution to its event.
		p.follow("[data-event]")
		p.waitFor(fmt.Sprintf(`location.hash === "#event-%d"`, eventID), 10*time.Second)
		require.True(t, eval[bool](p, fmt.Sprintf(`document.querySelector("#event-%d").matches(":target")`, eventID)))
	})

	t.Run("CSRF", func(t *testing.T) {
		p.t = t
		p.open("/rules")
		post := func(body string) int {
			return eval[int](p, fmt.Sprintf(`fetch("/rules/t.hook/disable", {method: "POST", redirect: "manual",
				headers: {"Content-Type": "application/x-www-form-urlencoded"}, body: %q}).then(r => r.status)`, body))
		}
		require.Equal(t, http.StatusForbidden, post(""), "no token")
		require.Equal(t, http.StatusForbidden, post("csrf=forged"), "a wrong token")
		requireRuleEnabled(t, b, true)
		// The page's own token works: the refusal above is the check, not
		// a broken route.
		token := eval[string](p, `document.querySelector("input[name=csrf]").value`)
		require.NotEqual(t, http.StatusForbidden, post("csrf="+token))
		requireRuleEnabled(t, b, false)
	})

	t.Run("FailureAndTruncation", func(t *testing.T) {
		p.t = t
		id := b.enqueue(t, "t.fail", nil)
		p.open(fmt.Sprintf("/executions/%d", id))
		p.waitFor(`document.getElementById("status")?.textContent.includes("failed")`, 30*time.Second)
		require.Contains(t, p.text("#stderr"), "something broke")
		require.Equal(t, "3", strings.TrimSpace(p.text(".facts div:nth-child(3) dd")))
		require.Contains(t, p.text("#status .status"), "✗", "status is a glyph and a word, not colour alone")

		id = b.enqueue(t, "t.flood", nil)
		p.open(fmt.Sprintf("/executions/%d", id))
		p.waitFor(`document.getElementById("status")?.textContent.includes("completed")`, 30*time.Second)
		require.Contains(t, p.text("#stdout-truncated"), "ATTUNE_MAX_STDOUT_BYTES")
		require.Empty(t, p.text("#stderr-truncated"))
	})

	t.Run("Catalog", func(t *testing.T) {
		p.t = t
		p.open("/workers")
		require.Contains(t, p.text("tbody"), "console-test")
		require.Contains(t, p.text("tbody .badge.on"), "active")
		require.Contains(t, p.text("tbody"), "shell")
		p.open("/sensors")
		require.Contains(t, p.text("tbody"), "core.timer_sensor")
		p.open("/actions")
		require.Contains(t, p.text("#pack-t"), "Pack t")
		require.Contains(t, p.text("main"), "Takes one parameter of each kind")
		p.open("/")
		require.Contains(t, p.text("#h-hour + .big"), "enqueued")
		require.True(t, eval[bool](p, `document.querySelectorAll("svg.chart rect.bar").length > 0`))
		require.Contains(t, p.text("svg.chart"), "enqueued")
	})

	t.Run("ExecutionsPage", func(t *testing.T) {
		p.t = t
		id := b.enqueue(t, "t.ticks", map[string]any{"count": 15})
		p.open("/executions")
		// The list refreshes itself while something runs, in the same
		// document, and stops once nothing does.
		eval[bool](p, `(window.sameDocument = true)`)
		row := fmt.Sprintf(`[...document.querySelectorAll("table.execs tbody tr")].find(r => r.cells[0].textContent.trim() === "%d")`, id)
		require.NotContains(t, eval[string](p, row+`.cells[2].textContent`), "completed")
		require.Contains(t, p.text(".live"), "Refreshing")
		p.waitFor(`window.sameDocument && `+row+`?.cells[2].textContent.includes("running")`, 20*time.Second)
		p.waitFor(`window.sameDocument && `+row+`?.cells[2].textContent.includes("completed")`, 30*time.Second)
		p.waitFor(`!document.getElementById("main").dataset.refresh || document.querySelector(".s-running") === null`, 10*time.Second)

		// Filters go in the URL; the counts per status are links too.
		p.setValue("#f-status", "cancelled")
		p.follow(`.filters button[type="submit"]`)
		require.Contains(t, p.path(), "status=cancelled")
		statuses := eval[[]string](p, `[...document.querySelectorAll("table.execs tbody tr td:nth-child(3)")].map(td => td.textContent.trim())`)
		require.NotEmpty(t, statuses)
		for _, s := range statuses {
			require.Contains(t, s, "cancelled")
		}
		require.Contains(t, p.text(`.tabs a[aria-current="true"]`), "cancelled")
		p.follow(`.tabs li:first-child a`)
		require.Equal(t, "/executions", p.path())
	})

	t.Run("Layout", func(t *testing.T) {
		p.t = t
		// The first Tab reaches the skip link, which leads to the content.
		p.open("/executions")
		p.do(chromedp.KeyEvent("\t"))
		require.Equal(t, "Skip to content", eval[string](p, `document.activeElement.textContent`))
		// A phone's width scrolls tables inside their box, not the page.
		p.do(chromedp.EmulateViewport(390, 844))
		for _, path := range []string{"/", "/executions", fmt.Sprintf("/executions/%d", formID), "/actions/t.form", "/rules", "/events"} {
			p.open(path)
			require.LessOrEqual(t, eval[int](p, `document.documentElement.scrollWidth`), 390, path)
		}
		// Dark by the system's preference.
		_, err := chromedp.Call(p.ctx, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
			Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: "dark"}}})
		require.NoError(t, err)
		p.open("/executions")
		require.Equal(t, "rgb(18, 22, 28)", eval[string](p, `getComputedStyle(document.body).backgroundColor`))
		_, err = chromedp.Call(p.ctx, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
			Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: "light"}}})
		require.NoError(t, err)
		p.do(chromedp.EmulateViewport(1280, 800))
	})

	t.Run("RiverUI", func(t *testing.T) {
		p.t = t
		p.open("/")
		p.follow(`a[href="/riverui/"]`)
		p.waitFor(`document.body.innerText.includes("Job State")`, 30*time.Second)
		// River UI's own page lists attune's jobs by their kind.
		p.open("/riverui/jobs?state=completed")
		p.waitFor(`document.body.innerText.includes("attune_execution")`, 30*time.Second)
		status := eval[int](p, `fetch("/riverui/api/jobs/cancel", {method: "POST", headers: {"Content-Type": "application/json"},
			body: JSON.stringify({ids: ["1"]})}).then(r => r.status)`)
		require.Equal(t, http.StatusForbidden, status, "River UI's writes are refused")
		token := eval[string](p, `fetch("/rules").then(r => r.text()).then(t => t.match(/name="csrf" value="([^"]+)"/)[1])`)
		status = eval[int](p, fmt.Sprintf(`fetch("/riverui/api/jobs/delete", {method: "POST", headers: {"Content-Type": "application/json", "X-CSRF-Token": %q},
			body: JSON.stringify({ids: ["1"]})}).then(r => r.status)`, token))
		require.Equal(t, http.StatusForbidden, status, "even with the CSRF token")
		if dir := os.Getenv("ATTUNE_SCREENSHOTS_ALL"); dir != "" {
			png, err := chromedp.Run(p.ctx, chromedp.CaptureScreenshot())
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(filepath.Join(dir, "riverui.png"), png, 0o644))
		}
	})

	t.Run("Screenshots", func(t *testing.T) {
		p.t = t
		b.enqueue(t, "t.fail", nil)
		running := b.enqueue(t, "t.ticks", map[string]any{"count": 40})
		p.open(fmt.Sprintf("/executions/%d", running))
		p.waitFor(`document.getElementById("stdout").textContent.includes("tick 6\n")`, 20*time.Second)
		dir := os.Getenv("ATTUNE_SCREENSHOTS")
		if dir == "" {
			dir = t.TempDir()
		}
		shot := func(name string) {
			png, err := chromedp.Run(p.ctx, chromedp.CaptureScreenshot())
			require.NoError(t, err)
			require.True(t, bytes.HasPrefix(png, []byte("\x89PNG")))
			require.NoError(t, os.WriteFile(filepath.Join(dir, name), png, 0o644))
		}
		shot("execution.png")
		p.open("/executions")
		p.waitFor(`document.querySelector("table.execs")`, 10*time.Second)
		shot("executions.png")
		_, _ = b.apiCall(t, "POST", fmt.Sprintf("/api/v1/executions/%d/cancel", running), nil)
	})
}

func requireRuleEnabled(t *testing.T, b *testBundle, want bool) {
	t.Helper()
	rules, err := jobs.ListRules(b.ctx, b.pool)
	require.NoError(t, err)
	for _, r := range rules {
		if r.Ref == "t.hook" {
			require.Equal(t, want, r.Enabled)
			return
		}
	}
	t.Fatal("rule t.hook is not registered")
}
