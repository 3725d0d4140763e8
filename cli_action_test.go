package main

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/attune-system/attune/jobs"
)

func TestCLIExecute(t *testing.T) {
	t.Parallel()
	b := setupCLI(t)

	id := b.execute(t, "c.echo", "--param", "n=3", "--param", "s=hi")
	e, err := jobs.Get(b.ctx, b.pool, id)
	require.NoError(t, err)
	require.Equal(t, jobs.StatusRequested, e.Status)
	require.JSONEq(t, `{"n": 3, "s": "hi"}`, string(e.Parameters), "n=3 is a number, s=hi a string")

	// --params-json, with --param on top; values that are JSON stay JSON.
	id = b.execute(t, "c.echo", "--params-json", `{"n": 4, "s": "from json"}`, "--param", "s=\"42\"")
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
	p, err := parseParams([]string{"n=3", "s=hi", "b=true", `o={"a":1}`, "t=3}", "u=1 2", "e="}, "")
	require.NoError(t, err)
	require.Equal(t, map[string]any{"n": json.Number("3"), "s": "hi", "b": true, "o": map[string]any{"a": json.Number("1")},
		"t": "3}", "u": "1 2", "e": ""}, p)

	_, err = parseParams(nil, `{"a": 1}}`)
	require.ErrorContains(t, err, "--params-json holds more than one JSON value")
}
