package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/attune-system/attune/packs"
	"github.com/attune-system/attune/schema/schematest"
)

// sensorBundle is a database with the test pack "s" registered. The pack's
// files may say @DATA@, replaced by a scratch directory where test sensors
// write what they see; files ending in .sh are executable.
type sensorBundle struct {
	ctx  context.Context
	pool *pgxpool.Pool
	base string // packs base directory
	data string
	cfg  Config
	logs *syncBuffer
	log  *slog.Logger
}

// fastTiming keeps supervisor tests short.
var fastTiming = sensorTiming{
	LockRetry:    250 * time.Millisecond,
	Resync:       2 * time.Second,
	MinBackoff:   200 * time.Millisecond,
	MaxBackoff:   800 * time.Millisecond,
	HealthyAfter: 10 * time.Second,
}

// sensorPackFiles are in every test pack: triggers s.tick and s.other and
// the shell action s.echo, which prints its message and the rule and
// trigger that enqueued it.
var sensorPackFiles = map[string]string{
	"pack.yaml":           "ref: s\nlabel: sensor tests\nversion: 1.0.0\n",
	"triggers/tick.yaml":  "name: tick\n",
	"triggers/other.yaml": "name: other\n",
	"actions/echo.yaml": `name: echo
runner_type: shell
entry_point: echo.sh
output_format: text
parameters:
  message: {type: string, required: true}
  n: {type: integer}
`,
	"actions/echo.sh": `#!/bin/sh
printf '%s rule=%s trigger=%s\n' "$ATTUNE_ACTION_MESSAGE" "$ATTUNE_RULE" "$ATTUNE_TRIGGER"
`,
}

// emitterSensor prints @DATA@/events.jsonl as its events, records its
// environment and stdin, and runs until stopped.
const emitterSensor = `#!/bin/sh
env > @DATA@/env
echo "start $$" >> @DATA@/starts
cat @DATA@/events.jsonl 2>/dev/null
exec cat >> @DATA@/stdin.log
`

func sensorYAML(name, entry string, triggers ...string) string {
	return fmt.Sprintf("name: %s\nrunner_type: shell\nentry_point: %s\ntrigger_types: [%s]\n", name, entry, strings.Join(triggers, ", "))
}

func ruleYAML(name, trigger string, enabled bool, extra string) string {
	return fmt.Sprintf("name: %s\ntrigger_ref: %s\naction_ref: s.echo\nenabled: %t\n%s", name, trigger, enabled, extra)
}

func sensorSetup(t *testing.T, files map[string]string) *sensorBundle {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	url := schematest.URL(t)
	pool, err := pgxpool.New(ctx, url)
	require.NoError(t, err)
	t.Cleanup(pool.Close)

	b := &sensorBundle{ctx: ctx, pool: pool, base: t.TempDir(), data: t.TempDir(), logs: &syncBuffer{}}
	b.log = slog.New(slog.NewJSONHandler(b.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	b.cfg, err = LoadConfig([]string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=/home/attune-test",
		"LANG=C.UTF-8",
		"ATTUNE_DATABASE_URL=" + url,
		"ATTUNE_PACKS_DIR=" + b.base,
		"ATTUNE_KILL_GRACE=1s",
		"ATTUNE_WORKER_NAME=sensor-test",
		"CANARY_SECRET=do-not-leak",
	})
	require.NoError(t, err)
	all := map[string]string{}
	for k, v := range sensorPackFiles {
		all[k] = v
	}
	for k, v := range files {
		all[k] = v
	}
	b.register(t, "s", all)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("logs:\n%s", b.logs.String())
		}
	})
	return b
}

// register writes files into pack dir {base}/{pack} and registers it.
func (b *sensorBundle) register(t *testing.T, pack string, files map[string]string) {
	t.Helper()
	dir := filepath.Join(b.base, pack)
	for name, body := range files {
		path := filepath.Join(dir, name)
		require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
		mode := os.FileMode(0o644)
		if strings.HasSuffix(name, ".sh") {
			mode = 0o755
		}
		require.NoError(t, os.WriteFile(path, []byte(strings.ReplaceAll(body, "@DATA@", b.data)), mode))
	}
	p, problems := packs.Load(dir)
	require.False(t, packs.HasErrors(problems), "%v", problems)
	err := packs.RegisterPool(b.ctx, b.pool, []*packs.Pack{p}, problems).Err()
	require.NoError(t, err)
}

// supervisor starts a sensor supervisor named name, stopped when t ends
// (or earlier through the returned stop, which may be called twice).
func (b *sensorBundle) supervisor(t *testing.T, name string, timing sensorTiming) (*sensorSupervisor, func()) {
	t.Helper()
	return b.supervisorOn(t, b.pool, name, timing)
}

// supervisorOn is supervisor with a pool of its own.
func (b *sensorBundle) supervisorOn(t *testing.T, pool *pgxpool.Pool, name string, timing sensorTiming) (*sensorSupervisor, func()) {
	t.Helper()
	cfg := b.cfg
	cfg.WorkerName = name
	s := newSensorSupervisor(cfg, pool, b.log.With("replica", name), DetectRuntimes(os.Getenv("PATH")))
	s.timing = timing
	s.start(b.ctx)
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			s.stop()
		}
	}
	t.Cleanup(stop)
	return s, stop
}

// setRule enables or disables a rule the way `attune rule enable` does.
func (b *sensorBundle) setRule(t *testing.T, ref string, enabled bool) {
	t.Helper()
	b.exec(t, "UPDATE attune.rule SET enabled = $2, updated = now() WHERE ref = $1", ref, enabled)
}

// exec runs sql and notifies the supervisors, in one transaction.
func (b *sensorBundle) exec(t *testing.T, sql string, args ...any) {
	t.Helper()
	err := pgx.BeginFunc(b.ctx, b.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(b.ctx, sql, args...); err != nil {
			return err
		}
		_, err := tx.Exec(b.ctx, "SELECT pg_notify($1, 's')", packs.RuleChannel)
		return err
	})
	require.NoError(t, err)
}

type sensorStateRow struct {
	Worker, Status string
	Pid            *int
	Restarts       int
	LastError      *string
}

func (b *sensorBundle) state(t *testing.T, ref string) sensorStateRow {
	t.Helper()
	var st sensorStateRow
	err := b.pool.QueryRow(b.ctx, "SELECT worker, status, pid, restarts, last_error FROM attune.sensor_state WHERE sensor_ref = $1", ref).
		Scan(&st.Worker, &st.Status, &st.Pid, &st.Restarts, &st.LastError)
	if err == pgx.ErrNoRows {
		return sensorStateRow{}
	}
	require.NoError(t, err)
	return st
}

// waitState waits until sensor ref is status on worker and returns the row.
func (b *sensorBundle) waitState(t *testing.T, ref, worker, status string, within time.Duration) sensorStateRow {
	t.Helper()
	var st sensorStateRow
	eventually(t, within, func() bool {
		st = b.state(t, ref)
		return st.Worker == worker && st.Status == status
	}, "sensor %s is not %s on %s: %+v", ref, status, worker, &st)
	return st
}

type ruleExecution struct {
	ID         int64
	Status     string
	Parameters map[string]any
	EventID    *int64
	Stdout     *string
	CreatedAt  time.Time
	StartedAt  *time.Time
}

func (b *sensorBundle) executions(t *testing.T, rule string) []ruleExecution {
	t.Helper()
	rows, err := b.pool.Query(b.ctx, `SELECT id, status, parameters, event_id, stdout, created_at, started_at
		FROM attune.execution WHERE rule_ref = $1 ORDER BY id`, rule)
	require.NoError(t, err)
	list, err := pgx.CollectRows(rows, pgx.RowToStructByPos[ruleExecution])
	require.NoError(t, err)
	return list
}

func (b *sensorBundle) lines(t *testing.T, file string) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(b.data, file))
	if os.IsNotExist(err) {
		return nil
	}
	require.NoError(t, err)
	if len(data) == 0 {
		return nil
	}
	return strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
}

// ruleLines decodes the rule-change lines a sensor recorded from stdin as
// "event_type rule_ref" pairs, keeping the decoded lines too.
func (b *sensorBundle) ruleLines(t *testing.T) ([]string, []map[string]any) {
	t.Helper()
	var short []string
	var full []map[string]any
	for _, l := range b.lines(t, "stdin.log") {
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(l), &m), "stdin line %q", l)
		short = append(short, fmt.Sprintf("%s %s", m["event_type"], m["rule"].(map[string]any)["ref"]))
		full = append(full, m)
	}
	return short, full
}

func eventually(t *testing.T, within time.Duration, cond func() bool, msg string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			require.FailNowf(t, "timed out", msg, args...)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// logged reports whether a log record has message msg and, for each
// key-value pair in attrs, that attribute (compared as text).
func (b *sensorBundle) logged(msg string, attrs ...string) bool {
	return b.countLogged(msg, attrs...) > 0
}

func (b *sensorBundle) countLogged(msg string, attrs ...string) int {
	n := 0
	for _, line := range strings.Split(b.logs.String(), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) != nil || rec["msg"] != msg {
			continue
		}
		ok := true
		for i := 0; i+1 < len(attrs); i += 2 {
			if !strings.Contains(fmt.Sprint(rec[attrs[i]]), attrs[i+1]) {
				ok = false
			}
		}
		if ok {
			n++
		}
	}
	return n
}

// TestSensorTimerRuleExecutesAction runs the real timer sensor under a
// worker.Server: an interval rule fires a shell action every second, the
// execution knows its rule, trigger and event, and disabling the rule stops
// the sensor.
func TestSensorTimerRuleExecutesAction(t *testing.T) {
	t.Parallel()
	b := sensorSetup(t, nil)
	copyCorePack(t, b)
	b.register(t, "s", map[string]string{
		"rules/every_second.yaml": ruleYAML("every_second", "core.intervaltimer", true, `trigger_params: {unit: seconds, interval: 1}
action_params:
  message: "tick {{ event.payload.execution_count }} of {{ event.payload.sensor_ref }}"
`),
		// Fires hourly: the timer names the rule in trigger_instance_id, so
		// every_second's events must not fire it.
		"rules/hourly.yaml": ruleYAML("hourly", "core.intervaltimer", true, `trigger_params: {unit: hours, interval: 1}
action_params: {message: hourly}
`),
	})

	srv, err := NewServer(b.cfg, b.pool, b.log)
	require.NoError(t, err)
	require.NoError(t, srv.Start(b.ctx))
	t.Cleanup(func() { require.NoError(t, srv.Stop(context.Background())) })

	var done []ruleExecution
	eventually(t, 20*time.Second, func() bool {
		done = nil
		for _, e := range b.executions(t, "s.every_second") {
			if e.Status == "completed" {
				done = append(done, e)
			}
		}
		return len(done) >= 2
	}, "two completed executions of s.every_second")

	for i, e := range done[:2] {
		require.Equal(t, fmt.Sprintf("tick %d of core.timer_sensor rule=s.every_second trigger=core.intervaltimer\n", i+1), *e.Stdout)
		require.NotNil(t, e.EventID)
		var trigger, sensor string
		var payload map[string]any
		require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT trigger_ref, sensor_ref, payload FROM attune.event WHERE id = $1", *e.EventID).
			Scan(&trigger, &sensor, &payload))
		require.Equal(t, "core.intervaltimer", trigger)
		require.Equal(t, "core.timer_sensor", sensor)
		require.Equal(t, "interval", payload["type"])
		require.EqualValues(t, 1, payload["interval_seconds"])
		require.EqualValues(t, i+1, payload["execution_count"])
	}
	require.Empty(t, b.executions(t, "s.hourly"), "trigger_instance_id restricts an event to its rule")
	st := b.waitState(t, "core.timer_sensor", "sensor-test", "running", time.Second)
	require.NotNil(t, st.Pid)

	// Disabling both rules stops the sensor, and nothing fires after.
	b.setRule(t, "s.hourly", false)
	b.setRule(t, "s.every_second", false)
	b.waitState(t, "core.timer_sensor", "sensor-test", "stopped", 10*time.Second)
	require.False(t, alive(*st.Pid), "timer sensor process %d still alive", *st.Pid)
	n := len(b.executions(t, "s.every_second"))
	time.Sleep(1500 * time.Millisecond)
	require.Len(t, b.executions(t, "s.every_second"), n)
}

// copyCorePack registers the core pack's timer sensor and triggers from
// this repository, with the sensor binary built into the test's packs.
func copyCorePack(t *testing.T, b *sensorBundle) {
	t.Helper()
	files := map[string]string{}
	for _, name := range []string{"pack.yaml", "sensors/timer_sensor.yaml", "triggers/intervaltimer.yaml", "triggers/crontimer.yaml", "triggers/datetimetimer.yaml"} {
		data, err := os.ReadFile(filepath.Join("..", "packs", "core", name))
		require.NoError(t, err)
		files[name] = string(data)
	}
	out := filepath.Join(b.base, "core", "sensors", "attune-core-timer-sensor")
	require.NoError(t, os.MkdirAll(filepath.Dir(out), 0o755))
	cmd := exec.Command("go", "build", "-o", out, "./packs/core/sensors/timer")
	cmd.Dir = ".."
	msg, err := cmd.CombinedOutput()
	require.NoError(t, err, "building the timer sensor: %s", msg)
	b.register(t, "core", files)
}

// TestSensorSingleInstanceAndFailover runs two supervisors on one
// database: only one runs the sensor at a time, and the other takes over
// when the holder loses its lock connection, and again when it stops.
func TestSensorSingleInstanceAndFailover(t *testing.T) {
	t.Parallel()
	// The sensor refuses to be one of two: a second concurrent instance
	// would find the directory taken.
	b := sensorSetup(t, map[string]string{
		"sensors/guard.yaml": sensorYAML("guard", "guard.sh", "s.tick"),
		"sensors/guard.sh": `#!/bin/sh
mkdir @DATA@/running 2>/dev/null || echo "two instances at once" >> @DATA@/violations
echo "start $$" >> @DATA@/starts
trap 'rmdir @DATA@/running; exit 0' TERM
while :; do sleep 0.1; done
`,
		"rules/r.yaml": ruleYAML("r", "s.tick", true, "action_params: {message: hi}\n"),
	})
	timing := defaultSensorTiming // failover measured with the real lock retry

	// Replica a dials through a switch the test can turn off: a network
	// partition for new connections.
	var partitioned atomic.Bool
	pcfg, err := pgxpool.ParseConfig(b.cfg.DatabaseURL)
	require.NoError(t, err)
	var dialer net.Dialer
	pcfg.ConnConfig.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		if partitioned.Load() {
			return nil, errors.New("partitioned by the test")
		}
		return dialer.DialContext(ctx, network, addr)
	}
	poolA, err := pgxpool.NewWithConfig(b.ctx, pcfg)
	require.NoError(t, err)
	t.Cleanup(poolA.Close)

	_, stopA := b.supervisorOn(t, poolA, "replica-a", timing)
	b.waitState(t, "s.guard", "replica-a", "running", 10*time.Second)
	_, stopB := b.supervisor(t, "replica-b", timing)
	time.Sleep(timing.LockRetry + time.Second)
	require.Len(t, b.lines(t, "starts"), 1, "only one instance runs")
	require.Equal(t, "replica-a", b.state(t, "s.guard").Worker)

	// Replica a's lock connection dies and it cannot reconnect: it stops
	// its sensor, and b takes over.
	partitioned.Store(true)
	began := time.Now()
	var killed bool
	require.NoError(t, b.pool.QueryRow(b.ctx, `SELECT bool_or(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE datname = current_database() AND application_name = 'attune sensors replica-a'`).Scan(&killed))
	require.True(t, killed)
	b.waitState(t, "s.guard", "replica-b", "running", 15*time.Second)
	eventually(t, 5*time.Second, func() bool { return len(b.lines(t, "starts")) == 2 }, "second start")
	t.Logf("failover after the holder's lock connection died: %v (lock retry %v)", time.Since(began).Round(time.Millisecond), timing.LockRetry)
	require.True(t, b.logged("sensor lock connection failed; this replica runs no sensors until it reconnects", "replica", "replica-a"))

	// The partition heals; a reconnects but b keeps the sensor.
	partitioned.Store(false)
	eventually(t, 10*time.Second, func() bool {
		return b.countLogged("sensor supervisor connected", "replica", "replica-a") == 2
	}, "replica a reconnects")
	time.Sleep(timing.LockRetry + 500*time.Millisecond)
	require.Len(t, b.lines(t, "starts"), 2)

	// Replica b stops: a takes over.
	began = time.Now()
	stopB()
	b.waitState(t, "s.guard", "replica-a", "running", 15*time.Second)
	eventually(t, 5*time.Second, func() bool { return len(b.lines(t, "starts")) == 3 }, "third start")
	t.Logf("failover after the holder stopped: %v", time.Since(began).Round(time.Millisecond))

	stopA()
	require.Equal(t, "stopped", b.state(t, "s.guard").Status)
	require.Nil(t, b.lines(t, "violations"), "two instances ran at once")
	require.NoDirExists(t, filepath.Join(b.data, "running"))
}

// TestSensorTimerJitter measures, end to end, how regularly a 1 s interval
// rule starts its executions. It runs only when asked, for the given
// seconds:
//
//	ATTUNE_SENSOR_JITTER_SECONDS=60 go test -run TestSensorTimerJitter -v ./worker/
func TestSensorTimerJitter(t *testing.T) {
	t.Parallel()
	seconds, _ := strconv.Atoi(os.Getenv("ATTUNE_SENSOR_JITTER_SECONDS"))
	if seconds <= 0 {
		t.Skip("set ATTUNE_SENSOR_JITTER_SECONDS to measure")
	}
	b := sensorSetup(t, nil)
	copyCorePack(t, b)
	b.register(t, "s", map[string]string{
		"rules/tick.yaml": ruleYAML("tick", "core.intervaltimer", true, `trigger_params: {unit: seconds, interval: 1}
action_params: {message: "{{ event.payload.fired_at }}"}
`),
	})
	srv, err := NewServer(b.cfg, b.pool, b.log)
	require.NoError(t, err)
	require.NoError(t, srv.Start(b.ctx))
	t.Cleanup(func() { require.NoError(t, srv.Stop(context.Background())) })

	var list []ruleExecution
	eventually(t, time.Duration(seconds+15)*time.Second, func() bool {
		list = b.executions(t, "s.tick")
		return len(list) >= seconds && list[seconds-1].StartedAt != nil
	}, "%d executions", seconds)
	list = list[:seconds]

	first, err := time.Parse(time.RFC3339Nano, list[0].Parameters["message"].(string))
	require.NoError(t, err)
	var worstFire, sumFire, worstStart, sumStart time.Duration
	for k, e := range list {
		fired, err := time.Parse(time.RFC3339Nano, e.Parameters["message"].(string))
		require.NoError(t, err)
		ideal := first.Add(time.Duration(k) * time.Second)
		off := time.Duration(math.Abs(float64(fired.Sub(ideal))))
		lat := e.StartedAt.Sub(fired)
		worstFire, sumFire = max(worstFire, off), sumFire+off
		worstStart, sumStart = max(worstStart, lat), sumStart+lat
	}
	n := time.Duration(seconds)
	t.Logf("%d firings of a 1 s interval: |fired_at - ideal| mean %v max %v; fired_at → process start mean %v max %v",
		seconds, sumFire/n, worstFire, sumStart/n, worstStart)
}
