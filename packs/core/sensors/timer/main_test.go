package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// syncBuffer is a bytes.Buffer safe for a writer and a reader at once.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// gotEvent is one stdout line as a reader of the protocol sees it.
type gotEvent struct {
	TriggerRef        string         `json:"trigger_ref"`
	Payload           map[string]any `json:"payload"`
	TriggerInstanceID int64          `json:"trigger_instance_id"`
	received          time.Time
}

// eventLog collects the events read from a stdout.
type eventLog struct {
	mu     sync.Mutex
	events []gotEvent
	errs   []error
}

// collect reads r as JSON lines until it ends; run it in a goroutine.
func (l *eventLog) collect(r io.Reader) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		var ev gotEvent
		err := json.Unmarshal(sc.Bytes(), &ev)
		ev.received = time.Now()
		l.mu.Lock()
		if err != nil {
			l.errs = append(l.errs, fmt.Errorf("stdout line %q: %w", sc.Text(), err))
		} else {
			l.events = append(l.events, ev)
		}
		l.mu.Unlock()
	}
}

func (l *eventLog) snapshot() ([]gotEvent, []error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]gotEvent(nil), l.events...), append([]error(nil), l.errs...)
}

// waitFor waits until cond holds for the events so far and returns them.
func (l *eventLog) waitFor(t *testing.T, what string, cond func([]gotEvent) bool) []gotEvent {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		evs, errs := l.snapshot()
		require.Empty(t, errs)
		if cond(evs) {
			return evs
		}
		if time.Now().After(deadline) {
			require.FailNow(t, "timed out waiting for "+what, "events: %+v", evs)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// indexOf returns the index of the first event for rule id at or after from,
// or -1.
func indexOf(evs []gotEvent, id int64, from int) int {
	for i := from; i < len(evs); i++ {
		if evs[i].TriggerInstanceID == id {
			return i
		}
	}
	return -1
}

type runBundle struct {
	stdin  *io.PipeWriter
	events *eventLog
	stderr *syncBuffer
	cancel context.CancelFunc
	done   chan struct{} // closed when run returns
	err    error         // run's result, once done is closed
}

// startRun runs run() in-process with pipes for stdin and stdout.
func startRun(t *testing.T, env map[string]string) *runBundle {
	t.Helper()

	stdinR, stdinW := io.Pipe()
	stdoutR, stdoutW := io.Pipe()
	b := &runBundle{
		stdin:  stdinW,
		events: &eventLog{},
		stderr: &syncBuffer{},
		done:   make(chan struct{}),
	}
	ctx, cancel := context.WithCancel(context.Background())
	b.cancel = cancel

	collected := make(chan struct{})
	go func() {
		defer close(collected)
		b.events.collect(stdoutR)
	}()
	go func() {
		defer close(b.done)
		b.err = run(ctx, func(k string) string { return env[k] }, stdinR, stdoutW, b.stderr)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-b.done:
		case <-time.After(5 * time.Second):
			t.Error("run did not return within 5s of cancel")
		}
		stdinR.Close() // ends the goroutine reading stdin
		stdoutW.Close()
		<-collected
	})
	return b
}

func (b *runBundle) send(t *testing.T, line string) {
	t.Helper()
	_, err := io.WriteString(b.stdin, line+"\n")
	require.NoError(t, err)
}

func datetimeNow() string {
	return `{"fire_at": "` + time.Now().UTC().Format(time.RFC3339) + `"}`
}

func TestRunProtocol(t *testing.T) {
	t.Parallel()

	b := startRun(t, map[string]string{
		"ATTUNE_SENSOR_REF": "core.timer_sensor",
		"ATTUNE_SENSOR_TRIGGERS": `[
			{"id": 1, "ref": "test.every_second", "trigger_ref": "core.intervaltimer", "config": {"unit": "seconds", "interval": 1}},
			{"id": 2, "ref": "test.bad_unit", "trigger_ref": "core.intervaltimer", "config": {"unit": "weeks", "interval": 1}},
			{"id": 3, "ref": "test.now", "trigger_ref": "core.datetimetimer", "config": ` + datetimeNow() + `},
			{"id": "seven", "ref": "test.bad_id"}
		]`,
	})

	// A fire_at just past fires at once; the interval within about a second.
	evs := b.events.waitFor(t, "events of rules 1 and 3", func(evs []gotEvent) bool {
		return indexOf(evs, 1, 0) >= 0 && indexOf(evs, 3, 0) >= 0
	})
	ev := evs[indexOf(evs, 1, 0)]
	require.Equal(t, "core.intervaltimer", ev.TriggerRef)
	require.Equal(t, "interval", ev.Payload["type"])
	require.Equal(t, float64(1), ev.Payload["interval_seconds"])
	require.Equal(t, float64(1), ev.Payload["execution_count"])
	require.Equal(t, "core.timer_sensor", ev.Payload["sensor_ref"])
	_, err := time.Parse(time.RFC3339Nano, ev.Payload["fired_at"].(string))
	require.NoError(t, err)
	ev = evs[indexOf(evs, 3, 0)]
	require.Equal(t, "core.datetimetimer", ev.TriggerRef)
	require.Equal(t, "datetime", ev.Payload["type"])

	b.send(t, `this is not json`)
	b.send(t, `{"event_type": "rule.exploded", "rule": {"id": 9, "ref": "test.x"}}`)
	b.send(t, `{"event_type": "rule.created", "rule": {"ref": "test.no_id"}}`)
	b.send(t, ``)
	b.send(t, `{"event_type": "rule.created", "rule": {"id": 4, "ref": "test.created", "trigger_ref": "core.datetimetimer", "config": `+datetimeNow()+`}}`)
	b.events.waitFor(t, "the event of created rule 4", func(evs []gotEvent) bool { return indexOf(evs, 4, 0) >= 0 })

	// Lines apply in order and a stop waits for its timer, so no event of
	// rule 1 may follow rule 5's.
	b.send(t, `{"event_type": "rule.disabled", "rule": {"id": 1, "ref": "test.every_second"}}`)
	b.send(t, `{"event_type": "rule.deleted", "rule": {"id": 3}}`)
	b.send(t, `{"event_type": "rule.deleted", "rule": {"id": 42}}`)
	b.send(t, `{"event_type": "rule.created", "rule": {"id": 5, "ref": "test.marker", "trigger_ref": "core.datetimetimer", "config": `+datetimeNow()+`}}`)
	evs = b.events.waitFor(t, "the event of created rule 5", func(evs []gotEvent) bool { return indexOf(evs, 5, 0) >= 0 })
	marker := indexOf(evs, 5, 0)
	time.Sleep(1300 * time.Millisecond) // more than one interval of rule 1
	evs, _ = b.events.snapshot()
	require.Equal(t, -1, indexOf(evs, 1, marker), "rule 1 fired after it was disabled")

	// Re-enabling restarts the timer: execution_count starts again at 1.
	b.send(t, `{"event_type": "rule.enabled", "rule": {"id": 1, "ref": "test.every_second", "trigger_ref": "core.intervaltimer", "config": {"unit": "seconds", "interval": 1}}}`)
	evs = b.events.waitFor(t, "rule 1 after re-enabling", func(evs []gotEvent) bool { return indexOf(evs, 1, marker) >= 0 })
	require.Equal(t, float64(1), evs[indexOf(evs, 1, marker)].Payload["execution_count"])

	for _, ev := range evs {
		require.NotEqual(t, int64(2), ev.TriggerInstanceID, "the rule with a bad config must not fire")
	}

	stderr := b.stderr.String()
	for _, want := range []string{
		`msg="timer sensor started" sensor_ref=core.timer_sensor rules=4`,
		`msg="skipping bad entry in ATTUNE_SENSOR_TRIGGERS" index=3`,
		`msg="rule not scheduled" rule=test.bad_unit id=2 trigger=core.intervaltimer error="unit \"weeks\" is not one of seconds, minutes, hours, days"`,
		`msg="rule scheduled" rule=test.every_second id=1 trigger=core.intervaltimer schedule="every 1s"`,
		`msg="skipping malformed stdin line"`,
		`msg="skipping stdin line with unknown event_type; want rule.created, rule.enabled, rule.disabled or rule.deleted" event_type=rule.exploded`,
		`msg="skipping stdin line without a usable rule" event_type=rule.created error="rule \"test.no_id\": id must be a positive integer, got 0"`,
		`msg="rule stopped" rule=test.every_second id=1 cause=rule.disabled`,
		`cause=rule.enabled`,
	} {
		require.Contains(t, stderr, want)
	}
	require.NotContains(t, stderr, "level=DEBUG", "debug lines only with ATTUNE_SENSOR_DEBUG")
	for _, line := range strings.Split(strings.TrimSpace(stderr), "\n") {
		require.True(t, strings.HasPrefix(line, "time="), "one log record per line: %q", line)
	}
}

func TestRunKeepsTimersAfterStdinEOF(t *testing.T) {
	t.Parallel()

	b := startRun(t, map[string]string{
		"ATTUNE_SENSOR_DEBUG": "1",
		"ATTUNE_SENSOR_TRIGGERS": `[{"id": 1, "ref": "test.every_second", "trigger_ref": "core.intervaltimer",
			"config": {"unit": "seconds", "interval": 1}}]`,
	})
	require.NoError(t, b.stdin.Close())

	evs := b.events.waitFor(t, "two firings after stdin closed", func(evs []gotEvent) bool { return len(evs) >= 2 })
	require.Equal(t, float64(2), evs[1].Payload["execution_count"])
	require.Equal(t, "core.timer_sensor", evs[1].Payload["sensor_ref"], "ATTUNE_SENSOR_REF defaults to core.timer_sensor")
	require.Contains(t, b.stderr.String(), "stdin closed; no more rule changes will arrive, timers keep running")
	require.Contains(t, b.stderr.String(), `level=DEBUG msg=fired rule=test.every_second id=1 count=1`)

	select {
	case <-b.done:
		require.FailNow(t, "run returned after stdin EOF", "err: %v", b.err)
	default:
	}
}

func TestRunStopsOnCancel(t *testing.T) {
	t.Parallel()

	b := startRun(t, map[string]string{
		"ATTUNE_SENSOR_TRIGGERS": `[{"id": 1, "ref": "test.hourly", "trigger_ref": "core.crontimer", "config": {"expression": "@hourly"}}]`,
	})
	require.Eventually(t, func() bool { return strings.Contains(b.stderr.String(), "rule scheduled") }, 5*time.Second, 5*time.Millisecond)

	start := time.Now()
	b.cancel()
	select {
	case <-b.done:
		require.NoError(t, b.err)
	case <-time.After(5 * time.Second):
		require.FailNow(t, "run did not return after cancel")
	}
	require.Less(t, time.Since(start), time.Second)
	require.Contains(t, b.stderr.String(), "timer sensor stopped")
}

func TestRunBadTriggersEnv(t *testing.T) {
	t.Parallel()

	env := map[string]string{"ATTUNE_SENSOR_TRIGGERS": `{"id": 1}`}
	err := run(context.Background(), func(k string) string { return env[k] }, strings.NewReader(""), io.Discard, io.Discard)
	require.ErrorContains(t, err, "ATTUNE_SENSOR_TRIGGERS must be a JSON list of {id, ref, trigger_ref, config}")
}

// errWriter fails every write, like a stdout whose reader is gone.
type errWriter struct{}

func (errWriter) Write([]byte) (int, error) { return 0, errors.New("broken pipe") }

func TestRunFailsWhenStdoutBreaks(t *testing.T) {
	t.Parallel()

	env := map[string]string{
		"ATTUNE_SENSOR_TRIGGERS": `[{"id": 1, "ref": "test.now", "trigger_ref": "core.datetimetimer", "config": ` + datetimeNow() + `}]`,
	}
	stdinR, stdinW := io.Pipe()
	t.Cleanup(func() { stdinR.Close() })
	defer stdinW.Close()

	done := make(chan error, 1)
	go func() {
		done <- run(context.Background(), func(k string) string { return env[k] }, stdinR, errWriter{}, io.Discard)
	}()
	select {
	case err := <-done:
		require.ErrorContains(t, err, "error writing event to stdout: broken pipe")
	case <-time.After(5 * time.Second):
		require.FailNow(t, "run did not return after stdout broke")
	}
}
