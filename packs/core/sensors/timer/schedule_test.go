package main

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// t0 is a fixed start for schedule tests.
var t0 = time.Date(2025, 6, 1, 10, 0, 0, 0, time.UTC)

func mustParseCron(t *testing.T, expr, tz string) cronSchedule {
	t.Helper()
	spec, err := cronParser.Parse(expr)
	require.NoError(t, err)
	loc, err := time.LoadLocation(tz)
	require.NoError(t, err)
	return cronSchedule{spec: spec, loc: loc}
}

func TestIntervalScheduleNext(t *testing.T) {
	t.Parallel()

	s := intervalSchedule{start: t0, every: time.Second}
	for _, tt := range []struct {
		name  string
		after time.Duration // from t0
		want  time.Duration // from t0
	}{
		{"before start", -5 * time.Second, time.Second},
		{"at start", 0, time.Second},
		{"between slots", 500 * time.Millisecond, time.Second},
		{"exactly on a slot", time.Second, 2 * time.Second},
		{"just after a slot", time.Second + time.Nanosecond, 2 * time.Second},
		{"several slots late", 3500 * time.Millisecond, 4 * time.Second},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, ok := s.next(t0.Add(tt.after))
			require.True(t, ok)
			require.Equal(t, t0.Add(tt.want), got)
		})
	}
}

// TestIntervalScheduleNoDrift walks a schedule the way the sensor does, each
// firing a little late, and checks slot k stays exactly at start + k*every.
func TestIntervalScheduleNoDrift(t *testing.T) {
	t.Parallel()

	start := time.Now() // with a monotonic reading, as in the sensor
	every := 7 * time.Second
	s := intervalSchedule{start: start, every: every}

	at, ok := s.next(start)
	require.True(t, ok)
	for k := 1; k <= 100_000; k++ {
		require.Equal(t, start.Add(time.Duration(k)*every), at, "slot %d", k)
		fired := at.Add(3 * time.Millisecond) // a late wake-up every time
		at, ok = s.next(fired)
		require.True(t, ok)
	}
}

func TestCronScheduleFiveFields(t *testing.T) {
	t.Parallel()

	s := mustParseCron(t, "*/15 * * * *", "UTC")
	got, ok := s.next(t0.Add(7*time.Minute + 12*time.Second))
	require.True(t, ok)
	require.Equal(t, t0.Add(15*time.Minute), got)

	got, ok = s.next(got)
	require.True(t, ok)
	require.Equal(t, t0.Add(30*time.Minute), got, "a fire time is strictly after its argument")
}

func TestCronScheduleSixFields(t *testing.T) {
	t.Parallel()

	s := mustParseCron(t, "*/10 * * * * *", "UTC")
	got, ok := s.next(t0.Add(3500 * time.Millisecond))
	require.True(t, ok)
	require.Equal(t, t0.Add(10*time.Second), got)

	got, ok = s.next(got)
	require.True(t, ok)
	require.Equal(t, t0.Add(20*time.Second), got)
}

func TestCronScheduleDescriptor(t *testing.T) {
	t.Parallel()

	s := mustParseCron(t, "@hourly", "UTC")
	got, ok := s.next(t0.Add(time.Minute))
	require.True(t, ok)
	require.Equal(t, t0.Add(time.Hour), got)
}

// TestCronScheduleTimezone checks 09:00 in New York across the start of
// daylight saving time (2025-03-09): 14:00 UTC before, 13:00 UTC after.
func TestCronScheduleTimezone(t *testing.T) {
	t.Parallel()

	s := mustParseCron(t, "0 9 * * *", "America/New_York")
	got, ok := s.next(time.Date(2025, 3, 7, 15, 0, 0, 0, time.UTC))
	require.True(t, ok)
	require.True(t, time.Date(2025, 3, 8, 14, 0, 0, 0, time.UTC).Equal(got), "got %s", got)

	got, ok = s.next(got)
	require.True(t, ok)
	require.True(t, time.Date(2025, 3, 9, 13, 0, 0, 0, time.UTC).Equal(got), "got %s", got)
}

func TestCronScheduleNever(t *testing.T) {
	t.Parallel()

	_, ok := mustParseCron(t, "0 0 30 2 *", "UTC").next(t0) // 30 February
	require.False(t, ok)
}

func TestOnceSchedule(t *testing.T) {
	t.Parallel()

	s := onceSchedule{at: t0}

	got, ok := s.next(t0.Add(-time.Hour))
	require.True(t, ok)
	require.Equal(t, t0, got)

	_, ok = s.next(t0)
	require.False(t, ok, "fires once: nothing after its own time")

	_, ok = s.next(t0.Add(time.Second))
	require.False(t, ok)
}
