package api_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestLogStream follows a running execution over Server-Sent Events: the
// chunks add up to the stored output, byte for byte, arrive while it runs,
// and the stream ends with the final status.
func TestLogStream(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.startWorker(t)
	r := b.call(t, "POST", "/api/v1/executions", map[string]any{"action": "t.ticks", "parameters": map[string]any{"count": 20}})
	require.Equal(t, 201, r.status, "body %s", r.body)
	id := int64(r.json["id"].(float64))

	req, err := http.NewRequest("GET", fmt.Sprintf("%s/api/v1/executions/%d/logs", b.base, id), nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+testToken)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, 200, resp.StatusCode)

	got := map[string]string{}
	chunks := 0
	var end map[string]any
	sc := bufio.NewScanner(resp.Body)
	event := ""
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "event: "):
			event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			data := strings.TrimPrefix(line, "data: ")
			if event == "end" {
				require.NoError(t, json.Unmarshal([]byte(data), &end))
				continue
			}
			var chunk string
			require.NoError(t, json.Unmarshal([]byte(data), &chunk))
			got[event] += chunk
			if event == "stdout" {
				chunks++
			}
		}
	}
	require.NoError(t, sc.Err())
	require.NotNil(t, end, "the stream ends with an end event")
	require.Equal(t, "completed", end["status"], "%v", end)
	e := waitFinished(t, b.pool, id)
	require.Equal(t, *e.Stdout, got["stdout"])
	require.Equal(t, *e.Stderr, got["stderr"])
	require.Contains(t, got["stdout"], "out 20\n")
	require.Greater(t, chunks, 1, "output arrived while the execution ran")
}

// TestMetricsCount runs executions and reads the counters back.
func TestMetricsCount(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.startWorker(t)
	var ids []int64
	for _, body := range []map[string]any{
		{"action": "t.echo", "parameters": map[string]any{"name": "a"}},
		{"action": "t.echo", "parameters": map[string]any{"name": "b"}},
		{"action": "t.echo", "parameters": map[string]any{"name": "c"}},
		{"action": "t.flood"},
		{"action": "t.hang"},
	} {
		r := b.call(t, "POST", "/api/v1/executions", body)
		require.Equal(t, 201, r.status, "body %s", r.body)
		ids = append(ids, int64(r.json["id"].(float64)))
	}
	hang := ids[len(ids)-1]
	// The running gauge sees the hanging one once the others are done (a
	// cancel before it starts is settled by the cancel, not by a replica,
	// and counts nowhere).
	for _, id := range ids[:len(ids)-1] {
		waitFinished(t, b.pool, id)
	}
	require.Eventually(t, func() bool {
		return b.call(t, "GET", fmt.Sprintf("/api/v1/executions/%d", hang), nil).json["status"] == "running"
	}, 20*time.Second, 20*time.Millisecond)
	require.Equal(t, 1.0, metricValue(t, b, `attune_executions_running`))
	require.Equal(t, 200, b.call(t, "POST", fmt.Sprintf("/api/v1/executions/%d/cancel", hang), nil).status)
	for _, id := range ids {
		waitFinished(t, b.pool, id)
	}
	require.Eventually(t, func() bool {
		return metricValue(t, b, `attune_executions_finished_total{action="t.hang",status="cancelled"}`) == 1
	}, 10*time.Second, 50*time.Millisecond, "%s", finishedLines(t, b))
	require.Eventually(t, func() bool {
		return metricValue(t, b, `attune_executions_finished_total{action="t.echo",status="completed"}`) == 3
	}, 10*time.Second, 50*time.Millisecond)
	require.Equal(t, 1.0, metricValue(t, b, `attune_executions_finished_total{action="t.flood",status="completed"}`))
	require.Equal(t, 3.0, metricValue(t, b, `attune_execution_duration_seconds_count{action="t.echo"}`))
	require.Equal(t, 5.0, metricValue(t, b, `attune_execution_pickup_latency_seconds_count`))
	require.Equal(t, 1.0, metricValue(t, b, `attune_output_truncations_total{stream="stdout"}`))
	require.Equal(t, 0.0, metricValue(t, b, `attune_executions_running`))
	require.GreaterOrEqual(t, metricValue(t, b, `attune_worker_heartbeat_age_seconds`), 0.0)
	require.Equal(t, 0.0, metricValue(t, b, `attune_metrics_scrape_error`))
	// River's own view: every job completed (attune settles cancels too).
	require.Eventually(t, func() bool {
		return metricValue(t, b, `attune_river_jobs_total{event="job_completed",queue="shell"}`) == 5
	}, 10*time.Second, 50*time.Millisecond)
	require.Equal(t, 5.0, metricValue(t, b, `attune_river_job_run_seconds_count{queue="shell"}`))

	// Labels are from a bounded set: no ids, no parameter values.
	body := string(b.call(t, "GET", "/metrics", nil).body)
	allowed := map[string]bool{"action": true, "status": true, "queue": true, "sensor": true, "trigger": true,
		"stream": true, "outcome": true, "le": true, "event": true}
	for _, m := range regexp.MustCompile(`(?m)^(?:attune|river)_\w+\{(.*)\} `).FindAllStringSubmatch(body, -1) {
		for _, l := range regexp.MustCompile(`(\w+)="([^"]*)"`).FindAllStringSubmatch(m[1], -1) {
			require.True(t, allowed[l[1]], "label %s", l[1])
			require.NotEqual(t, "a", l[2], "a parameter value")
		}
	}
}

// metricValue scrapes /metrics and returns the sample named by series
// (name and labels as the text format writes them), -1 when absent.
func metricValue(t *testing.T, b *testBundle, series string) float64 {
	t.Helper()
	r := b.call(t, "GET", "/metrics", nil)
	require.Equal(t, 200, r.status)
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindStringSubmatch(string(r.body))
	if m == nil {
		return -1
	}
	v, err := strconv.ParseFloat(m[1], 64)
	require.NoError(t, err)
	return v
}

// TestLogStreamRewrite: stored output that stops being a continuation of
// what was sent (the truncation notice replacing the last bytes kept) is
// announced with a reset event and sent again whole.
func TestLogStreamRewrite(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var id int64
	require.NoError(t, b.pool.QueryRow(b.ctx, `SELECT attune.enqueue('t.echo', '{"name": "x"}')`).Scan(&id))
	_, err := b.pool.Exec(b.ctx, "UPDATE attune.execution SET status = 'running', stdout = 'héllo wor' WHERE id = $1", id)
	require.NoError(t, err)

	req, err := http.NewRequest("GET", fmt.Sprintf("%s/api/v1/executions/%d/logs?stream=stdout", b.base, id), nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+testToken)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	next := func() (event, data string) {
		t.Helper()
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "event: "):
				event = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				return event, strings.TrimPrefix(line, "data: ")
			}
		}
		t.Fatalf("stream ended: %v", sc.Err())
		return "", ""
	}
	ev, data := next()
	require.Equal(t, "stdout", ev)
	require.Equal(t, `"héllo wor"`, data)
	_, err = b.pool.Exec(b.ctx, "UPDATE attune.execution SET stdout = 'héllo world\n' WHERE id = $1", id)
	require.NoError(t, err)
	ev, data = next()
	require.Equal(t, "stdout", ev)
	require.Equal(t, `"ld\n"`, data, "only what is new")
	_, err = b.pool.Exec(b.ctx, "UPDATE attune.execution SET stdout = 'héllo [TRUNCATED]', status = 'completed', finished_at = now() WHERE id = $1", id)
	require.NoError(t, err)
	ev, data = next()
	require.Equal(t, "reset", ev)
	require.Equal(t, `"stdout"`, data)
	ev, data = next()
	require.Equal(t, "stdout", ev)
	require.Equal(t, `"héllo [TRUNCATED]"`, data)
	ev, data = next()
	require.Equal(t, "end", ev)
	require.Contains(t, data, `"status":"completed"`)
}

func finishedLines(t *testing.T, b *testBundle) string {
	var out []string
	for _, l := range strings.Split(string(b.call(t, "GET", "/metrics", nil).body), "\n") {
		if strings.HasPrefix(l, "attune_executions_finished") || strings.HasPrefix(l, "attune_metrics_dropped") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestSensorMetrics: a rule enabled over the API starts its sensor on the
// replica; its events, the rule's firings and the sensor's state show in
// /metrics.
func TestSensorMetrics(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.startWorker(t)
	r := b.call(t, "POST", "/api/v1/rules/t.on_tick/enable", nil)
	require.Equal(t, 200, r.status, "body %s", r.body)
	require.Eventually(t, func() bool {
		return metricValue(t, b, `attune_rule_firings_total{trigger="t.tick"}`) >= 2
	}, 20*time.Second, 100*time.Millisecond, "log:\n%s", b.log.String())
	require.GreaterOrEqual(t, metricValue(t, b, `attune_events_total{trigger="t.tick"}`), 2.0)
	require.Equal(t, 1.0, metricValue(t, b, `attune_sensor_up{sensor="t.ticker"}`))
	require.Equal(t, 0.0, metricValue(t, b, `attune_sensor_restarts{sensor="t.ticker"}`))
	r = b.call(t, "GET", "/api/v1/sensors", nil)
	var ticker map[string]any
	for _, s := range r.json["sensors"].([]any) {
		if s.(map[string]any)["ref"] == "t.ticker" {
			ticker = s.(map[string]any)
		}
	}
	require.Equal(t, "running", ticker["status"])
	require.Equal(t, "api-test", ticker["worker"])
	r = b.call(t, "GET", "/api/v1/executions?rule=t.on_tick", nil)
	require.NotEmpty(t, r.json["executions"])
	require.Equal(t, 200, b.call(t, "POST", "/api/v1/rules/t.on_tick/disable", nil).status)
}
