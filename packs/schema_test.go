package packs

import (
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestIsJSONSchema: what tells a JSON Schema from a flat property map, even
// when a property is called "properties" or "type".
func TestIsJSONSchema(t *testing.T) {
	t.Parallel()

	for _, tt := range []struct {
		name string
		m    map[string]any
		want bool
	}{
		{"typed", map[string]any{"type": "object"}, true},
		{"combinator", map[string]any{"anyOf": []any{}}, true},
		{"properties only", map[string]any{"properties": map[string]any{"a": map[string]any{"type": "string"}}}, true},
		{"a property named properties", map[string]any{"properties": map[string]any{"type": "string"}}, false},
		{"a property named type", map[string]any{"type": map[string]any{"type": "string"}}, false},
		{"flat map", map[string]any{"host": map[string]any{"type": "string"}}, false},
	} {
		require.Equal(t, tt.want, isJSONSchema(tt.m), tt.name)
	}
}

func TestFlatToSchema(t *testing.T) {
	t.Parallel()

	flat := map[string]any{
		"host": map[string]any{"type": "string", "required": true},
		"port": map[string]any{"type": "integer", "required": false},
	}
	require.Equal(t, map[string]any{
		"type": "object",
		"properties": map[string]any{
			"host": map[string]any{"type": "string"},
			"port": map[string]any{"type": "integer"},
		},
		"required":             []string{"host"},
		"additionalProperties": false,
	}, flatToSchema(flat, true))
	require.Equal(t, true, flat["host"].(map[string]any)["required"], "the input is not changed")

	schema := map[string]any{"type": "object"}
	require.Equal(t, schema, flatToSchema(schema, true), "a JSON Schema is kept as is")
}

func TestJSONLike(t *testing.T) {
	t.Parallel()

	at := time.Date(2030, 1, 2, 15, 4, 5, 0, time.UTC)
	got, err := jsonLike(map[string]any{"m": map[any]any{1: "one"}, "l": []any{at}})
	require.NoError(t, err)
	require.Equal(t, map[string]any{"m": map[string]any{"1": "one"}, "l": []any{"2030-01-02T15:04:05Z"}}, got)

	_, err = jsonLike([]any{math.Inf(1)})
	require.ErrorContains(t, err, "cannot be stored as JSON")
}
