package api_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/attune-system/attune/jobs"
)

func TestCreateExecution(t *testing.T) {
	t.Parallel()
	b := setup(t)

	t.Run("Created", func(t *testing.T) {
		r := b.call(t, "POST", "/api/v1/executions", map[string]any{
			"action": "t.echo", "parameters": map[string]any{"name": "api", "n": 12345678901234567},
			"options": map[string]any{"timeout_seconds": 30, "priority": 2},
		})
		require.Equal(t, http.StatusCreated, r.status, "body %s", r.body)
		id := int64(r.json["id"].(float64))
		require.Equal(t, fmt.Sprintf("/api/v1/executions/%d", id), r.header.Get("Location"))
		require.Equal(t, "requested", r.json["status"])
		require.Equal(t, "t.echo", r.json["action_ref"])
		require.EqualValues(t, 30, r.json["timeout_seconds"])
		// The row is the one SQL's attune.enqueue writes: compare.
		var sqlID int64
		require.NoError(t, b.pool.QueryRow(b.ctx, `SELECT attune.enqueue('t.echo', '{"name": "api", "n": 12345678901234567}', '{"timeout_seconds": 30, "priority": 2}')`).Scan(&sqlID))
		var same bool
		require.NoError(t, b.pool.QueryRow(b.ctx, `SELECT a.parameters = s.parameters AND a.priority = s.priority AND a.timeout_seconds = s.timeout_seconds
			AND a.max_attempts = s.max_attempts AND a.status = s.status
			FROM attune.execution a, attune.execution s WHERE a.id = $1 AND s.id = $2`, id, sqlID).Scan(&same))
		require.True(t, same)
		var params string
		require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT parameters::text FROM attune.execution WHERE id = $1", id).Scan(&params))
		require.Contains(t, params, "12345678901234567", "large integers keep their digits")
	})

	t.Run("Statuses", func(t *testing.T) {
		for _, tc := range []struct {
			name   string
			body   any
			status int
			want   string
		}{
			{"UnknownAction", map[string]any{"action": "t.nope"}, 404, "t.nope"},
			{"Disabled", map[string]any{"action": "t.disabled"}, 409, "disabled"},
			{"MissingParameter", map[string]any{"action": "t.echo"}, 422, "name"},
			{"UndeclaredParameter", map[string]any{"action": "t.echo", "parameters": map[string]any{"name": "x", "zzz": 1}}, 422, "zzz"},
			{"WrongParameterType", map[string]any{"action": "t.echo", "parameters": map[string]any{"name": "x", "n": "three"}}, 422, "n"},
			{"BadOption", map[string]any{"action": "t.echo", "parameters": map[string]any{"name": "x"}, "options": map[string]any{"priority": 9}}, 422, "priority"},
			{"OptionWrongType", `{"action": "t.echo", "options": {"timeout_seconds": "soon"}}`, 422, "timeout_seconds"},
			{"ParametersNotObject", `{"action": "t.echo", "parameters": [1, 2]}`, 422, "parameters"},
			{"UnknownField", `{"action": "t.echo", "params": {}}`, 422, "params"},
			{"RuleRefNotAllowed", `{"action": "t.echo", "options": {"rule_ref": "x"}}`, 422, "rule_ref"},
			{"BadTime", `{"action": "t.echo", "parameters": {"name": "x"}, "options": {"scheduled_at": "tomorrow"}}`, 422, "time"},
			{"NoAction", `{"parameters": {}}`, 422, "action"},
			{"MalformedJSON", `{"action": "t.echo",`, 400, "not valid JSON"},
			{"NotJSON", `action=t.echo`, 400, "not valid JSON"},
			{"Empty", ``, 400, "empty"},
			{"TwoValues", `{"action": "t.echo"} {"action": "t.echo"}`, 400, "more than one"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				r := b.call(t, "POST", "/api/v1/executions", tc.body)
				requireError(t, r, tc.status, tc.want)
			})
		}
		// Nothing was written by any of them.
		var n int
		require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT count(*) FROM attune.execution WHERE action_ref <> 't.echo' OR parameters ? 'zzz'").Scan(&n))
		require.Zero(t, n)
	})

	t.Run("WrongContentType", func(t *testing.T) {
		r := b.call(t, "POST", "/api/v1/executions", `{"action": "t.echo"}`, "Content-Type", "text/plain")
		requireError(t, r, http.StatusUnsupportedMediaType, "not JSON")
		r = b.call(t, "POST", "/api/v1/executions", `{"action": "t.echo"}`, "Content-Type", "")
		requireError(t, r, http.StatusUnsupportedMediaType, "no content type")
		r = b.call(t, "POST", "/api/v1/executions", `{"action": "t.echo", "parameters": {"name": "x"}}`, "Content-Type", "application/json; charset=utf-8")
		require.Equal(t, http.StatusCreated, r.status, "body %s", r.body)
	})

	t.Run("Body50MB", func(t *testing.T) {
		big := bytes.Repeat([]byte("x"), 50<<20)
		body := append([]byte(`{"action": "t.echo", "parameters": {"name": "`), big...)
		body = append(body, `"}}`...)
		r := b.call(t, "POST", "/api/v1/executions", body)
		requireError(t, r, http.StatusRequestEntityTooLarge, "larger than 1 MiB")
	})
}

func TestExecutionRoutes(t *testing.T) {
	t.Parallel()
	b := setup(t)
	enqueue := func(t *testing.T, ref string, params map[string]any) int64 {
		t.Helper()
		var id int64
		require.NoError(t, pgx.BeginFunc(b.ctx, b.pool, func(tx pgx.Tx) error {
			var err error
			id, err = jobs.Enqueue(b.ctx, tx, ref, params, nil)
			return err
		}))
		return id
	}
	var ids []int64
	for i := range 5 {
		ids = append(ids, enqueue(t, "t.echo", map[string]any{"name": fmt.Sprint(i)}))
	}
	ruled := enqueue(t, "t.echo", map[string]any{"name": "r"})
	_, err := b.pool.Exec(b.ctx, "UPDATE attune.execution SET rule_ref = 't.hook_open' WHERE id = $1", ruled)
	require.NoError(t, err)

	t.Run("Get", func(t *testing.T) {
		r := b.call(t, "GET", fmt.Sprintf("/api/v1/executions/%d", ids[0]), nil)
		require.Equal(t, 200, r.status)
		require.EqualValues(t, ids[0], r.json["id"])
		requireError(t, b.call(t, "GET", "/api/v1/executions/999999", nil), 404, "not found")
		requireError(t, b.call(t, "GET", "/api/v1/executions/abc", nil), 400, "not an execution id")
		requireError(t, b.call(t, "GET", "/api/v1/executions/-1", nil), 400, "not an execution id")
	})

	t.Run("ListAndPage", func(t *testing.T) {
		r := b.call(t, "GET", "/api/v1/executions?limit=2", nil)
		require.Equal(t, 200, r.status, "body %s", r.body)
		page := r.json["executions"].([]any)
		require.Len(t, page, 2)
		require.EqualValues(t, ruled, page[0].(map[string]any)["id"])
		require.Nil(t, page[0].(map[string]any)["stdout"], "lists leave output out")
		seen := map[int64]bool{}
		cursor := ""
		for pages := 0; ; pages++ {
			require.Less(t, pages, 10)
			r := b.call(t, "GET", "/api/v1/executions?limit=2&action=t.echo"+cursor, nil)
			require.Equal(t, 200, r.status, "body %s", r.body)
			for _, e := range r.json["executions"].([]any) {
				id := int64(e.(map[string]any)["id"].(float64))
				require.False(t, seen[id], "execution %d on two pages", id)
				seen[id] = true
			}
			next, ok := r.json["next_cursor"].(string)
			if !ok {
				break
			}
			cursor = "&cursor=" + next
		}
		require.Len(t, seen, 6)

		r = b.call(t, "GET", "/api/v1/executions?rule=t.hook_open", nil)
		require.Len(t, r.json["executions"].([]any), 1)
		r = b.call(t, "GET", "/api/v1/executions?status=completed", nil)
		require.Len(t, r.json["executions"].([]any), 0)
		future := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
		r = b.call(t, "GET", "/api/v1/executions?since="+future, nil)
		require.Len(t, r.json["executions"].([]any), 0)
		r = b.call(t, "GET", "/api/v1/executions?until="+future+"&since=2000-01-01T00:00:00Z", nil)
		require.Len(t, r.json["executions"].([]any), 6)

		requireError(t, b.call(t, "GET", "/api/v1/executions?status=done", nil), 400, "status")
		requireError(t, b.call(t, "GET", "/api/v1/executions?since=yesterday", nil), 400, "since")
		requireError(t, b.call(t, "GET", "/api/v1/executions?limit=0", nil), 400, "limit")
		requireError(t, b.call(t, "GET", "/api/v1/executions?limit=5000", nil), 400, "limit")
		requireError(t, b.call(t, "GET", "/api/v1/executions?cursor=x", nil), 400, "cursor")
	})

	t.Run("Cancel", func(t *testing.T) {
		r := b.call(t, "POST", fmt.Sprintf("/api/v1/executions/%d/cancel", ids[1]), nil)
		require.Equal(t, 200, r.status, "body %s", r.body)
		require.Equal(t, "cancelled", r.json["status"])
		require.Equal(t, "requested", r.json["previous_status"])
		r = b.call(t, "POST", fmt.Sprintf("/api/v1/executions/%d/cancel", ids[1]), nil)
		require.Equal(t, 200, r.status)
		require.Equal(t, "cancelled", r.json["previous_status"])
		requireError(t, b.call(t, "POST", "/api/v1/executions/999999/cancel", nil), 404, "not found")
		requireError(t, b.call(t, "GET", fmt.Sprintf("/api/v1/executions/%d/cancel", ids[1]), nil), 405, "not allowed")
	})

	t.Run("ReRun", func(t *testing.T) {
		r := b.call(t, "POST", fmt.Sprintf("/api/v1/executions/%d/re-run", ids[2]), nil)
		require.Equal(t, http.StatusCreated, r.status, "body %s", r.body)
		require.NotEqualValues(t, ids[2], r.json["id"])
		require.Equal(t, map[string]any{"name": "2"}, r.json["parameters"])
		requireError(t, b.call(t, "POST", "/api/v1/executions/999999/re-run", nil), 404, "not found")

		secret := enqueue(t, "t.secret", map[string]any{"password": "hunter2"})
		requireError(t, b.call(t, "POST", fmt.Sprintf("/api/v1/executions/%d/re-run", secret), nil), 409, "secret")

		_, err := b.pool.Exec(b.ctx, "UPDATE attune.action SET enabled = false WHERE ref = 't.echo'")
		require.NoError(t, err)
		defer b.pool.Exec(context.Background(), "UPDATE attune.action SET enabled = true WHERE ref = 't.echo'") //nolint:errcheck
		requireError(t, b.call(t, "POST", fmt.Sprintf("/api/v1/executions/%d/re-run", ids[2]), nil), 409, "disabled")
	})

	t.Run("Logs", func(t *testing.T) {
		_, err := b.pool.Exec(b.ctx, "UPDATE attune.execution SET stdout = 'hello\n', stderr = 'oops\n', status = 'completed', finished_at = now() WHERE id = $1", ids[3])
		require.NoError(t, err)
		r := b.call(t, "GET", fmt.Sprintf("/api/v1/executions/%d/logs", ids[3]), nil)
		require.Equal(t, 200, r.status)
		require.Equal(t, "hello\n", r.json["stdout"])
		require.Equal(t, "oops\n", r.json["stderr"])
		r = b.call(t, "GET", fmt.Sprintf("/api/v1/executions/%d/logs?stream=stderr", ids[3]), nil)
		require.Equal(t, "oops\n", r.json["stderr"])
		require.NotContains(t, r.json, "stdout")
		requireError(t, b.call(t, "GET", fmt.Sprintf("/api/v1/executions/%d/logs?stream=both", ids[3]), nil), 400, "stream")
		requireError(t, b.call(t, "GET", "/api/v1/executions/999999/logs", nil), 404, "not found")
		// A finished execution's stream is its output and the end event.
		r = b.call(t, "GET", fmt.Sprintf("/api/v1/executions/%d/logs", ids[3]), nil, "Accept", "text/event-stream")
		require.Equal(t, 200, r.status)
		require.Equal(t, "text/event-stream", r.header.Get("Content-Type"))
		require.Equal(t, "event: stdout\ndata: \"hello\\n\"\n\nevent: stderr\ndata: \"oops\\n\"\n\nevent: end\ndata: ", string(r.body[:strings.Index(string(r.body), "{")]))
		require.Contains(t, string(r.body), `"status":"completed"`)
	})
}
