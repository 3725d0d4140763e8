package main

import (
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"testing/iotest"

	"github.com/stretchr/testify/require"
)

func TestLoadConfig(t *testing.T) {
	t.Parallel()

	getenv := func(env map[string]string) func(string) string {
		return func(k string) string { return env[k] }
	}

	cfg, err := loadConfig(getenv(nil))
	require.NoError(t, err)
	require.Equal(t, config{SensorRef: "core.timer_sensor"}, cfg)

	cfg, err = loadConfig(getenv(map[string]string{
		"ATTUNE_SENSOR_REF":      "mypack.timer",
		"ATTUNE_SENSOR_TRIGGERS": ` [{"id": 1}, {"id": "bad"}] `,
	}))
	require.NoError(t, err)
	require.Equal(t, "mypack.timer", cfg.SensorRef)
	require.Len(t, cfg.Rules, 2, "entries are decoded one by one later")

	for value, want := range map[string]bool{"": false, "0": false, "false": false, "1": true, "true": true, "yes": true} {
		cfg, err := loadConfig(getenv(map[string]string{"ATTUNE_SENSOR_DEBUG": value}))
		require.NoError(t, err)
		require.Equal(t, want, cfg.Debug, "ATTUNE_SENSOR_DEBUG=%q", value)
	}

	_, err = loadConfig(getenv(map[string]string{"ATTUNE_SENSOR_TRIGGERS": `[{"id": 1}`}))
	require.ErrorContains(t, err, "ATTUNE_SENSOR_TRIGGERS must be a JSON list")
}

func TestDecodeRule(t *testing.T) {
	t.Parallel()

	r, err := decodeRule([]byte(`{"id": 3, "ref": "p.r", "trigger_ref": "core.crontimer", "config": {"expression": "@daily"}}`))
	require.NoError(t, err)
	require.Equal(t, int64(3), r.ID)
	require.JSONEq(t, `{"expression": "@daily"}`, string(r.Config))

	_, err = decodeRule([]byte(`{"ref": "p.r"}`))
	require.ErrorContains(t, err, `rule "p.r": id must be a positive integer, got 0`)
	_, err = decodeRule([]byte(`{"id": "3"}`))
	require.Error(t, err)
	_, err = decodeRule(nil)
	require.Error(t, err)
}

func TestReadLines(t *testing.T) {
	t.Parallel()

	long := strings.Repeat("x", maxLineBytes+10)
	input := "one\r\ntwo\n\n" + long + "\nthree\n" + long + "\nlast without newline"

	var got []string
	err := readLines(iotest.OneByteReader(strings.NewReader(input)), func(line []byte, err error) bool {
		if err != nil {
			got = append(got, "error: "+err.Error())
		} else {
			got = append(got, string(line))
		}
		return true
	})
	require.NoError(t, err)
	require.Equal(t, []string{
		"one", "two", "",
		"error: line longer than 1048576 bytes",
		"three",
		"error: line longer than 1048576 bytes",
		"last without newline",
	}, got)

	err = readLines(iotest.ErrReader(errors.New("boom")), func([]byte, error) bool { return true })
	require.EqualError(t, err, "boom")

	n := 0
	err = readLines(strings.NewReader("a\nb\nc\n"), func([]byte, error) bool { n++; return n < 2 })
	require.NoError(t, err)
	require.Equal(t, 2, n, "stops when fn returns false")
}

// writeRecorder records each Write call separately.
type writeRecorder struct {
	mu     sync.Mutex
	writes []string
}

func (w *writeRecorder) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.writes = append(w.writes, string(p))
	return len(p), nil
}

func TestEventWriterOneWritePerLine(t *testing.T) {
	t.Parallel()

	rec := &writeRecorder{}
	w := &eventWriter{w: rec}
	errs := make(chan error, 1000)
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Go(func() {
			for range 20 {
				errs <- w.write(event{TriggerRef: "core.intervaltimer",
					Payload: map[string]any{"big": strings.Repeat("y", 10_000)}, TriggerInstanceID: int64(i)})
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}

	require.Len(t, rec.writes, 1000)
	for _, line := range rec.writes {
		require.True(t, strings.HasSuffix(line, "\n"))
		require.Equal(t, 1, strings.Count(line, "\n"))
		require.True(t, json.Valid([]byte(line)))
	}

	w = &eventWriter{w: errWriter{}}
	require.ErrorContains(t, w.write(event{}), "broken pipe")
	require.ErrorContains(t, w.write(event{}), "broken pipe", "a broken stdout stays broken")
}
