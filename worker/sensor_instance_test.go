package worker

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestSensorCrashLoopBackoff: a sensor that exits at once is restarted
// with a doubling, capped delay, its state says why, and the supervisor's
// other sensor is unaffected.
func TestSensorCrashLoopBackoff(t *testing.T) {
	t.Parallel()
	b := sensorSetup(t, map[string]string{
		"sensors/crasher.yaml": sensorYAML("crasher", "crasher.sh", "s.tick"),
		"sensors/crasher.sh": `#!/bin/sh
date +%s.%N >> @DATA@/crashes
echo "boom: cannot reach the thing" >&2
exit 3
`,
		"sensors/steady.yaml": sensorYAML("steady", "steady.sh", "s.other"),
		"sensors/steady.sh":   emitterSensor,
		"rules/r.yaml":        ruleYAML("r", "s.tick", true, "action_params: {message: never}\n"),
		"rules/o.yaml":        ruleYAML("o", "s.other", true, "action_params: {message: \"other {{ event.payload.k }}\"}\n"),
	})
	require.NoError(t, os.WriteFile(filepath.Join(b.data, "events.jsonl"), []byte(`{"trigger_ref": "s.other", "payload": {"k": "v"}}`+"\n"), 0o644))
	b.supervisor(t, "replica", fastTiming)

	eventually(t, 20*time.Second, func() bool { return len(b.lines(t, "crashes")) >= 6 }, "six starts of the crashing sensor")
	var starts []float64
	for _, l := range b.lines(t, "crashes") {
		f, err := strconv.ParseFloat(l, 64)
		require.NoError(t, err)
		starts = append(starts, f)
	}
	var gaps []string
	for i := 1; i < len(starts); i++ {
		gap := time.Duration((starts[i] - starts[i-1]) * float64(time.Second))
		gaps = append(gaps, gap.Round(10*time.Millisecond).String())
		want := min(fastTiming.MinBackoff<<(i-1), fastTiming.MaxBackoff)
		require.GreaterOrEqual(t, gap, want-20*time.Millisecond, "restart %d came early", i)
		require.Less(t, gap, want+2*time.Second, "restart %d came late", i)
	}
	t.Logf("restart gaps: %v (backoff %v doubling to %v)", gaps, fastTiming.MinBackoff, fastTiming.MaxBackoff)

	st := b.state(t, "s.crasher")
	require.Equal(t, "replica", st.Worker)
	require.Contains(t, []string{"backoff", "running"}, st.Status)
	require.GreaterOrEqual(t, st.Restarts, 4)
	require.NotNil(t, st.LastError)
	require.Equal(t, "exited with code 3: boom: cannot reach the thing", *st.LastError)
	require.True(t, b.logged("sensor failed; restarting after backoff", "sensor", "s.crasher", "err", "exited with code 3"))

	steady := b.state(t, "s.steady")
	require.Equal(t, "running", steady.Status)
	require.Zero(t, steady.Restarts)
	require.Len(t, b.lines(t, "starts"), 1)
	eventually(t, 5*time.Second, func() bool { return len(b.executions(t, "s.o")) == 1 }, "the steady sensor's event fires")
	require.Equal(t, "other v", b.executions(t, "s.o")[0].Parameters["message"])
}

// A sensor whose last stderr line holds a NUL still has its state
// recorded: PostgreSQL text refuses NUL, and a refused write would leave
// attune.sensor_state saying running.
func TestSensorStateWithNULInStderr(t *testing.T) {
	t.Parallel()
	b := sensorSetup(t, map[string]string{
		"sensors/crasher.yaml": sensorYAML("crasher", "crasher.sh", "s.tick"),
		"sensors/crasher.sh": `#!/bin/sh
printf 'bad \000 byte\n' >&2
exit 3
`,
		"rules/r.yaml": ruleYAML("r", "s.tick", true, "action_params: {message: never}\n"),
	})
	b.supervisor(t, "replica", fastTiming)
	eventually(t, 20*time.Second, func() bool {
		return b.state(t, "s.crasher").Restarts >= 2
	}, "restarts recorded")
	st := b.state(t, "s.crasher")
	require.NotNil(t, st.LastError)
	require.Equal(t, "exited with code 3: bad \uFFFD byte", *st.LastError)
	require.False(t, b.logged("error recording sensor state"))
}
