package packs

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestLoadUnknownKeys: a key attune does not know is a warning on its line
// in every kind of file, naming the key it most likely misspells, and is
// still kept in Extra; StackStorm's pack metadata and the keys the format
// reserves raise none.
func TestLoadUnknownKeys(t *testing.T) {
	t.Parallel()
	base := t.TempDir()
	ps, problems := writePacks(t, base, map[string]string{
		"u/pack.yaml":         "ref: u\nverison: 1.0\nauthor: me\nemail: me@example.com\n",
		"u/actions/a.sh":      "#!/bin/sh\n",
		"u/actions/a.yaml":    "name: a\nentry_point: a.sh\ntimout_seconds: 5\noutput_schema: {type: object}\nretry: {max: 3}\npack: u\n",
		"u/sensors/s.sh":      "#!/bin/sh\n",
		"u/sensors/s.yaml":    "name: s\nentry_point: s.sh\ntrigger_types: [t]\nenabeld: false\n",
		"u/triggers/t.yaml":   "name: t\npayload_shema: {type: object}\n",
		"u/rules/r.yaml":      "name: r\ntrigger_ref: u.t\naction_ref: u.a\ndescripton: typo\naction: {ref: u.a}\n",
		"u/actions/p.yaml":    "name: p\nentry_point: a.sh\nparameters:\n  x: {type: string, requried: true}\n",
		"u/rules/nested.yaml": "name: nested\ntrigger_ref: u.t\naction_ref: u.a\nconditions:\n  - {field: event.payload.x, operator: equals, value: 1}\n",
	})
	f := func(path string) string { return filepath.Join(base, "u", path) }
	requireProblems(t, []Problem{
		{File: f("pack.yaml"), Line: 2, Warning: true, Msg: "unknown key verison; did you mean version?"},
		{File: f("triggers/t.yaml"), Line: 2, Warning: true, Msg: "unknown key payload_shema; did you mean payload_schema?"},
		{File: f("actions/a.yaml"), Line: 3, Warning: true, Msg: "unknown key timout_seconds; did you mean timeout_seconds?"},
		{File: f("actions/a.yaml"), Line: 4, Warning: true, Msg: "unknown key output_schema; did you mean result_schema?"},
		{File: f("actions/a.yaml"), Line: 6, Warning: true, Msg: "unknown key pack; it is kept but attune does not use it"},
		{File: f("actions/p.yaml"), Line: 4, Warning: true, Msg: `parameter "x": unknown key requried; did you mean required?`},
		{File: f("sensors/s.yaml"), Line: 4, Warning: true, Msg: "unknown key enabeld; did you mean enabled?"},
		{File: f("rules/r.yaml"), Line: 4, Warning: true, Msg: "unknown key descripton; did you mean description?"},
		{File: f("rules/r.yaml"), Line: 5, Warning: true, Msg: "unknown key action; did you mean action_ref?"},
	}, problems)
	require.Len(t, ps, 1)
	a := ps[0].Actions[0]
	require.Equal(t, map[string]any{"timout_seconds": 5, "output_schema": map[string]any{"type": "object"}, "pack": "u"}, a.Extra,
		"unknown keys are kept; retry is a policy now (policy.go), not extra")
	require.NotNil(t, a.Policy.Retry, "retry: {max: 3} is read as the retry policy")
	require.Zero(t, a.TimeoutSeconds)
	require.Equal(t, map[string]any{"enabeld": false}, ps[0].Sensors[0].Extra)
}

func TestNearestKey(t *testing.T) {
	t.Parallel()
	known := []string{"description", "enabled", "entry_point", "name", "parameters", "result_schema", "tags", "timeout_seconds"}
	for key, want := range map[string]string{
		"timout_seconds":  "timeout_seconds",
		"timeout_secs":    "timeout_seconds",
		"enabeld":         "enabled",
		"entrypoint":      "entry_point",
		"tag":             "tags",
		"nmae":            "name",
		"output_schema":   "result_schema",
		"pack":            "",
		"author":          "",
		"x":               "",
		"parameters_list": "",
	} {
		require.Equal(t, want, nearestKey(key, known), key)
	}
}
