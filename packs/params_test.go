package packs

import (
	"encoding/json"
	"errors"
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
