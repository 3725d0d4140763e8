package main

import (
	"encoding/json"
	"testing"

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
