package packs

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestConditionMatch(t *testing.T) {
	t.Parallel()

	var payload map[string]any
	require.NoError(t, json.Unmarshal([]byte(`{
		"status": "error", "code": 503, "ratio": 0.25, "ok": false, "nothing": null,
		"tags": ["prod", "web", 7], "host": {"name": "web1", "dc": "eu"},
		"at": "2030-01-02T15:04:05Z"
	}`), &payload))

	tests := []struct {
		field, op string
		value     any
		want      bool
		wantErr   string
	}{
		{"event.payload.status", OpEquals, "error", true, ""},
		{"payload.status", OpEquals, "error", true, ""},
		{"trigger.status", OpEquals, "error", true, ""},
		{"event.payload.status", OpEquals, "ok", false, ""},
		{"event.payload.code", OpEquals, 503, true, ""}, // JSON's float64 equals YAML's int
		{"event.payload.code", OpEquals, "503", false, ""},
		{"event.payload.ok", OpEquals, false, true, ""},
		{"event.payload.nothing", OpEquals, nil, true, ""},
		{"event.payload.host", OpEquals, map[string]any{"name": "web1", "dc": "eu"}, true, ""},
		{"event.payload.tags", OpEquals, []any{"prod", "web", 7}, true, ""},
		{"event.payload.host.name", OpNotEquals, "web2", true, ""},
		{"event.payload.code", OpNotEquals, 503, false, ""},
		{"event.payload.status", OpContains, "rr", true, ""},
		{"event.payload.code", OpContains, 50, false, "contains needs a string, list or object, got integer"},
		{"event.payload.tags", OpContains, "web", true, ""},
		{"event.payload.tags", OpContains, 7, true, ""},
		{"event.payload.tags", OpContains, "db", false, ""},
		{"event.payload.host", OpContains, "dc", true, ""},
		{"event.payload.host", OpContains, 1, false, "contains on an object needs a key"},
		{"event.payload.code", OpGreaterThan, 500, true, ""},
		{"event.payload.ratio", OpGreaterThan, 0.5, false, ""},
		{"event.payload.ratio", OpLessThan, 0.5, true, ""},
		{"event.payload.at", OpGreaterThan, "2030-01-01T00:00:00Z", true, ""},
		{"event.payload.status", OpGreaterThan, 3, false, "cannot order string against integer"},
		{"event.payload.status", OpMatches, "^err", true, ""},
		{"event.payload.code", OpMatches, `^5\d\d$`, true, ""},
		{"event.payload.host.name", OpMatches, "^db", false, ""},
		{"event.payload.host", OpMatches, ".", false, "matches needs a string, got object"},
		{"event.payload.status", OpMatches, "(", false, "invalid regular expression"},
		{"event.payload.tags.1", OpEquals, "web", true, ""},
		{"event.payload.missing", OpEquals, nil, false, ""},
		{"event.payload.missing", OpNotEquals, "x", false, ""}, // a missing field never matches
		{"event.payload.host.name.first", OpEquals, "w", false, ""},
		{"event.payload", OpContains, "status", true, ""},
		{"status", OpEquals, "error", false, `must start with "event.payload.", "payload." or "trigger."`},
		{"event.payload.status", "eq", "error", false, `unknown condition operator "eq"`},
	}
	for _, tt := range tests {
		c := Condition{Field: tt.field, Operator: tt.op, Value: tt.value}
		got, err := c.Match(payload)
		if tt.wantErr != "" {
			require.ErrorContains(t, err, tt.wantErr, "%+v", c)
			require.False(t, got)
			continue
		}
		require.NoError(t, err, "%+v", c)
		require.Equal(t, tt.want, got, "%+v", c)
	}
}

func TestRuleMatch(t *testing.T) {
	t.Parallel()

	r := &Rule{Conditions: []Condition{
		{Field: "event.payload.execution_count", Operator: OpGreaterThan, Value: 2},
		{Field: "payload.type", Operator: OpEquals, Value: "interval"},
	}}
	ok, err := r.Match(map[string]any{"execution_count": 3, "type": "interval"})
	require.NoError(t, err)
	require.True(t, ok)
	ok, err = r.Match(map[string]any{"execution_count": 1, "type": "interval"})
	require.NoError(t, err)
	require.False(t, ok)
	ok, err = (&Rule{}).Match(nil)
	require.NoError(t, err)
	require.True(t, ok, "no conditions: every event matches")

	var back []Condition
	text, err := json.Marshal(r.Conditions)
	require.NoError(t, err)
	require.JSONEq(t, `[{"field":"event.payload.execution_count","operator":"greater_than","value":2},{"field":"payload.type","operator":"equals","value":"interval"}]`, string(text))
	require.NoError(t, json.Unmarshal(text, &back))
	ok, err = (&Rule{Conditions: back}).Match(map[string]any{"execution_count": 3.0, "type": "interval"})
	require.NoError(t, err)
	require.True(t, ok, "conditions read back from the database match the same")
}
