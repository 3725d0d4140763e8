package console_test

import (
	"fmt"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/attune-system/attune/jobs"
)

// TestSession checks the login and CSRF rules over plain HTTP, without a
// browser: what a script or another site would try.
func TestSession(t *testing.T) {
	t.Parallel()
	b := setup(t)
	noRedirect := func(jar http.CookieJar) *http.Client {
		return &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	get := func(c *http.Client, path string) (*http.Response, string) {
		t.Helper()
		resp, err := c.Get(b.base + path)
		require.NoError(t, err)
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp, string(body)
	}
	post := func(c *http.Client, path string, form url.Values) *http.Response {
		t.Helper()
		resp, err := c.PostForm(b.base+path, form)
		require.NoError(t, err)
		resp.Body.Close()
		return resp
	}
	csrfRE := regexp.MustCompile(`name="csrf" value="([^"]+)"`)

	t.Run("PagesNeedALogin", func(t *testing.T) {
		c := noRedirect(nil)
		resp, _ := get(c, "/executions?status=failed")
		require.Equal(t, http.StatusSeeOther, resp.StatusCode)
		require.Equal(t, "/login?next=%2Fexecutions%3Fstatus%3Dfailed", resp.Header.Get("Location"))
		require.Equal(t, http.StatusUnauthorized, post(c, "/rules/t.hook/disable", nil).StatusCode)
		requireRuleEnabled(t, b, true)
		resp, _ = get(c, "/riverui/")
		require.Equal(t, http.StatusSeeOther, resp.StatusCode)
		require.Equal(t, "/login?next=%2Friverui%2F", resp.Header.Get("Location"))
	})

	t.Run("APIPathsPassThrough", func(t *testing.T) {
		c := noRedirect(nil)
		resp, body := get(c, "/api/v1/nope")
		require.Equal(t, http.StatusNotFound, resp.StatusCode)
		require.Equal(t, "application/json", resp.Header.Get("Content-Type"))
		require.Contains(t, body, "no route")
		resp, _ = get(c, "/api/v1/executions")
		require.Equal(t, http.StatusUnauthorized, resp.StatusCode, "a console cookie is no API token, and none is sent")
		resp, _ = get(c, "/healthz")
		require.Equal(t, http.StatusOK, resp.StatusCode)
	})

	jar, err := cookiejar.New(nil)
	require.NoError(t, err)
	c := noRedirect(jar)
	t.Run("Login", func(t *testing.T) {
		resp, page := get(c, "/login?next=//evil.example/")
		require.Equal(t, http.StatusOK, resp.StatusCode)
		m := csrfRE.FindStringSubmatch(page)
		require.NotNil(t, m)
		require.Contains(t, page, `name="next" value="/"`, "an off-site next is dropped")

		require.Equal(t, http.StatusForbidden, post(c, "/login", url.Values{"token": {testToken}}).StatusCode, "no login CSRF token")
		require.Equal(t, http.StatusUnauthorized, post(c, "/login", url.Values{"token": {"wrong-wrong-wrong-wrong"}, "csrf": {m[1]}}).StatusCode)
		require.Equal(t, http.StatusUnauthorized, post(c, "/login", url.Values{"token": {""}, "csrf": {m[1]}}).StatusCode)

		resp = post(c, "/login", url.Values{"token": {testToken + "\n"}, "csrf": {m[1]}, "next": {"/rules"}})
		require.Equal(t, http.StatusSeeOther, resp.StatusCode)
		require.Equal(t, "/rules", resp.Header.Get("Location"))
		var session *http.Cookie
		for _, ck := range resp.Cookies() {
			if ck.Name == "attune_session" {
				session = ck
			}
		}
		require.NotNil(t, session)
		require.True(t, session.HttpOnly)
		require.Equal(t, http.SameSiteStrictMode, session.SameSite)
		require.NotContains(t, session.Value, testToken, "the cookie names the token, it does not carry it")
		require.Contains(t, b.log.String(), "console login")
		require.NotContains(t, b.log.String(), testToken)
	})

	t.Run("CSRF", func(t *testing.T) {
		_, page := get(c, "/rules")
		m := csrfRE.FindStringSubmatch(page)
		require.NotNil(t, m)
		require.Equal(t, http.StatusForbidden, post(c, "/rules/t.hook/disable", nil).StatusCode)
		require.Equal(t, http.StatusForbidden, post(c, "/rules/t.hook/disable", url.Values{"csrf": {m[1] + "x"}}).StatusCode)
		requireRuleEnabled(t, b, true)
		require.Equal(t, http.StatusSeeOther, post(c, "/rules/t.hook/disable", url.Values{"csrf": {m[1]}}).StatusCode)
		requireRuleEnabled(t, b, false)
	})

	t.Run("TamperedCookie", func(t *testing.T) {
		u, _ := url.Parse(b.base)
		var value string
		for _, ck := range jar.Cookies(u) {
			if ck.Name == "attune_session" {
				value = ck.Value
			}
		}
		parts := strings.Split(value, "|")
		require.Len(t, parts, 4)
		for name, v := range map[string]string{
			"OtherName":     "admin|" + strings.Join(parts[1:], "|"),
			"LaterExpiry":   parts[0] + "|9999999999|" + strings.Join(parts[2:], "|"),
			"NoSignature":   strings.Join(parts[:3], "|"),
			"ForeignCookie": "ci|9999999999|x|y",
		} {
			req, err := http.NewRequest("GET", b.base+"/executions", nil)
			require.NoError(t, err)
			req.AddCookie(&http.Cookie{Name: "attune_session", Value: v})
			resp, err := noRedirect(nil).Do(req)
			require.NoError(t, err)
			resp.Body.Close()
			require.Equal(t, http.StatusSeeOther, resp.StatusCode, name)
		}
	})

	t.Run("Logout", func(t *testing.T) {
		_, page := get(c, "/")
		m := csrfRE.FindStringSubmatch(page)
		require.NotNil(t, m)
		require.Equal(t, http.StatusSeeOther, post(c, "/logout", url.Values{"csrf": {m[1]}}).StatusCode)
		resp, _ := get(c, "/")
		require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	})
}

// TestOpenWithoutTokens: with no ATTUNE_API_TOKENS the API is open on
// loopback, and the console asks for no token, but still for a login (so
// the CSRF token has a session) and for the CSRF token.
func TestOpenWithoutTokens(t *testing.T) {
	t.Parallel()
	b := setupTokens(t)
	jar, err := cookiejar.New(nil)
	require.NoError(t, err)
	c := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Get(b.base + "/login")
	require.NoError(t, err)
	page, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	require.Contains(t, string(page), "leave the field empty")
	m := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindStringSubmatch(string(page))
	require.NotNil(t, m)
	resp, err = c.PostForm(b.base+"/login", url.Values{"token": {""}, "csrf": {m[1]}})
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)

	resp, err = c.Get(b.base + "/rules")
	require.NoError(t, err)
	page, err = io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Contains(t, string(page), "(loopback, no tokens)")
	m = regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindStringSubmatch(string(page))
	require.NotNil(t, m)
	resp, err = c.PostForm(b.base+"/rules/t.hook/disable", nil)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusForbidden, resp.StatusCode)
	resp, err = c.PostForm(b.base+"/rules/t.hook/disable", url.Values{"csrf": {m[1]}})
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	requireRuleEnabled(t, b, false)
}

// TestPaging: 50 executions a page, newest first, an Older link while more
// follow, and the counts per status over every page.
func TestPaging(t *testing.T) {
	t.Parallel()
	b := setup(t)
	later := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	var ids []int64
	for range 51 {
		status, body := b.apiCall(t, "POST", "/api/v1/executions", map[string]any{"action": "t.ticks",
			"options": map[string]any{"scheduled_at": later}})
		require.Equal(t, http.StatusCreated, status, "body %v", body)
		ids = append(ids, int64(body["id"].(float64)))
	}
	c := loggedIn(t, b)
	page := getPage(t, c, b.base+"/executions")
	rows := regexp.MustCompile(`<td><a href="/executions/(\d+)">`).FindAllStringSubmatch(page, -1)
	require.Len(t, rows, 50)
	require.Equal(t, strconv.FormatInt(ids[50], 10), rows[0][1], "newest first")
	require.Regexp(t, `scheduled</span> <span class="n">51</span>`, page)
	older := regexp.MustCompile(`<a href="([^"]+)" rel="next">`).FindStringSubmatch(page)
	require.NotNil(t, older)
	page = getPage(t, c, b.base+html.UnescapeString(older[1]))
	rows = regexp.MustCompile(`<td><a href="/executions/(\d+)">`).FindAllStringSubmatch(page, -1)
	require.Len(t, rows, 1)
	require.Equal(t, strconv.FormatInt(ids[0], 10), rows[0][1])
	require.Contains(t, page, "← Newest")
	require.NotContains(t, page, `rel="next"`)
}

// loggedIn is a client with a console session for the test token.
func loggedIn(t *testing.T, b *testBundle) *http.Client {
	t.Helper()
	jar, err := cookiejar.New(nil)
	require.NoError(t, err)
	c := &http.Client{Jar: jar}
	page := getPage(t, c, b.base+"/login")
	m := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindStringSubmatch(page)
	require.NotNil(t, m)
	resp, err := c.PostForm(b.base+"/login", url.Values{"token": {testToken}, "csrf": {m[1]}})
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	return c
}

func getPage(t *testing.T, c *http.Client, url string) string {
	t.Helper()
	resp, err := c.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s: %s", url, body)
	return string(body)
}

// TestExecutionRefreshLeavesOutOutput: the execution page's own refresh
// (console.js sends X-Attune-Refresh: facts) gets the facts it swaps, not
// the output, which the page follows by its stream.
func TestExecutionRefreshLeavesOutOutput(t *testing.T) {
	t.Parallel()
	b := setup(t)
	id := b.enqueue(t, "t.ticks", map[string]any{"count": 2})
	es, err := jobs.Wait(b.ctx, b.pool, id)
	require.NoError(t, err)
	require.Equal(t, jobs.StatusCompleted, es[0].Status)
	c := loggedIn(t, b)
	page := getPage(t, c, fmt.Sprintf("%s/executions/%d", b.base, id))
	require.Contains(t, page, "tick 2\n")

	req, err := http.NewRequest("GET", fmt.Sprintf("%s/executions/%d", b.base, id), nil)
	require.NoError(t, err)
	req.Header.Set("X-Attune-Refresh", "facts")
	resp, err := c.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.NotContains(t, string(body), "tick 1", "no output in a refresh")
	require.Contains(t, string(body), `<dd id="status"><span class="status s-completed">`, "the facts are there")
}
