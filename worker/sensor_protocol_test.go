package worker

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestSensorRuleChangesOnStdin checks the environment a sensor starts with
// and the rule changes it is told on stdin; a disabled rule stops firing
// while the others go on, and a sensor left without rules is stopped.
func TestSensorRuleChangesOnStdin(t *testing.T) {
	t.Parallel()
	b := sensorSetup(t, map[string]string{
		"sensors/ticker.yaml": sensorYAML("ticker", "ticker.sh", "s.tick"),
		"sensors/ticker.sh": `#!/bin/sh
env > @DATA@/env
( i=0; while :; do i=$((i+1)); printf '{"trigger_ref": "s.tick", "payload": {"n": %d}}\n' $i; sleep 0.1; done ) &
exec cat >> @DATA@/stdin.log
`,
		"rules/r1.yaml": ruleYAML("r1", "s.tick", true, "trigger_params: {every: 1}\naction_params: {message: \"r1 {{ event.payload.n }}\"}\n"),
		"rules/r2.yaml": ruleYAML("r2", "s.tick", true, "action_params: {message: r2}\n"),
		"rules/r3.yaml": ruleYAML("r3", "s.tick", false, "action_params: {message: r3}\n"),
	})
	b.supervisor(t, "replica", fastTiming)
	st := b.waitState(t, "s.ticker", "replica", "running", 10*time.Second)
	eventually(t, 10*time.Second, func() bool {
		return len(b.executions(t, "s.r1")) > 0 && len(b.executions(t, "s.r2")) > 0
	}, "both rules fire")

	env := map[string]string{}
	for _, kv := range b.lines(t, "env") {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	require.Equal(t, "s.ticker", env["ATTUNE_SENSOR_REF"])
	var triggers []map[string]any
	require.NoError(t, json.Unmarshal([]byte(env["ATTUNE_SENSOR_TRIGGERS"]), &triggers))
	require.Len(t, triggers, 2)
	require.Equal(t, "s.r1", triggers[0]["ref"])
	require.Equal(t, "s.tick", triggers[0]["trigger_ref"])
	require.Equal(t, map[string]any{"every": 1.0}, triggers[0]["config"])
	require.NotZero(t, triggers[0]["id"])
	require.Equal(t, "s.r2", triggers[1]["ref"])
	require.NotEmpty(t, env["TMPDIR"])
	require.Equal(t, "/home/attune-test", env["HOME"])
	for k := range env {
		require.NotContains(t, []string{"ATTUNE_DATABASE_URL", "CANARY_SECRET", "ATTUNE_PACKS_DIR"}, k)
	}

	waitLine := func(want string) {
		t.Helper()
		eventually(t, 10*time.Second, func() bool {
			got, _ := b.ruleLines(t)
			return slices.Contains(got, want)
		}, "sensor never got %q", want)
	}

	// Disabled: r1 stops firing, r2 goes on.
	b.setRule(t, "s.r1", false)
	waitLine("rule.disabled s.r1")
	time.Sleep(300 * time.Millisecond) // an event read before the change may still fire r1
	n1, n2 := len(b.executions(t, "s.r1")), len(b.executions(t, "s.r2"))
	time.Sleep(time.Second)
	require.Len(t, b.executions(t, "s.r1"), n1, "a disabled rule fired")
	require.Greater(t, len(b.executions(t, "s.r2")), n2, "the other rule stopped firing")

	b.setRule(t, "s.r3", true)
	waitLine("rule.enabled s.r3")
	b.exec(t, `INSERT INTO attune.rule (ref, pack_ref, name, trigger_ref, action_ref, action_params)
		VALUES ('s.r4', 's', 'r4', 's.tick', 's.echo', '{"message": "r4"}')`)
	waitLine("rule.created s.r4")
	b.exec(t, "DELETE FROM attune.rule WHERE ref = 's.r2'")
	waitLine("rule.deleted s.r2")
	b.exec(t, `UPDATE attune.rule SET trigger_params = '{"every": 2}' WHERE ref = 's.r3'`)
	eventually(t, 10*time.Second, func() bool { got, _ := b.ruleLines(t); return len(got) == 6 }, "trigger_params change")

	got, full := b.ruleLines(t)
	require.Equal(t, []string{
		"rule.disabled s.r1", "rule.enabled s.r3", "rule.created s.r4", "rule.deleted s.r2",
		"rule.disabled s.r3", "rule.enabled s.r3",
	}, got)
	require.Equal(t, map[string]any{"every": 2.0}, full[5]["rule"].(map[string]any)["config"])
	require.Equal(t, "s.tick", full[0]["rule"].(map[string]any)["trigger_ref"])
	require.Equal(t, st.Pid, b.state(t, "s.ticker").Pid, "rule changes do not restart the sensor")

	// No enabled rule left: the sensor is stopped.
	b.setRule(t, "s.r3", false)
	b.setRule(t, "s.r4", false)
	b.waitState(t, "s.ticker", "replica", "stopped", 10*time.Second)
	require.False(t, alive(*st.Pid))
	require.True(t, b.logged("stopping sensor: no enabled rule on its triggers, or the sensor is disabled", "sensor", "s.ticker"))
}

// TestSensorBadOutput feeds the supervisor garbage, an oversized line, an
// undeclared trigger and a stderr flood: each is logged (the flood at a
// bounded rate) and skipped, and the good events around them still fire.
func TestSensorBadOutput(t *testing.T) {
	t.Parallel()
	b := sensorSetup(t, map[string]string{
		"sensors/noisy.yaml": sensorYAML("noisy", "noisy.sh", "s.tick"),
		"sensors/noisy.sh": `#!/bin/sh
echo 'this is not json'
echo '{"trigger_ref": "s.other", "payload": {}}'
echo '{"payload": {}}'
echo '{"trigger_ref": "s.tick", "payload": [1, 2]}'
head -c 3000000 /dev/zero | tr '\0' x; echo
echo '{"trigger_ref": "s.tick", "payload": {"n": 1}}'
head -c 100000 /dev/zero | tr '\0' y >&2; echo >&2
i=0; while [ $i -lt 3000 ]; do echo "noise $i" >&2; i=$((i+1)); done
sleep 0.5
echo "after the flood" >&2
printf '\377\376 not utf-8\n' >&2
echo '{"trigger_ref": "s.tick", "payload": {"n": 2}}'
exec cat > /dev/null
`,
		"rules/r.yaml": ruleYAML("r", "s.tick", true, "action_params: {message: \"n={{ event.payload.n }}\"}\n"),
	})
	b.supervisor(t, "replica", fastTiming)
	eventually(t, 15*time.Second, func() bool { return len(b.executions(t, "s.r")) == 2 }, "the two good events fire")
	eventually(t, 5*time.Second, func() bool { return strings.Contains(b.logs.String(), "not utf-8") }, "the last stderr line is logged")

	var msgs []string
	require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT array_agg(payload->>'n' ORDER BY id) FROM attune.event").Scan(&msgs))
	require.Equal(t, []string{"1", "2"}, msgs, "only the good events are stored")
	for i, e := range b.executions(t, "s.r") {
		require.Equal(t, fmt.Sprintf("n=%d", i+1), e.Parameters["message"])
	}

	skipped := "skipping sensor output line"
	for _, want := range []string{
		"not a JSON object",
		`trigger "s.other" is not one of sensor s.noisy's trigger_types [s.tick]`,
		"trigger_ref is missing",
		"payload must be a JSON object, got [1, 2]",
	} {
		require.True(t, b.logged(skipped, "sensor", "s.noisy", "err", want), "no log of %q", want)
	}
	require.True(t, b.logged(skipped+" over the size limit", "sensor", "s.noisy", "limit_bytes", "1.048576e+06"))
	require.True(t, b.logged("sensor stderr", "sensor", "s.noisy", "line", "yyyy", "cut_at_bytes", "4096"))
	require.True(t, b.logged("sensor stderr", "line", "after the flood", "suppressed", ""))
	require.True(t, b.logged("sensor stderr", "line", "\uFFFD not utf-8"))
	noise := b.countLogged("sensor stderr", "line", "noise ")
	require.Greater(t, noise, 50)
	require.Less(t, noise, 500, "stderr is rate limited")
	require.Equal(t, "running", b.state(t, "s.noisy").Status)
	require.Zero(t, b.state(t, "s.noisy").Restarts)
}

// TestSensorScanLines checks the bounded line reader both streams use.
func TestSensorScanLines(t *testing.T) {
	t.Parallel()
	in := "short\r\n" + strings.Repeat("x", 40) + "\nlast"
	var got []string
	require.NoError(t, scanLines(strings.NewReader(in), 16, func(line []byte, over bool) {
		got = append(got, fmt.Sprintf("%s/%t", line, over))
	}))
	require.Equal(t, []string{"short/false", strings.Repeat("x", 16) + "/true", "last/false"}, got)
}

func TestSensorLogArgs(t *testing.T) {
	t.Parallel()
	group := func(args []any) map[string]string {
		require.Len(t, args, 1)
		a := args[0].(slog.Attr)
		require.Equal(t, "sensor_log", a.Key)
		out := map[string]string{}
		for _, f := range a.Value.Group() {
			out[f.Key] = fmt.Sprint(f.Value.Any())
		}
		return out
	}
	require.Equal(t, map[string]string{"time": "2026-12-01T10:20:17Z", "level": "INFO", "msg": "timer sensor started", "sensor_ref": "core.timer_sensor", "rules": "4"},
		group(sensorLogArgs(`time=2026-12-01T10:20:17Z level=INFO msg="timer sensor started" sensor_ref=core.timer_sensor rules=4`)))
	require.Equal(t, map[string]string{"msg": `a "quoted" one`, "error": "x y"},
		group(sensorLogArgs(`msg="a \"quoted\" one" error="x y"`)))
	require.Equal(t, map[string]string{"level": "ERROR", "msg": "boom", "n": "3"},
		group(sensorLogArgs(`{"level":"ERROR","msg":"boom","n":3}`)))
	for _, plain := range []string{"just some text", "a=b but no msg", `msg="unterminated`, "msg=x=y z", "{not json", `msg="x"y`} {
		require.Equal(t, []any{"line", plain}, sensorLogArgs(plain), plain)
	}
}
