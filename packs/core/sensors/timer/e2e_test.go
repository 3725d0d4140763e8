package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// buildSensor builds the sensor binary into a temporary directory, the way
// SPEC §7 says to build it.
func buildSensor(t *testing.T) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command on PATH to build the sensor")
	}
	bin := filepath.Join(t.TempDir(), "attune-core-timer-sensor")
	out, err := exec.Command(goBin, "build", "-o", bin, ".").CombinedOutput()
	require.NoError(t, err, "go build: %s", out)
	return bin
}

type sensorProcess struct {
	cmd     *exec.Cmd
	started time.Time
	events  chan gotEvent // stdout, decoded; closed at EOF
	stderr  *syncBuffer
	exited  chan struct{} // closed once cmd.Wait returns
	waitErr error
}

// startSensor runs the binary with one 1-second interval rule and stdin at
// EOF from the start (/dev/null), as a sensor whose parent sends no changes.
func startSensor(t *testing.T, bin string) *sensorProcess {
	t.Helper()
	cmd := exec.Command(bin)
	cmd.Env = []string{
		"ATTUNE_SENSOR_REF=core.timer_sensor",
		`ATTUNE_SENSOR_TRIGGERS=[{"id": 11, "ref": "core.every_second", "trigger_ref": "core.intervaltimer", "config": {"unit": "seconds", "interval": 1}}]`,
	}
	p := &sensorProcess{cmd: cmd, events: make(chan gotEvent, 10_000), stderr: &syncBuffer{}, exited: make(chan struct{})}
	cmd.Stderr = p.stderr
	stdoutR, stdoutW, err := os.Pipe()
	require.NoError(t, err)
	cmd.Stdout = stdoutW // the child's own end: no copying goroutine in between

	p.started = time.Now()
	err = cmd.Start()
	stdoutW.Close()
	if err != nil {
		stdoutR.Close()
		require.NoError(t, err)
	}
	go func() {
		defer close(p.exited)
		p.waitErr = cmd.Wait()
	}()
	go func() {
		defer close(p.events)
		sc := bufio.NewScanner(stdoutR)
		for sc.Scan() {
			var ev gotEvent
			if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
				ev.TriggerRef = fmt.Sprintf("malformed line %q: %s", sc.Text(), err)
			}
			ev.received = time.Now()
			p.events <- ev
		}
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.exited
		for range p.events { // until EOF
		}
		stdoutR.Close()
	})
	return p
}

func (p *sensorProcess) next(t *testing.T) gotEvent {
	t.Helper()
	select {
	case ev, ok := <-p.events:
		require.True(t, ok, "stdout closed; stderr:\n%s", p.stderr.String())
		return ev
	case <-time.After(10 * time.Second):
		require.FailNow(t, "no event within 10s", "stderr:\n%s", p.stderr.String())
		return gotEvent{}
	}
}

// terminate sends SIGTERM and waits for the exit.
func (p *sensorProcess) terminate(t *testing.T) (time.Duration, error) {
	t.Helper()
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	start := time.Now()
	select {
	case <-p.exited:
		return time.Since(start), p.waitErr
	case <-time.After(10 * time.Second):
		require.FailNow(t, "sensor did not exit within 10s of SIGTERM")
		return 0, nil
	}
}

var firstFireRE = regexp.MustCompile(`msg="rule scheduled" rule=core.every_second id=11 .*first_fire=(\S+)`)

// firstFire reads the first fire time the sensor logged at start.
func (p *sensorProcess) firstFire(t *testing.T) time.Time {
	t.Helper()
	m := firstFireRE.FindStringSubmatch(p.stderr.String())
	require.NotNil(t, m, "stderr:\n%s", p.stderr.String())
	first, err := time.Parse(time.RFC3339Nano, m[1])
	require.NoError(t, err)
	return first
}

func firedAt(t *testing.T, ev gotEvent) time.Time {
	t.Helper()
	s, ok := ev.Payload["fired_at"].(string)
	require.True(t, ok, "payload %v", ev.Payload)
	at, err := time.Parse(time.RFC3339Nano, s)
	require.NoError(t, err)
	return at
}

func TestBinaryEndToEnd(t *testing.T) {
	t.Parallel()
	p := startSensor(t, buildSensor(t))

	var fired []time.Time
	for k := 1; k <= 4; k++ {
		ev := p.next(t)
		require.Equal(t, "core.intervaltimer", ev.TriggerRef)
		require.Equal(t, int64(11), ev.TriggerInstanceID)
		require.Equal(t, "interval", ev.Payload["type"])
		require.Equal(t, float64(1), ev.Payload["interval_seconds"])
		require.Equal(t, float64(k), ev.Payload["execution_count"])
		require.Equal(t, "core.timer_sensor", ev.Payload["sensor_ref"])
		fired = append(fired, firedAt(t, ev))
	}

	// Slot k is due at first + (k-1)s. Each firing may be late by scheduling
	// noise, but lateness must not accumulate.
	first := p.firstFire(t)
	require.WithinDuration(t, p.started.Add(time.Second), first, 2*time.Second)
	for k, at := range fired {
		ideal := first.Add(time.Duration(k) * time.Second)
		require.False(t, at.Before(ideal.Add(-10*time.Millisecond)), "firing %d at %s, before its slot %s", k+1, at, ideal)
		require.WithinDuration(t, ideal, at, 300*time.Millisecond, "firing %d", k+1)
		if k > 0 {
			gap := at.Sub(fired[k-1])
			require.True(t, gap >= 500*time.Millisecond && gap <= 1500*time.Millisecond, "gap %d: %s", k, gap)
		}
	}

	took, err := p.terminate(t)
	require.NoError(t, err, "exit after SIGTERM; stderr:\n%s", p.stderr.String())
	require.Less(t, took, 3*time.Second)
	require.Contains(t, p.stderr.String(), "stdin closed; no more rule changes will arrive, timers keep running")
	require.Contains(t, p.stderr.String(), "timer sensor stopped")
}

// TestMeasureJitter measures how far a 1 s interval's firings land from their
// ideal times start + k·1s. It runs only when asked, for the given seconds:
//
//	ATTUNE_TIMER_JITTER_SECONDS=20 go test -run TestMeasureJitter -v ./packs/core/sensors/timer/
func TestMeasureJitter(t *testing.T) {
	t.Parallel()
	seconds, _ := strconv.Atoi(os.Getenv("ATTUNE_TIMER_JITTER_SECONDS"))
	if seconds <= 0 {
		t.Skip("set ATTUNE_TIMER_JITTER_SECONDS to measure")
	}
	p := startSensor(t, buildSensor(t))

	var sum, worst, sumRecv, worstRecv time.Duration
	var first time.Time
	for k := range seconds {
		ev := p.next(t)
		if k == 0 {
			first = p.firstFire(t)
		}
		ideal := first.Add(time.Duration(k) * time.Second)
		off := firedAt(t, ev).Sub(ideal)
		recv := ev.received.Sub(ideal)
		sum += time.Duration(math.Abs(float64(off)))
		worst = max(worst, time.Duration(math.Abs(float64(off))))
		sumRecv += recv
		worstRecv = max(worstRecv, recv)
		t.Logf("firing %2d: fired_at - ideal = %v, received - ideal = %v", k+1, off, recv)
	}
	t.Logf("%d firings: |fired_at - ideal| mean %v, max %v; received by the reader - ideal: mean %v, max %v",
		seconds, sum/time.Duration(seconds), worst, sumRecv/time.Duration(seconds), worstRecv)

	_, err := p.terminate(t)
	require.NoError(t, err)
}
