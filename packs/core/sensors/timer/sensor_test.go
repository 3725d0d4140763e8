package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// fakeClock is a clock that moves only when a test advances it.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
}

type fakeTimer struct {
	at time.Time
	c  chan time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) NewTimer(d time.Duration) (<-chan time.Time, func() bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ft := &fakeTimer{at: c.now.Add(d), c: make(chan time.Time, 1)}
	c.timers = append(c.timers, ft)
	return ft.c, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		n := len(c.timers)
		c.timers = slices.DeleteFunc(c.timers, func(x *fakeTimer) bool { return x == ft })
		return len(c.timers) < n
	}
}

// Advance moves the clock by d and fires the timers now due.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	c.timers = slices.DeleteFunc(c.timers, func(ft *fakeTimer) bool {
		if ft.at.After(c.now) {
			return false
		}
		ft.c <- c.now
		return true
	})
}

func (c *fakeClock) waiting() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.timers)
}

// lineSink receives the sensor's stdout, one Write per line.
type lineSink chan []byte

func (s lineSink) Write(p []byte) (int, error) {
	s <- append([]byte(nil), p...)
	return len(p), nil
}

type sensorBundle struct {
	clock  *fakeClock
	out    lineSink
	stderr *syncBuffer
	ctx    context.Context
	failed chan error
}

func setupSensor(t *testing.T) (*sensor, *sensorBundle) {
	t.Helper()

	b := &sensorBundle{
		clock:  &fakeClock{now: t0},
		out:    make(lineSink, 100),
		stderr: &syncBuffer{},
		ctx:    t.Context(),
		failed: make(chan error, 10),
	}
	log := slog.New(slog.NewTextHandler(b.stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s := newSensor("core.timer_sensor", b.clock, log, b.out, func(err error) { b.failed <- err })
	t.Cleanup(func() { s.stopAll(5 * time.Second) })
	return s, b
}

// waitTimers waits until n timers are sleeping on the fake clock.
func (b *sensorBundle) waitTimers(t *testing.T, n int) {
	t.Helper()
	require.Eventually(t, func() bool { return b.clock.waiting() == n }, 5*time.Second, time.Millisecond,
		"want %d sleeping timers", n)
}

func (b *sensorBundle) nextEvent(t *testing.T) gotEvent {
	t.Helper()
	select {
	case line := <-b.out:
		var ev gotEvent
		require.NoError(t, json.Unmarshal(line, &ev), "line %q", line)
		require.Equal(t, byte('\n'), line[len(line)-1])
		return ev
	case <-time.After(5 * time.Second):
		require.FailNow(t, "no event")
		return gotEvent{}
	}
}

func (b *sensorBundle) noEvent(t *testing.T) {
	t.Helper()
	select {
	case line := <-b.out:
		require.FailNow(t, "unexpected event", "%s", line)
	case <-time.After(50 * time.Millisecond):
	}
}

func intervalRule(id int64, seconds int) rule {
	return rule{
		ID: id, Ref: "test.interval", TriggerRef: triggerInterval,
		Config: json.RawMessage(`{"unit": "seconds", "interval": ` + jsonInt(seconds) + `}`),
	}
}

func jsonInt(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}

func TestSensorIntervalFiresOnSlots(t *testing.T) {
	t.Parallel()
	s, b := setupSensor(t)

	s.start(b.ctx, intervalRule(7, 2), "test")
	for k := 1; k <= 3; k++ {
		b.waitTimers(t, 1)
		b.clock.Advance(2 * time.Second)
		ev := b.nextEvent(t)
		require.Equal(t, triggerInterval, ev.TriggerRef)
		require.Equal(t, int64(7), ev.TriggerInstanceID)
		require.Equal(t, map[string]any{
			"type":             "interval",
			"interval_seconds": float64(2),
			"fired_at":         formatTime(t0.Add(time.Duration(k) * 2 * time.Second)),
			"execution_count":  float64(k),
			"sensor_ref":       "core.timer_sensor",
		}, ev.Payload)
	}
}

// TestSensorIntervalSkipsMissedSlots stalls the clock past several slots: the
// timer fires once, late, then resumes on the next slot of the original grid.
func TestSensorIntervalSkipsMissedSlots(t *testing.T) {
	t.Parallel()
	s, b := setupSensor(t)

	s.start(b.ctx, intervalRule(1, 1), "test")
	b.waitTimers(t, 1)
	b.clock.Advance(3500 * time.Millisecond) // slots 1, 2 and 3 have passed

	ev := b.nextEvent(t)
	require.Equal(t, formatTime(t0.Add(3500*time.Millisecond)), ev.Payload["fired_at"])
	require.Equal(t, float64(1), ev.Payload["execution_count"])
	b.noEvent(t) // no burst of catch-up firings

	b.waitTimers(t, 1)
	b.clock.Advance(500 * time.Millisecond)
	ev = b.nextEvent(t)
	require.Equal(t, formatTime(t0.Add(4*time.Second)), ev.Payload["fired_at"], "back on the grid start + k*1s")
	require.Equal(t, float64(2), ev.Payload["execution_count"], "counts firings, not slots")
	require.Contains(t, b.stderr.String(), `msg="fired late; skipping missed fire times" rule=test.interval id=1`)
}

func TestSensorReplaceRestartsTimer(t *testing.T) {
	t.Parallel()
	s, b := setupSensor(t)

	s.start(b.ctx, intervalRule(1, 10), "test")
	b.waitTimers(t, 1)
	b.clock.Advance(5 * time.Second)

	s.handleLine(b.ctx, []byte(`{"event_type": "rule.enabled", "rule": {"id": 1, "ref": "test.interval",
		"trigger_ref": "core.intervaltimer", "config": {"unit": "seconds", "interval": 3}}}`))
	b.waitTimers(t, 1) // the old timer is gone, the new one sleeps
	b.clock.Advance(3 * time.Second)

	ev := b.nextEvent(t)
	require.Equal(t, float64(3), ev.Payload["interval_seconds"])
	require.Equal(t, formatTime(t0.Add(8*time.Second)), ev.Payload["fired_at"], "counted from the replacement")
	require.Equal(t, float64(1), ev.Payload["execution_count"])

	b.waitTimers(t, 1)
	b.clock.Advance(2 * time.Second) // t0+10s: the old timer's slot
	b.noEvent(t)
}

func TestSensorStopEndsTimer(t *testing.T) {
	t.Parallel()

	for _, eventType := range []string{ruleDisabled, ruleDeleted} {
		t.Run(eventType, func(t *testing.T) {
			t.Parallel()
			s, b := setupSensor(t)

			s.start(b.ctx, intervalRule(1, 1), "test")
			s.start(b.ctx, intervalRule(2, 1), "test")
			b.waitTimers(t, 2)

			s.handleLine(b.ctx, []byte(`{"event_type": "`+eventType+`", "rule": {"id": 1}}`))
			require.Equal(t, 1, b.clock.waiting(), "stop returns once the timer is gone")
			b.clock.Advance(time.Second)
			require.Equal(t, int64(2), b.nextEvent(t).TriggerInstanceID)
			b.noEvent(t)
			require.Contains(t, b.stderr.String(), `msg="rule stopped" rule="" id=1 cause=`+eventType)
		})
	}
}

func TestSensorCronTimezone(t *testing.T) {
	t.Parallel()
	s, b := setupSensor(t)
	b.clock.Advance(-(3*time.Hour + 30*time.Second)) // 06:59:30 UTC, 08:59:30 in Paris

	s.start(b.ctx, rule{ID: 1, Ref: "test.cron", TriggerRef: triggerCron,
		Config: json.RawMessage(`{"expression": "0 9 * * *", "timezone": "Europe/Paris"}`)}, "test")
	b.waitTimers(t, 1)
	b.clock.Advance(30*time.Second + 250*time.Millisecond)

	ev := b.nextEvent(t)
	require.Equal(t, "2025-06-01T07:00:00Z", ev.Payload["scheduled_at"])
	require.Equal(t, "2025-06-01T07:00:00.25Z", ev.Payload["fired_at"])
	require.Equal(t, "Europe/Paris", ev.Payload["timezone"])
	require.Equal(t, float64(1), ev.Payload["execution_count"])
}

func TestSensorDatetime(t *testing.T) {
	t.Parallel()

	datetimeRule := func(at time.Time) rule {
		return rule{ID: 1, Ref: "test.once", TriggerRef: triggerDatetime,
			Config: json.RawMessage(`{"fire_at": "` + at.Format(time.RFC3339) + `"}`)}
	}

	t.Run("future fires once", func(t *testing.T) {
		t.Parallel()
		s, b := setupSensor(t)

		s.start(b.ctx, datetimeRule(t0.Add(10*time.Second)), "test")
		b.waitTimers(t, 1)
		b.clock.Advance(10 * time.Second)
		ev := b.nextEvent(t)
		require.Equal(t, formatTime(t0.Add(10*time.Second)), ev.Payload["scheduled_at"])
		require.Equal(t, formatTime(t0.Add(10*time.Second)), ev.Payload["fired_at"])
		require.Eventually(t, func() bool {
			return b.clock.waiting() == 0 && s.timers[1] != nil && isClosed(s.timers[1].done)
		}, 5*time.Second, time.Millisecond, "the timer ends after its one firing")
		b.clock.Advance(time.Hour)
		b.noEvent(t)
	})

	t.Run("just past fires at once", func(t *testing.T) {
		t.Parallel()
		s, b := setupSensor(t)

		s.start(b.ctx, datetimeRule(t0.Add(-30*time.Second)), "test")
		ev := b.nextEvent(t)
		require.Equal(t, formatTime(t0.Add(-30*time.Second)), ev.Payload["scheduled_at"])
		require.Equal(t, formatTime(t0), ev.Payload["fired_at"])
	})

	t.Run("long past is skipped", func(t *testing.T) {
		t.Parallel()
		s, b := setupSensor(t)

		s.start(b.ctx, datetimeRule(t0.Add(-2*time.Minute)), "test")
		b.noEvent(t)
		require.Empty(t, s.timers)
		require.Contains(t, b.stderr.String(), `level=INFO msg="rule not scheduled" rule=test.once id=1 trigger=core.datetimetimer error="fire_at 2025-06-01T09:58:00Z is 2m0s in the past`)
	})
}

func TestSensorBadConfigKeepsOthers(t *testing.T) {
	t.Parallel()
	s, b := setupSensor(t)

	s.start(b.ctx, intervalRule(1, 1), "test")
	s.start(b.ctx, rule{ID: 2, Ref: "test.bad_cron", TriggerRef: triggerCron,
		Config: json.RawMessage(`{"expression": "every tuesday"}`)}, "test")
	s.start(b.ctx, rule{ID: 3, Ref: "test.webhook", TriggerRef: "core.webhook"}, "test")
	s.start(b.ctx, rule{ID: 4, Ref: "test.bad_tz", TriggerRef: triggerCron,
		Config: json.RawMessage(`{"expression": "* * * * *", "timezone": "Nowhere/Land"}`)}, "test")

	require.Len(t, s.timers, 1)
	b.waitTimers(t, 1)
	b.clock.Advance(time.Second)
	require.Equal(t, int64(1), b.nextEvent(t).TriggerInstanceID)

	stderr := b.stderr.String()
	require.Contains(t, stderr, `level=ERROR msg="rule not scheduled" rule=test.bad_cron id=2 trigger=core.crontimer error="expression \"every tuesday\": `)
	require.Contains(t, stderr, `level=ERROR msg="rule not scheduled" rule=test.webhook id=3 trigger=core.webhook error="trigger_ref \"core.webhook\" is not served by this sensor`)
	require.Contains(t, stderr, `level=ERROR msg="rule not scheduled" rule=test.bad_tz id=4 trigger=core.crontimer error="timezone \"Nowhere/Land\" is not an IANA zone name`)
}

func TestSensorReplaceWithBadConfigStopsTimer(t *testing.T) {
	t.Parallel()
	s, b := setupSensor(t)

	s.start(b.ctx, intervalRule(1, 1), "test")
	b.waitTimers(t, 1)
	s.handleLine(b.ctx, []byte(`{"event_type": "rule.enabled", "rule": {"id": 1, "ref": "test.interval",
		"trigger_ref": "core.intervaltimer", "config": {"unit": "seconds", "interval": 0}}}`))
	require.Empty(t, s.timers, "a rule whose new config is bad keeps no timer from its old one")
	require.Equal(t, 0, b.clock.waiting())
	require.Contains(t, b.stderr.String(), `error="interval must be > 0, got 0"`)
}

func TestSensorStdoutFailure(t *testing.T) {
	t.Parallel()
	s, b := setupSensor(t)
	s.out = &eventWriter{w: errWriter{}}

	s.start(b.ctx, intervalRule(1, 1), "test")
	b.waitTimers(t, 1)
	b.clock.Advance(time.Second)
	select {
	case err := <-b.failed:
		require.ErrorContains(t, err, "error writing event to stdout: broken pipe")
	case <-time.After(5 * time.Second):
		require.FailNow(t, "fail was not called")
	}
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}
