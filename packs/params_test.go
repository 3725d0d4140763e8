package packs

import (
	"encoding/json"
	"errors"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

func ptr(f float64) *float64 { return &f }

func testParams() Params {
	return Params{
		"name":    {Type: "string", Required: true},
		"count":   {Type: "integer", Default: 1, Minimum: ptr(1), Maximum: ptr(10)},
		"unit":    {Type: "string", Enum: []any{"seconds", "minutes"}, Default: "seconds"},
		"ratio":   {Type: "number"},
		"loud":    {Type: "boolean"},
		"options": {Type: "object", Default: map[string]any{"color": "blue"}},
		"hosts":   {Type: "array"},
		"token":   {Type: "string", Secret: true},
	}
}

func TestParamsValidate(t *testing.T) {
	t.Parallel()

	defaults := map[string]any{"count": 1, "unit": "seconds", "options": map[string]any{"color": "blue"}}
	with := func(m map[string]any) map[string]any {
		out := map[string]any{}
		for k, v := range defaults {
			out[k] = v
		}
		for k, v := range m {
			out[k] = v
		}
		return out
	}
	tests := []struct {
		name    string
		params  map[string]any
		want    map[string]any
		wantErr string
	}{
		{name: "defaults applied", params: map[string]any{"name": "ann"}, want: with(map[string]any{"name": "ann"})},
		{name: "all given", params: map[string]any{
			"name": "ann", "count": 10, "unit": "minutes", "ratio": 0.5, "loud": true,
			"options": map[string]any{}, "hosts": []string{"a", "b"}, "token": "s3cret",
		}, want: map[string]any{
			"name": "ann", "count": 10, "unit": "minutes", "ratio": 0.5, "loud": true,
			"options": map[string]any{}, "hosts": []string{"a", "b"}, "token": "s3cret",
		}},
		{name: "JSON numbers", params: map[string]any{"name": "ann", "count": json.Number("3"), "ratio": float64(2)}, want: with(map[string]any{"name": "ann", "count": json.Number("3"), "ratio": float64(2)})},
		{name: "whole float is an integer", params: map[string]any{"name": "ann", "count": 2.0}, want: with(map[string]any{"name": "ann", "count": 2.0})},
		{name: "missing required", params: map[string]any{}, wantErr: `missing required parameter "name"`},
		{name: "wrong type", params: map[string]any{"name": "ann", "count": "3"}, wantErr: `parameter "count": expected integer, got string`},
		{name: "fraction for integer", params: map[string]any{"name": "ann", "count": 1.5}, wantErr: `parameter "count": expected integer, got number`},
		{name: "null", params: map[string]any{"name": nil}, wantErr: `parameter "name": expected string, got null`},
		{name: "boolean", params: map[string]any{"name": "ann", "loud": "yes"}, wantErr: `parameter "loud": expected boolean, got string`},
		{name: "array", params: map[string]any{"name": "ann", "hosts": "a,b"}, wantErr: `parameter "hosts": expected array, got string`},
		{name: "enum", params: map[string]any{"name": "ann", "unit": "weeks"}, wantErr: `parameter "unit": must be one of "seconds", "minutes", got "weeks"`},
		{name: "minimum", params: map[string]any{"name": "ann", "count": 0}, wantErr: `parameter "count": must be at least 1, got 0`},
		{name: "maximum", params: map[string]any{"name": "ann", "count": 11}, wantErr: `parameter "count": must be at most 10, got 11`},
		{name: "unknown", params: map[string]any{"name": "ann", "foo": 1}, wantErr: `unknown parameter "foo"; the action declares: count, hosts, loud, name, options, ratio, token, unit`},
		{name: "several at once", params: map[string]any{"count": "x", "foo": 1}, wantErr: `unknown parameter "foo"; the action declares: count, hosts, loud, name, options, ratio, token, unit; missing required parameter "name"; parameter "count": expected integer, got string`},
		{name: "not JSON", params: map[string]any{"name": "ann", "options": map[string]any{"f": func() {}}}, wantErr: `parameter "options": not representable as JSON`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := testParams().Validate(tt.params)
			if tt.wantErr != "" {
				require.Error(t, err)
				require.Contains(t, err.Error(), tt.wantErr)
				if tt.name != "not JSON" {
					require.EqualError(t, err, tt.wantErr)
				}
				require.ErrorIs(t, err, ErrInvalidParams)
				var pe *ParamsError
				require.ErrorAs(t, err, &pe)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
		})
	}

	t.Run("no parameters declared", func(t *testing.T) {
		t.Parallel()
		got, err := Params{}.Validate(nil)
		require.NoError(t, err)
		require.Equal(t, map[string]any{}, got)
		_, err = Params(nil).Validate(map[string]any{"x": 1})
		require.EqualError(t, err, `unknown parameter "x"; the action declares no parameters`)
	})

	t.Run("input and defaults not shared", func(t *testing.T) {
		t.Parallel()
		p := testParams()
		in := map[string]any{"name": "ann"}
		got, err := p.Validate(in)
		require.NoError(t, err)
		require.Equal(t, map[string]any{"name": "ann"}, in, "input untouched")
		got["options"].(map[string]any)["color"] = "red"
		require.Equal(t, map[string]any{"color": "blue"}, p["options"].Default, "default untouched")
	})
}

func TestValidatorConcurrent(t *testing.T) {
	t.Parallel()

	v, err := testParams().Compile()
	require.NoError(t, err)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			_, err := v.Validate(map[string]any{"name": "ann", "count": i + 1})
			require.NoError(t, err)
			_, err = testParams().Validate(map[string]any{"count": i + 1})
			require.Error(t, err)
		})
	}
	wg.Wait()
}

func TestParamsSchema(t *testing.T) {
	t.Parallel()

	p := Params{
		"name":  {Type: "string", Description: "Who.", Required: true},
		"count": {Type: "integer", Default: 1, Minimum: ptr(1)},
		"token": {Type: "string", Secret: true, Enum: []any{"a"}},
	}
	require.Equal(t, map[string]any{
		"type": "object",
		"properties": map[string]any{
			"name":  map[string]any{"type": "string", "description": "Who."},
			"count": map[string]any{"type": "integer", "default": 1, "minimum": 1.0},
			"token": map[string]any{"type": "string", "secret": true, "enum": []any{"a"}},
		},
		"required":             []string{"name"},
		"additionalProperties": false,
	}, p.Schema())

	text, err := json.Marshal(p)
	require.NoError(t, err)
	require.JSONEq(t, `{
		"name": {"type": "string", "description": "Who.", "required": true},
		"count": {"type": "integer", "default": 1, "minimum": 1},
		"token": {"type": "string", "secret": true, "enum": ["a"]}
	}`, string(text), "the StackStorm-style map stored in attune.action.parameters")

	var back Params
	require.NoError(t, json.Unmarshal(text, &back))
	_, err = back.Validate(map[string]any{"name": "x", "token": "a"})
	require.NoError(t, err, "a map read back from the database validates the same")
}

func TestEnvName(t *testing.T) {
	t.Parallel()

	for in, want := range map[string]string{
		"name":       "NAME",
		"max-count":  "MAX_COUNT",
		"already_OK": "ALREADY_OK",
		"a.b c":      "A_B_C",
		"héllo":      "H_LLO",
		"x9":         "X9",
		"":           "",
	} {
		require.Equal(t, want, EnvName(in), in)
	}
	require.Empty(t, envNameProblem("_x"))
	require.NotEmpty(t, envNameProblem(""))
	require.NotEmpty(t, envNameProblem("9lives"))
}

func TestValidateAgainst(t *testing.T) {
	t.Parallel()

	schema := map[string]any{
		"type": "object",
		"properties": map[string]any{
			"greeting": map[string]any{"type": "string"},
			"nested": map[string]any{
				"type":       "object",
				"properties": map[string]any{"n": map[string]any{"type": "integer", "maximum": 3}},
			},
		},
		"required": []string{"greeting"},
	}
	require.NoError(t, ValidateAgainst(schema, map[string]any{"greeting": "hi", "extra": true}))
	require.EqualError(t, ValidateAgainst(schema, map[string]any{"greeting": 1}), `field "greeting": expected string, got number`)
	require.EqualError(t, ValidateAgainst(schema, map[string]any{"greeting": "hi", "nested": map[string]any{"n": 4}}), `field "nested.n": must be at most 3, got 4`)
	require.EqualError(t, ValidateAgainst(schema, "text"), `expected object, got string`)
	require.EqualError(t, ValidateAgainst(map[string]any{"type": "object", "required": []string{"a", "b"}}, map[string]any{}),
		`missing required field "a"; missing required field "b"`)
	require.EqualError(t, ValidateAgainst(map[string]any{"type": "string", "minLength": 3}, "ab"), `minLength: got 2, want 3`)

	err := ValidateAgainst(map[string]any{"type": "nonsense"}, 1)
	require.ErrorContains(t, err, "invalid JSON Schema")
	require.False(t, errors.Is(err, ErrInvalidParams))
}

// TestLoadSchemaParams: parameters written as a JSON Schema of the
// parameter object (Attune's form) become the same declarations as the
// StackStorm-style map, the required list turned into required: true; what
// a parameter map cannot say is refused in one line saying what to write.
func TestLoadSchemaParams(t *testing.T) {
	t.Parallel()

	t.Run("converted", func(t *testing.T) {
		t.Parallel()
		base := t.TempDir()
		ps, problems := writePacks(t, base, map[string]string{
			"s/pack.yaml":      "ref: s\n",
			"s/actions/a.sh":   "#!/bin/sh\n",
			"s/actions/a.yaml": "name: a\nentry_point: a.sh\nparameters:\n  type: object\n  additionalProperties: false\n  properties:\n    times: {type: integer, maximum: 5, default: 1}\n    message: {type: string, description: what to say, format: email}\n    type: {type: string, enum: [a, b]}\n  required: [message]\n",
			"s/sensors/s.sh":   "#!/bin/sh\n",
			"s/sensors/s.yaml": "name: s\nentry_point: s.sh\ntrigger_types: [core.intervaltimer]\nparameters:\n  properties:\n    every: {type: integer}\n  required: [every]\n",
		})
		requireProblems(t, []Problem{
			{File: filepath.Join(base, "s/actions/a.yaml"), Line: 8, Warning: true, Msg: `parameter "message": unknown key format; it is ignored`},
		}, problems)
		require.Equal(t, Params{
			"times":   {Type: "integer", Maximum: ptr(5), Default: 1},
			"message": {Type: "string", Description: "what to say", Required: true},
			"type":    {Type: "string", Enum: []any{"a", "b"}},
		}, ps[0].Actions[0].Parameters)
		require.Equal(t, Params{"every": {Type: "integer", Required: true}}, ps[0].Sensors[0].Parameters)
	})

	t.Run("refused", func(t *testing.T) {
		t.Parallel()
		for _, tt := range []struct {
			name, params string
			line         int
			msg          string
		}{
			{"not an object", "  type: array\n  items: {type: string}\n", 4, `parameters: the schema is of type "array", not object, which attune's parameters cannot hold; write {type: object, properties: {NAME: {type: ..., ...}}, required: [NAME, ...]}, or the map {NAME: {type: ..., required: true}}`},
			{"composition", "  type: object\n  oneOf: [{required: [a]}, {required: [b]}]\n", 5, "parameters: the schema uses oneOf, which attune's parameters cannot hold; write {type: object"},
			{"additional schema", "  type: object\n  additionalProperties: {type: string}\n", 5, "parameters: additionalProperties is a schema, which attune's parameters cannot hold"},
			{"properties not a mapping", "  type: object\n  properties: [a, b]\n", 5, `parameters: properties is a list, not a mapping`},
			{"required undeclared", "  type: object\n  properties:\n    a: {type: string}\n  required: [a, b]\n", 7, `parameters: required names "b", which properties does not declare`},
			{"property without type", "  type: object\n  properties:\n    a: {description: x}\n", 6, `parameter "a": missing type`},
		} {
			t.Run(tt.name, func(t *testing.T) {
				t.Parallel()
				dir := filepath.Join(t.TempDir(), "s")
				writeFile(t, filepath.Join(dir, "pack.yaml"), "ref: s\n")
				writeFile(t, filepath.Join(dir, "actions", "a.sh"), "#!/bin/sh\n")
				writeFile(t, filepath.Join(dir, "actions", "a.yaml"), "name: a\nentry_point: a.sh\nparameters:\n"+tt.params)
				p, problems := Load(dir)
				requireProblems(t, []Problem{{File: filepath.Join(dir, "actions", "a.yaml"), Line: tt.line, Msg: tt.msg}}, problems)
				require.Empty(t, p.Actions)
			})
		}
	})
}
