package api_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/attune-system/attune/worker/api"
)

func TestAuth(t *testing.T) {
	t.Parallel()
	b := setup(t)

	for _, tc := range []struct {
		name, header string
	}{
		{"None", ""},
		{"WrongToken", "Bearer " + strings.Repeat("x", len(testToken))},
		{"Prefix", "Bearer " + testToken[:len(testToken)-1]},
		{"Longer", "Bearer " + testToken + "0"},
		{"Basic", "Basic " + testToken},
		{"NoScheme", testToken},
		{"EscapedNewline", "Bearer " + testToken + `\n`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := b.call(t, "GET", "/api/v1/actions", nil, "Authorization", tc.header)
			requireError(t, r, http.StatusUnauthorized, "bearer token")
			require.Equal(t, `Bearer realm="attune"`, r.header.Get("WWW-Authenticate"))
			require.NotContains(t, string(r.body), testToken)
		})
	}
	t.Run("SchemeCaseInsensitive", func(t *testing.T) {
		r := b.call(t, "GET", "/api/v1/actions", nil, "Authorization", "bearer "+testToken)
		require.Equal(t, 200, r.status)
	})
	t.Run("EveryRouteNeedsIt", func(t *testing.T) {
		for _, path := range []string{"/api/v1/executions", "/api/v1/executions/1", "/api/v1/actions/t.echo", "/api/v1/rules",
			"/api/v1/sensors", "/api/v1/triggers", "/api/v1/events", "/api/v1/workers", "/metrics"} {
			requireError(t, b.call(t, "GET", path, nil, "Authorization", ""), 401, "bearer token")
		}
		requireError(t, b.call(t, "POST", "/api/v1/executions", `{"action": "t.echo"}`, "Authorization", ""), 401, "bearer token")
		requireError(t, b.call(t, "POST", "/api/v1/rules/t.hook_open/disable", nil, "Authorization", ""), 401, "bearer token")
	})
	t.Run("OpenRoutes", func(t *testing.T) {
		for _, path := range []string{"/healthz", "/readyz", "/api/v1/openapi.json"} {
			r := b.call(t, "GET", path, nil, "Authorization", "")
			require.Equal(t, 200, r.status, "%s: %s", path, r.body)
		}
	})
	// A raw request can carry bytes a Go client refuses to send: a token
	// with a newline or a tab after it, or a control character inside.
	t.Run("RawHeaders", func(t *testing.T) {
		for _, value := range []string{"Bearer " + testToken + "\t\x0b", "Bearer " + testToken + "\x00", "Bearer " + testToken + "\r"} {
			status := rawRequest(t, b.base, "GET /api/v1/actions HTTP/1.1\r\nHost: x\r\nAuthorization: "+value+"\r\nConnection: close\r\n\r\n")
			require.Contains(t, []int{400, 401}, status, "value %q", value)
		}
		// The server is still there.
		require.Equal(t, 200, b.call(t, "GET", "/api/v1/actions", nil).status)
	})
	t.Run("TokensNeverLogged", func(t *testing.T) {
		require.NotContains(t, b.log.String(), testToken)
	})
}

func TestMetricsPublic(t *testing.T) {
	t.Parallel()
	b := setup(t, func(o *api.Options) { o.MetricsPublic = true })
	r := b.call(t, "GET", "/metrics", nil, "Authorization", "")
	require.Equal(t, 200, r.status)
	require.Contains(t, string(r.body), "attune_executions_running")
	for range 2 {
		_, err := b.pool.Exec(b.ctx, `SELECT attune.enqueue('t.echo', '{"name": "q"}')`)
		require.NoError(t, err)
	}
	require.Equal(t, 2.0, metricValue(t, b, `attune_executions_queued{queue="shell"}`))
	requireError(t, b.call(t, "GET", "/api/v1/actions", nil, "Authorization", ""), 401, "bearer token")
}

func TestNoTokensOnLoopback(t *testing.T) {
	t.Parallel()
	b := setup(t, func(o *api.Options) { o.Tokens = nil })
	require.Equal(t, 200, b.call(t, "GET", "/api/v1/actions", nil, "Authorization", "").status)
	require.Equal(t, 200, b.call(t, "GET", "/api/v1/actions", nil, "Authorization", "", "Host", "localhost:8080").status)
	// A page of another site that points its own name at 127.0.0.1 (DNS
	// rebinding) arrives with that name: refused, without tokens.
	requireError(t, b.call(t, "GET", "/api/v1/actions", nil, "Authorization", "", "Host", "evil.example:8080"), 403, `host "evil.example:8080" is not a loopback name`)
}

// TestCrossSiteWritesRefused: a browser's POST for another site's page
// (Sec-Fetch-Site: cross-site, or a foreign Origin) changes nothing, even
// with no tokens on loopback; the same request from a client passes.
func TestCrossSiteWritesRefused(t *testing.T) {
	t.Parallel()
	b := setup(t, func(o *api.Options) { o.Tokens = nil })
	r := b.call(t, "POST", "/api/v1/rules/t.hook_open/disable", nil, "Authorization", "", "Sec-Fetch-Site", "cross-site")
	requireError(t, r, 403, "cross-origin request refused")
	r = b.call(t, "POST", "/api/v1/rules/t.hook_open/disable", nil, "Authorization", "", "Origin", "https://evil.example")
	requireError(t, r, 403, "cross-origin request refused")
	var enabled bool
	require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT enabled FROM attune.rule WHERE ref = 't.hook_open'").Scan(&enabled))
	require.True(t, enabled, "a refused request changed nothing")
	r = b.call(t, "POST", "/api/v1/rules/t.hook_open/disable", nil, "Authorization", "")
	require.Equal(t, 200, r.status, "body %s", r.body)
}

func TestUnknownRoutes(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for _, path := range []string{"/", "/api", "/api/v1", "/api/v1/nope", "/api/v2/executions", "/api/v1/executions/1/2/3", "/favicon.ico"} {
		requireError(t, b.call(t, "GET", path, nil), 404, "no route")
	}
	r := b.call(t, "DELETE", "/api/v1/executions/1", nil)
	requireError(t, r, 405, "not allowed")
	require.Contains(t, r.header.Get("Allow"), "GET")
	requireError(t, b.call(t, "PUT", "/healthz", nil), 405, "not allowed")
	requireError(t, b.call(t, "GET", "/webhooks/github", nil), 405, "not allowed")
}

func TestHealth(t *testing.T) {
	t.Parallel()
	running := true
	b := setup(t, func(o *api.Options) { o.RiverRunning = func() bool { return running } })
	r := b.call(t, "GET", "/healthz", nil)
	require.Equal(t, 200, r.status)
	r = b.call(t, "GET", "/readyz", nil)
	require.Equal(t, 200, r.status, "body %s", r.body)
	require.Equal(t, map[string]any{"database": "ok", "migrations": "ok", "river": "ok"}, r.json["checks"])

	running = false
	r = b.call(t, "GET", "/readyz", nil)
	require.Equal(t, 503, r.status)
	require.Equal(t, "river", r.json["failing"])

	running = true
	_, err := b.pool.Exec(b.ctx, "DELETE FROM attune.schema_migration WHERE version = (SELECT max(version) FROM attune.schema_migration)")
	require.NoError(t, err)
	r = b.call(t, "GET", "/readyz", nil)
	require.Equal(t, 503, r.status)
	require.Equal(t, "migrations", r.json["failing"])
	require.Contains(t, r.json["checks"].(map[string]any)["migrations"], "attune migrate")
}

func TestDrain(t *testing.T) {
	t.Parallel()
	b := setup(t)
	require.Equal(t, 200, b.call(t, "GET", "/readyz", nil).status)
	b.server.Drain()
	r := b.call(t, "GET", "/readyz", nil)
	require.Equal(t, 503, r.status)
	require.Equal(t, "river", r.json["failing"])
	require.Equal(t, "shutting down", r.json["checks"].(map[string]any)["river"])
	// Everything else still answers while the worker drains.
	require.Equal(t, 200, b.call(t, "GET", "/healthz", nil).status)
	require.Equal(t, 200, b.call(t, "GET", "/api/v1/actions", nil).status)
}

func TestReadyzDatabaseDown(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.pool.Close() // as good as a database that went away
	r := b.call(t, "GET", "/readyz", nil)
	require.Equal(t, 503, r.status)
	require.Equal(t, "database", r.json["failing"])
	require.Equal(t, 200, b.call(t, "GET", "/healthz", nil).status)
}

// TestSlowBody: a client that sends headers and half a body, then stalls,
// gets 408 once the read timeout passes; nothing is stored and the server
// answers others meanwhile.
func TestSlowBody(t *testing.T) {
	t.Parallel()
	b := setup(t, func(o *api.Options) { o.ReadTimeout = time.Second })
	conn, err := net.Dial("tcp", strings.TrimPrefix(b.base, "http://"))
	require.NoError(t, err)
	defer conn.Close()
	body := `{"action": "t.echo", "parameters": {"name": "slow"}}`
	_, err = fmt.Fprintf(conn, "POST /api/v1/executions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
		testToken, len(body), body[:10])
	require.NoError(t, err)

	// Meanwhile the server answers.
	require.Equal(t, 200, b.call(t, "GET", "/api/v1/actions", nil).status)

	require.NoError(t, conn.SetReadDeadline(time.Now().Add(10*time.Second)))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err == nil {
		defer resp.Body.Close()
		out, _ := io.ReadAll(resp.Body)
		require.Equal(t, http.StatusRequestTimeout, resp.StatusCode, "body %s", out)
	} else {
		// The read deadline may close the connection before the answer
		// goes out; either way, nothing was stored.
		require.ErrorIs(t, err, io.EOF)
	}
	var n int
	require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT count(*) FROM attune.execution").Scan(&n))
	require.Zero(t, n)
	require.Equal(t, 200, b.call(t, "GET", "/healthz", nil).status)
}

func TestSlowHeaders(t *testing.T) {
	t.Parallel()
	b := setup(t, func(o *api.Options) { o.ReadHeaderTimeout = 500 * time.Millisecond })
	conn, err := net.Dial("tcp", strings.TrimPrefix(b.base, "http://"))
	require.NoError(t, err)
	defer conn.Close()
	_, err = fmt.Fprint(conn, "GET /healthz HTTP/1.1\r\nHost: x\r\n")
	require.NoError(t, err)
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(10*time.Second)))
	_, err = io.ReadAll(conn) // closed by the server, not by our deadline
	require.NoError(t, err)
}

func TestListenPortInUse(t *testing.T) {
	t.Parallel()
	l, err := api.Listen("127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	_, err = api.Listen(l.Addr().String())
	require.Error(t, err)
	_, port, _ := net.SplitHostPort(l.Addr().String())
	require.Contains(t, err.Error(), "ATTUNE_HTTP_ADDR="+l.Addr().String())
	require.Contains(t, err.Error(), "already in use")
	require.NotContains(t, err.Error(), "\n")
	require.NotContains(t, err.Error(), "ATTUNE_HTTP_ADDR=127.0.0.1:"+port+",")
}

// rawRequest writes req on a fresh connection and returns the status.
func rawRequest(t *testing.T, base, req string) int {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	require.NoError(t, err)
	defer conn.Close()
	_, err = io.WriteString(conn, req)
	require.NoError(t, err)
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(10*time.Second)))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	require.NoError(t, err)
	resp.Body.Close()
	return resp.StatusCode
}
