package main

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestParseTimerInterval(t *testing.T) {
	t.Parallel()

	for _, tt := range []struct {
		config      string
		wantEvery   time.Duration
		wantSeconds float64
	}{
		{`{"unit": "seconds", "interval": 5}`, 5 * time.Second, 5},
		{`{"unit": "minutes", "interval": 2}`, 2 * time.Minute, 120},
		{`{"unit": "hours", "interval": 1}`, time.Hour, 3600},
		{`{"unit": "days", "interval": 3}`, 72 * time.Hour, 259200},
		{`{"interval": 10}`, 10 * time.Second, 10},                   // unit defaults to seconds
		{`{"unit": "seconds", "interval": "7"}`, 7 * time.Second, 7}, // a numeric string is read
		{`{"unit": "seconds", "interval": 1, "x": true}`, time.Second, 1},
	} {
		t.Run(tt.config, func(t *testing.T) {
			t.Parallel()

			tm, err := parseTimer(triggerInterval, json.RawMessage(tt.config), t0)
			require.NoError(t, err)
			require.Equal(t, intervalSchedule{start: t0, every: tt.wantEvery}, tm.schedule)
			require.Zero(t, tm.catchUp)

			p := payloadMap(t, tm, firing{scheduled: t0.Add(tt.wantEvery), fired: t0.Add(tt.wantEvery), count: 1, sensorRef: "core.timer_sensor"})
			require.Equal(t, map[string]any{
				"type":             "interval",
				"interval_seconds": tt.wantSeconds,
				"fired_at":         formatTime(t0.Add(tt.wantEvery)),
				"execution_count":  float64(1),
				"sensor_ref":       "core.timer_sensor",
			}, p)
		})
	}
}

func TestParseTimerCron(t *testing.T) {
	t.Parallel()

	tm, err := parseTimer(triggerCron, json.RawMessage(`{"expression": "30 9 * * 1-5", "timezone": "Europe/Paris"}`), t0)
	require.NoError(t, err)
	next, ok := tm.schedule.next(t0) // t0 is Sunday 2025-06-01 10:00 UTC
	require.True(t, ok)
	require.Equal(t, "2025-06-02T07:30:00Z", formatTime(next), "Monday 09:30 in Paris (UTC+2)")

	p := payloadMap(t, tm, firing{scheduled: next, fired: next.Add(time.Millisecond), count: 4, sensorRef: "s.ref"})
	require.Equal(t, map[string]any{
		"type":            "cron",
		"fired_at":        "2025-06-02T07:30:00.001Z",
		"scheduled_at":    "2025-06-02T07:30:00Z",
		"expression":      "30 9 * * 1-5",
		"timezone":        "Europe/Paris",
		"execution_count": float64(4),
		"sensor_ref":      "s.ref",
	}, p)

	tm, err = parseTimer(triggerCron, json.RawMessage(`{"expression": "*/5 * * * * *"}`), t0)
	require.NoError(t, err)
	require.Equal(t, "UTC", payloadMap(t, tm, firing{})["timezone"], "timezone defaults to UTC")
}

func TestParseTimerDatetime(t *testing.T) {
	t.Parallel()

	for _, tt := range []struct {
		name   string
		fireAt time.Time
	}{
		{"in the future", t0.Add(time.Hour)},
		{"just past, within the grace", t0.Add(-59 * time.Second)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()

			config := `{"fire_at": "` + tt.fireAt.Format(time.RFC3339) + `"}`
			tm, err := parseTimer(triggerDatetime, json.RawMessage(config), t0)
			require.NoError(t, err)
			require.Equal(t, datetimeGrace, tm.catchUp)

			// The sensor asks for the first fire time after start - catchUp.
			first, ok := tm.schedule.next(t0.Add(-tm.catchUp))
			require.True(t, ok)
			require.True(t, tt.fireAt.Equal(first))

			p := payloadMap(t, tm, firing{scheduled: first, fired: t0, sensorRef: "s.ref"})
			require.Equal(t, map[string]any{
				"type":         "datetime",
				"fired_at":     formatTime(t0),
				"scheduled_at": formatTime(tt.fireAt),
				"sensor_ref":   "s.ref",
			}, p)
		})
	}

	_, err := parseTimer(triggerDatetime, json.RawMessage(`{"fire_at": "2025-06-01T13:00:00+02:00"}`), t0)
	require.NoError(t, err, "an offset other than Z is RFC 3339 too")
}

func TestParseTimerErrors(t *testing.T) {
	t.Parallel()

	for _, tt := range []struct {
		name, trigger, config, wantErr string
	}{
		{"unknown trigger", "core.webhook", `{}`, `trigger_ref "core.webhook" is not served by this sensor`},
		{"config not an object", triggerInterval, `[1]`, "config must be a JSON object"},
		{"config field of wrong type", triggerInterval, `{"unit": 5, "interval": 1}`, "config: json: cannot unmarshal number"},
		{"bad unit", triggerInterval, `{"unit": "weeks", "interval": 1}`, `unit "weeks" is not one of seconds, minutes, hours, days`},
		{"missing interval", triggerInterval, `{"unit": "seconds"}`, "interval is required"},
		{"null config", triggerInterval, `null`, "interval is required"},
		{"zero interval", triggerInterval, `{"unit": "seconds", "interval": 0}`, "interval must be > 0, got 0"},
		{"negative interval", triggerInterval, `{"unit": "seconds", "interval": -3}`, "interval must be > 0, got -3"},
		{"fractional interval", triggerInterval, `{"unit": "seconds", "interval": 1.5}`, "interval 1.5 is not a whole number"},
		{"non-numeric interval", triggerInterval, `{"unit": "seconds", "interval": "soon"}`, "config: json: invalid number literal"},
		{"interval too long", triggerInterval, `{"unit": "days", "interval": 200000}`, "interval 200000 days is too long"},
		{"missing expression", triggerCron, `{"timezone": "UTC"}`, "expression is required"},
		{"bad cron", triggerCron, `{"expression": "61 * * * *"}`, `expression "61 * * * *": end of range (61) above maximum (59)`},
		{"too many cron fields", triggerCron, `{"expression": "* * * * * * *"}`, `expression "* * * * * * *": expected 5 to 6 fields`},
		{"zone in expression", triggerCron, `{"expression": "TZ=UTC * * * * *"}`, "put the zone in timezone"},
		{"cron that never fires", triggerCron, `{"expression": "0 0 30 2 *"}`, "never matches within five years"},
		{"bad timezone", triggerCron, `{"expression": "* * * * *", "timezone": "Mars/Olympus"}`, `timezone "Mars/Olympus" is not an IANA zone name`},
		{"missing fire_at", triggerDatetime, `{}`, "fire_at is required"},
		{"bad fire_at", triggerDatetime, `{"fire_at": "tomorrow"}`, `fire_at "tomorrow" is not an RFC 3339 time`},
		{"fire_at without zone", triggerDatetime, `{"fire_at": "2030-01-01T09:00:00"}`, "is not an RFC 3339 time"},
		{"fire_at long past", triggerDatetime, `{"fire_at": "2025-06-01T09:58:59Z"}`, "fire_at 2025-06-01T09:58:59Z is 1m1s in the past, more than 1m0s; not firing"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()

			_, err := parseTimer(tt.trigger, json.RawMessage(tt.config), t0)
			require.ErrorContains(t, err, tt.wantErr)
			require.Equal(t, tt.name == "fire_at long past", errors.Is(err, errExpired))
		})
	}
}

// payloadMap renders tm's payload for f as the JSON object a reader sees.
func payloadMap(t *testing.T, tm timer, f firing) map[string]any {
	t.Helper()
	data, err := json.Marshal(tm.payload(f))
	require.NoError(t, err)
	var m map[string]any
	require.NoError(t, json.Unmarshal(data, &m))
	return m
}
