package worker

import (
	"encoding/json"
	"testing"

	"github.com/attune-system/attune/jobs"
	"github.com/stretchr/testify/require"
)

func TestEventParse(t *testing.T) {
	t.Parallel()
	types := []string{"s.tick", "s.other"}
	for _, tt := range []struct {
		name, line string
		want       sensorEvent
		err        string
	}{
		{"full", `{"trigger_ref": "s.tick", "payload": {"n": 12345678901234567890, "s": "x"}, "trigger_instance_id": 7}`,
			sensorEvent{TriggerRef: "s.tick", Payload: map[string]any{"n": json.Number("12345678901234567890"), "s": "x"}, RuleID: 7}, ""},
		{"no payload", `{"trigger_ref": "s.other"}`, sensorEvent{TriggerRef: "s.other", Payload: map[string]any{}}, ""},
		{"null payload and id", `{"trigger_ref": "s.tick", "payload": null, "trigger_instance_id": null}`,
			sensorEvent{TriggerRef: "s.tick", Payload: map[string]any{}}, ""},
		{"id as a string", `{"trigger_ref": "s.tick", "trigger_instance_id": "42"}`,
			sensorEvent{TriggerRef: "s.tick", Payload: map[string]any{}, RuleID: 42}, ""},
		{"garbage", `hello`, sensorEvent{}, "not a JSON object"},
		{"a list", `[1]`, sensorEvent{}, "not a JSON object"},
		{"no trigger", `{"payload": {}}`, sensorEvent{}, "trigger_ref is missing"},
		{"undeclared trigger", `{"trigger_ref": "core.intervaltimer"}`, sensorEvent{},
			`trigger "core.intervaltimer" is not one of sensor s.x's trigger_types [s.tick s.other]; declare it in the sensor's YAML`},
		{"payload not an object", `{"trigger_ref": "s.tick", "payload": "x"}`, sensorEvent{}, `payload must be a JSON object, got "x"`},
		{"bad id", `{"trigger_ref": "s.tick", "trigger_instance_id": "r1"}`, sensorEvent{}, "trigger_instance_id must be a rule id"},
		{"negative id", `{"trigger_ref": "s.tick", "trigger_instance_id": -1}`, sensorEvent{}, "trigger_instance_id must be a rule id"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ev, err := parseEvent([]byte(tt.line), "s.x", types)
			if tt.err != "" {
				require.ErrorIs(t, err, errBadEvent)
				require.ErrorContains(t, err, tt.err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, ev)
		})
	}
}

// TestEventRulesFire dispatches events against rules that fire, are
// filtered by their conditions, cannot render their parameters, are
// rejected by their action, or are not the rule the event names. Each event
// is stored, the rules that can fire do, and each skipped rule is logged by
// ref.
func TestEventRulesFire(t *testing.T) {
	t.Parallel()
	b := sensorSetup(t, map[string]string{
		"actions/off.yaml": "name: off\nenabled: false\nrunner_type: shell\nentry_point: echo.sh\nparameters:\n  message: {type: string}\n",
		"rules/all.yaml":   ruleYAML("all", "s.tick", true, "action_params: {message: \"got {{ event.payload.level }} in {{ event.trigger }} for {{ rule.ref }}\"}\n"),
		"rules/errors_only.yaml": ruleYAML("errors_only", "s.tick", true, `conditions:
  - {field: payload.level, operator: equals, value: error}
action_params: {message: "event {{ event.id }}"}
`),
		"rules/missing.yaml":  ruleYAML("missing", "s.tick", true, "action_params: {message: \"{{ event.payload.nope }}\"}\n"),
		"rules/rejected.yaml": ruleYAML("rejected", "s.tick", true, "action_params: {message: x, n: \"{{ event.payload.level }}\"}\n"),
		"rules/uncomparable.yaml": ruleYAML("uncomparable", "s.tick", true, `conditions:
  - {field: event.payload.level, operator: greater_than, value: 5}
action_params: {message: never}
`),
		"rules/big.yaml":      ruleYAML("big", "s.tick", true, "action_params: {message: big, n: \"{{ event.payload.count }}\"}\n"),
		"rules/off.yaml":      "name: off\ntrigger_ref: s.tick\naction_ref: s.off\naction_params: {message: off}\n",
		"rules/disabled.yaml": ruleYAML("disabled", "s.tick", false, "action_params: {message: never}\n"),
		"rules/other.yaml":    ruleYAML("other", "s.other", true, "action_params: {message: never}\n"),
	})
	ruleID := func(ref string) int64 {
		var id int64
		require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT id FROM attune.rule WHERE ref = $1", ref).Scan(&id))
		return id
	}
	dispatch := func(line string) dispatched {
		t.Helper()
		ev, err := parseEvent([]byte(line), "s.sensor", []string{"s.tick", "s.other"})
		require.NoError(t, err)
		d, err := dispatchEvent(b.ctx, b.pool, b.log, nil, "s.sensor", ev)
		require.NoError(t, err)
		var stored int
		require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT count(*) FROM attune.event WHERE id = $1 AND sensor_ref = 's.sensor'", d.EventID).Scan(&stored))
		require.Equal(t, 1, stored, "event stored")
		return d
	}

	// 2^53 + 1: a float64 would round it.
	d := dispatch(`{"trigger_ref": "s.tick", "payload": {"level": "info", "count": 9007199254740993}}`)
	require.Len(t, d.Executions, 2, "all and big fire; %v", d.Skipped)
	require.ElementsMatch(t, []string{
		`s.missing: action_params cannot be rendered: parameter "message": {{ event.payload.nope }}: event.payload has no field "nope"`,
		`s.rejected: action s.echo rejected the parameters: parameter "n" of action s.echo must be integer, got string "info"`,
		`s.uncomparable: conditions cannot be evaluated: condition on event.payload.level: greater_than: cannot order string against integer; compare two numbers or two strings`,
		`s.off: action s.off rejected the parameters: action "s.off" is disabled. Set enabled: true in its YAML (or restore its file, if it was removed from the pack) and run "attune pack register" again.`,
	}, d.Skipped)
	all := b.executions(t, "s.all")
	require.Len(t, all, 1)
	require.Equal(t, "got info in s.tick for s.all", all[0].Parameters["message"])
	require.Equal(t, d.EventID, *all[0].EventID)
	var n string
	require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT parameters->>'n' FROM attune.execution WHERE rule_ref = 's.big'").Scan(&n))
	require.Equal(t, "9007199254740993", n)
	require.Empty(t, b.executions(t, "s.errors_only"), "conditions filter")
	for _, ref := range []string{"s.missing", "s.rejected", "s.uncomparable", "s.off"} {
		require.True(t, b.logged("rule skipped", "rule", ref, "sensor", "s.sensor", "event_id", "1", "reason", " "), "no log for %s", ref)
	}

	// The condition holds now; big's template names a missing field.
	d = dispatch(`{"trigger_ref": "s.tick", "payload": {"level": "error"}}`)
	require.Len(t, d.Executions, 2, "all and errors_only fire; %v", d.Skipped)
	errorsOnly := b.executions(t, "s.errors_only")
	require.Len(t, errorsOnly, 1)
	require.Equal(t, "event "+itoa(d.EventID), errorsOnly[0].Parameters["message"])

	// trigger_instance_id: only that rule may fire.
	d = dispatch(`{"trigger_ref": "s.tick", "payload": {"level": "error"}, "trigger_instance_id": ` + itoa(ruleID("s.errors_only")) + `}`)
	require.Len(t, d.Executions, 1)
	require.Empty(t, d.Skipped)
	require.Len(t, b.executions(t, "s.errors_only"), 2)
	require.Len(t, b.executions(t, "s.all"), 2)

	// A rule on another trigger, or a disabled one, never fires.
	for _, ref := range []string{"s.other", "s.disabled"} {
		d = dispatch(`{"trigger_ref": "s.tick", "payload": {"level": "error"}, "trigger_instance_id": ` + itoa(ruleID(ref)) + `}`)
		require.Empty(t, d.Executions)
		require.Empty(t, d.Skipped)
	}
	require.Empty(t, b.executions(t, "s.other"))
	require.Empty(t, b.executions(t, "s.disabled"))
}

func itoa(n int64) string {
	b, _ := json.Marshal(n)
	return string(b)
}

// TestEventStoresRuleOutcomes: the event row says what each enabled rule on
// its trigger did, so a skipped rule is visible from the CLI and the API,
// not only as a WARN line in one replica's log.
func TestEventStoresRuleOutcomes(t *testing.T) {
	t.Parallel()
	b := sensorSetup(t, map[string]string{
		"rules/fires.yaml": ruleYAML("fires", "s.tick", true, "action_params: {message: hi}\n"),
		"rules/errors_only.yaml": ruleYAML("errors_only", "s.tick", true, `conditions:
  - {field: payload.level, operator: equals, value: error}
action_params: {message: x}
`),
		"rules/missing.yaml": ruleYAML("missing", "s.tick", true, "action_params: {message: \"{{ event.payload.nope }}\"}\n"),
	})
	ev, err := parseEvent([]byte(`{"trigger_ref": "s.tick", "payload": {"level": "info"}}`), "s.sensor", []string{"s.tick"})
	require.NoError(t, err)
	d, err := dispatchEvent(b.ctx, b.pool, b.log, nil, "s.sensor", ev)
	require.NoError(t, err)
	require.Len(t, d.Executions, 1)

	var rules []map[string]any
	require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT rules FROM attune.event WHERE id = $1", d.EventID).Scan(&rules))
	require.ElementsMatch(t, []map[string]any{
		{"rule": "s.fires", "execution_id": float64(d.Executions[0])},
		{"rule": "s.errors_only", "not_matched": true},
		{"rule": "s.missing", "skipped": `action_params cannot be rendered: parameter "message": {{ event.payload.nope }}: event.payload has no field "nope"`},
	}, rules)
}

// TestEventSealsSecretParameters: a rule's execution with a secret
// parameter is sealed at rest when the replica has the secrets key, like an
// enqueue from the CLI or Go.
func TestEventSealsSecretParameters(t *testing.T) {
	t.Parallel()
	b := sensorSetup(t, map[string]string{
		"actions/login.yaml": "name: login\nrunner_type: shell\nentry_point: echo.sh\nparameters:\n  token: {type: string, secret: true}\n",
		"rules/login.yaml":   "name: login\ntrigger_ref: s.tick\naction_ref: s.login\naction_params: {token: \"{{ event.payload.token }}\"}\n",
	})
	key, err := DecodeSecretsKey("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=")
	require.NoError(t, err)
	require.NoError(t, jobs.CheckSecretsKey(b.ctx, b.pool, key)) // records the installation's key
	ev, err := parseEvent([]byte(`{"trigger_ref": "s.tick", "payload": {"token": "tok-from-event-1234"}}`), "s.sensor", []string{"s.tick"})
	require.NoError(t, err)
	d, err := dispatchEvent(b.ctx, b.pool, b.log, key, "s.sensor", ev)
	require.NoError(t, err)
	require.Len(t, d.Executions, 1, "%v", d.Skipped)
	var stored []byte
	require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT parameters::text::bytea FROM attune.execution_secret WHERE execution_id = $1", d.Executions[0]).Scan(&stored))
	require.True(t, jobs.Sealed(stored), "stored %s", stored)
	require.NotContains(t, string(stored), "tok-from-event")
}
