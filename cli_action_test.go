package main

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/attune-system/attune/jobs"
	"github.com/attune-system/attune/packs"
)

func TestCLIExecute(t *testing.T) {
	t.Parallel()
	b := setupCLI(t)

	id := b.execute(t, "c.echo", "--param", "n=3", "--param", "s=hi")
	e, err := jobs.Get(b.ctx, b.pool, id)
	require.NoError(t, err)
	require.Equal(t, jobs.StatusRequested, e.Status)
	require.JSONEq(t, `{"n": 3, "s": "hi"}`, string(e.Parameters), "n=3 is a number, s=hi a string")

	// --params-json, with --param on top; a string parameter keeps 42 as
	// text, as StackStorm's CLI does.
	id = b.execute(t, "c.echo", "--params-json", `{"n": 4, "s": "from json"}`, "--param", "s=42")
	e, err = jobs.Get(b.ctx, b.pool, id)
	require.NoError(t, err)
	require.JSONEq(t, `{"n": 4, "s": "42"}`, string(e.Parameters))
	require.Nil(t, e.TimeoutSeconds)

	id = b.execute(t, "c.echo", "--param", "n=5", "--param", "s=a=b", "--timeout", "5s")
	e, err = jobs.Get(b.ctx, b.pool, id)
	require.NoError(t, err)
	require.JSONEq(t, `{"n": 5, "s": "a=b"}`, string(e.Parameters), "only the first = splits")
	require.Equal(t, 5, *e.TimeoutSeconds)

	id = b.execute(t, "c.echo", "--param", "n=6", "--param", "s=x", "--timeout", "2m")
	e, err = jobs.Get(b.ctx, b.pool, id)
	require.NoError(t, err)
	require.Equal(t, 120, *e.TimeoutSeconds)

	var got map[string]any
	b.okJSON(t, &got, "action", "execute", "c.echo", "--param", "n=7", "--param", "s=x")
	require.Equal(t, []string{"action_ref", "id", "status"}, sortedKeys(got))
	require.Equal(t, "c.echo", got["action_ref"])
	require.Equal(t, jobs.StatusRequested, got["status"])
}

func TestParseParams(t *testing.T) {
	t.Parallel()
	p, err := parseParams([]string{"n=3", "s=hi", "b=true", `o={"a":1}`, "t=3}", "u=1 2", "e="}, "", nil)
	require.NoError(t, err)
	require.Equal(t, map[string]any{"n": json.Number("3"), "s": "hi", "b": true, "o": map[string]any{"a": json.Number("1")},
		"t": "3}", "u": "1 2", "e": ""}, p)

	_, err = parseParams(nil, `{"a": 1}}`, nil)
	require.ErrorContains(t, err, "--params-json holds more than one JSON value")
}

// TestParseParamsTyped: a declared type decides how --param's text is read.
func TestParseParamsTyped(t *testing.T) {
	t.Parallel()
	decl := packs.Params{
		"name": {Type: "string"}, "zip": {Type: "string"}, "n": {Type: "integer"},
		"tags": {Type: "array"}, "on": {Type: "boolean"}, "o": {Type: "object"},
	}
	p, err := parseParams([]string{"name=123", "zip=02134", "n=7", "tags=a,b", "on=yes", `o={"k":"v"}`, "other=5"}, "", decl)
	require.NoError(t, err)
	require.Equal(t, map[string]any{"name": "123", "zip": "02134", "n": json.Number("7"), "tags": []any{"a", "b"},
		"on": true, "o": map[string]any{"k": "v"}, "other": json.Number("5")}, p)

	_, err = parseParams([]string{"n=seven"}, "", decl)
	require.EqualError(t, err, "--param n=seven: n is an integer parameter; give a whole number such as 3")
}

// TestCLIExecuteTypedParams: through the command, a string parameter typed
// as digits is stored as a string, and a mistyped integer is refused before
// anything is enqueued.
func TestCLIExecuteTypedParams(t *testing.T) {
	t.Parallel()
	b := setupCLI(t)
	id := b.execute(t, "c.echo", "--param", "n=3", "--param", "s=02134")
	e, err := jobs.Get(b.ctx, b.pool, id)
	require.NoError(t, err)
	require.JSONEq(t, `{"n": 3, "s": "02134"}`, string(e.Parameters))

	r := b.attune(t, "action", "execute", "c.echo", "--param", "n=3.5", "--param", "s=x")
	require.Equal(t, 2, exitCode(r.err))
	require.Equal(t, "attune: --param n=3.5: n is an integer parameter; give a whole number such as 3", r.line())
	require.Equal(t, 1, b.executions(t))
}

func TestCLIActionShow(t *testing.T) {
	t.Parallel()
	b := setupCLI(t)

	out := b.ok(t, "action", "show", "c.echo")
	require.Regexp(t, `(?m)^ref:\s+c\.echo$`, out)
	require.Regexp(t, `(?m)^runner:\s+shell$`, out)
	require.Regexp(t, `(?m)^entry point:\s+echo\.sh \(/.*/c/actions/echo\.sh\)$`, out)
	require.Regexp(t, `(?m)^timeout:\s+ATTUNE_DEFAULT_TIMEOUT$`, out)
	require.Regexp(t, `(?m)^parameters via:\s+env \(json\)$`, out)
	require.Regexp(t, `(?m)^PARAMETER\s+TYPE\s+REQUIRED\s+DEFAULT\s+ALLOWED\s+SECRET\s+DESCRIPTION$`, out)
	require.Regexp(t, `(?m)^n\s+integer\s+yes\s+-\s+-\s+no\s+-$`, out)
	require.Regexp(t, `(?m)^s\s+string\s+yes\s+-\s+-\s+no\s+-$`, out)
	// get is StackStorm's verb for the same thing.
	require.Equal(t, out, b.ok(t, "action", "get", "c.echo"))

	var ai map[string]any
	b.okJSON(t, &ai, "action", "show", "c.hang")
	require.Equal(t, "c.hang", ai["ref"])
	params := ai["parameters"].(map[string]any)
	require.Equal(t, map[string]any{"type": "boolean", "default": false}, params["ignore_term"])
	require.Equal(t, map[string]any{"type": "string", "required": true}, params["pidfile"])

	require.Contains(t, b.ok(t, "action", "show", "c.fail"), "parameters:")
	r := b.attune(t, "action", "show", "c.nope")
	require.Equal(t, 1, exitCode(r.err))
	require.Equal(t, `attune: unknown action "c.nope"; attune action list shows the registered actions`, r.line())
}

// TestCLIExecuteOptions: the enqueue options SQL has, from the command line.
func TestCLIExecuteOptions(t *testing.T) {
	t.Parallel()
	b := setupCLI(t)
	type row struct {
		Priority    int
		MaxAttempts int
		Scheduled   time.Time
		Status      string
	}
	get := func(id int64) row {
		var r row
		require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT priority, max_attempts, scheduled_at, status FROM attune.execution WHERE id = $1", id).
			Scan(&r.Priority, &r.MaxAttempts, &r.Scheduled, &r.Status))
		return r
	}

	before := time.Now()
	id := b.execute(t, "c.echo", "--param", "n=1", "--param", "s=x", "--priority", "3", "--max-attempts", "4", "--delay", "1h")
	r := get(id)
	require.Equal(t, 3, r.Priority)
	require.Equal(t, 4, r.MaxAttempts)
	require.Equal(t, "scheduled", r.Status)
	require.WithinDuration(t, before.Add(time.Hour), r.Scheduled, time.Minute)

	id = b.execute(t, "c.echo", "--param", "n=1", "--param", "s=x", "--at", "2099-12-24T18:00:00+01:00")
	r = get(id)
	require.True(t, r.Scheduled.Equal(time.Date(2099, 12, 24, 17, 0, 0, 0, time.UTC)), "scheduled at %s", r.Scheduled)
	require.Equal(t, 1, r.Priority)

	for _, tc := range []struct {
		args []string
		line string
	}{
		{[]string{"--delay", "5s", "--at", "2099-01-01T00:00:00Z"}, "attune: give --delay or --at, not both"},
		{[]string{"--at", "tomorrow"}, `attune: --at "tomorrow" is invalid: use RFC 3339 such as 2026-12-24T18:00:00Z or 2026-12-24T18:00:00+01:00`},
		{[]string{"--delay", "-1m"}, "attune: --delay -1m0s is invalid: use a positive duration such as 10m"},
		{[]string{"--priority", "0"}, "attune: --priority 0 is invalid: use a whole number of at least 1"},
		{[]string{"--max-attempts", "0"}, "attune: --max-attempts 0 is invalid: use a whole number of at least 1"},
	} {
		res := b.attune(t, append([]string{"action", "execute", "c.echo", "--param", "n=1", "--param", "s=x"}, tc.args...)...)
		require.Equal(t, 2, exitCode(res.err), "%v", tc.args)
		require.Equal(t, tc.line, res.line())
	}
	res := b.attune(t, "action", "execute", "c.echo", "--param", "n=1", "--param", "s=x", "--priority", "9")
	require.Equal(t, 1, exitCode(res.err))
	require.Contains(t, res.line(), "priority")
	require.Equal(t, 2, b.executions(t))
}
