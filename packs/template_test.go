package packs

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestRenderParams(t *testing.T) {
	t.Parallel()

	ctx := TemplateContext(42, "core.intervaltimer", map[string]any{
		"execution_count": 3,
		"ratio":           0.5,
		"ok":              true,
		"nothing":         nil,
		"host":            map[string]any{"name": "web1", "tags": []any{"a", "b"}},
		"items":           []any{map[string]any{"id": 7}},
		"html":            "<b>&</b>",
	}, "examples.every_second")

	tests := []struct {
		name    string
		params  map[string]any
		want    map[string]any
		wantErr string
	}{
		{name: "no templates", params: map[string]any{"a": "plain", "b": 1, "c": nil}, want: map[string]any{"a": "plain", "b": 1, "c": nil}},
		{name: "exact keeps type", params: map[string]any{
			"n": "{{ event.payload.execution_count }}", "f": "{{event.payload.ratio}}", "b": " {{ event.payload.ok }} ",
			"o": "{{ event.payload.host }}", "l": "{{ event.payload.host.tags }}", "z": "{{ event.payload.nothing }}",
			"id": "{{ event.id }}", "t": "{{ event.trigger }}", "r": "{{ rule.ref }}", "p": "{{ event.payload.items.0.id }}",
		}, want: map[string]any{
			"n": 3, "f": 0.5, "b": true,
			"o": map[string]any{"name": "web1", "tags": []any{"a", "b"}}, "l": []any{"a", "b"}, "z": nil,
			"id": int64(42), "t": "core.intervaltimer", "r": "examples.every_second", "p": 7,
		}},
		{name: "embedded is text", params: map[string]any{
			"msg":  "tick {{ event.payload.execution_count }} of {{ rule.ref }}",
			"obj":  "host={{ event.payload.host }}",
			"nil":  "[{{ event.payload.nothing }}]",
			"html": "x {{ event.payload.html }}",
			"two":  "{{ event.payload.ok }}{{ event.payload.ratio }}",
		}, want: map[string]any{
			"msg":  "tick 3 of examples.every_second",
			"obj":  `host={"name":"web1","tags":["a","b"]}`,
			"nil":  "[]",
			"html": "x <b>&</b>",
			"two":  "true0.5",
		}},
		{name: "nested values", params: map[string]any{
			"o": map[string]any{"k": "{{ event.id }}", "l": []any{"{{ event.payload.ok }}", "n={{ event.payload.execution_count }}"}},
		}, want: map[string]any{
			"o": map[string]any{"k": int64(42), "l": []any{true, "n=3"}},
		}},
		{name: "lone closing braces are text", params: map[string]any{"a": "}} {"}, want: map[string]any{"a": "}} {"}},
		{name: "missing field", params: map[string]any{"msg": "{{ event.payload.nope }}"}, wantErr: `parameter "msg": {{ event.payload.nope }}: event.payload has no field "nope"`},
		{name: "missing nested", params: map[string]any{"msg": "x {{ event.payload.host.port }}"}, wantErr: `parameter "msg": {{ event.payload.host.port }}: event.payload.host has no field "port"`},
		{name: "index out of range", params: map[string]any{"a": "{{ event.payload.items.3 }}"}, wantErr: `event.payload.items has no element 3 (it has 1)`},
		{name: "field of a scalar", params: map[string]any{"a": "{{ event.payload.ok.x }}"}, wantErr: `event.payload.ok is boolean, so it has no field "x"`},
		{name: "syntax", params: map[string]any{"a": "{{ event.id"}, wantErr: `parameter "a": unclosed "{{"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := RenderParams(tt.params, ctx)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
		})
	}

	t.Run("result does not alias the context", func(t *testing.T) {
		t.Parallel()
		payload := map[string]any{"host": map[string]any{"name": "web1"}}
		got, err := RenderParams(map[string]any{"h": "{{ event.payload.host }}"}, TemplateContext(1, "t", payload, "r"))
		require.NoError(t, err)
		got["h"].(map[string]any)["name"] = "changed"
		require.Equal(t, "web1", payload["host"].(map[string]any)["name"])
	})
}

func TestValidateTemplates(t *testing.T) {
	t.Parallel()

	require.NoError(t, ValidateTemplates(map[string]any{
		"a": "{{ event.payload.x.y }} {{ event.id }} {{ event.trigger }} {{ rule.ref }}",
		"b": 3,
		"c": []any{map[string]any{"d": "{{ event.payload }}"}},
	}))
	for tmpl, want := range map[string]string{
		"{{ event.id":                   `a: unclosed "{{"`,
		"{{ }}":                         "a: empty {{ }}",
		"{{ foo.bar }}":                 `a: {{ foo.bar }}: unknown name "foo"`,
		"{{ event }}":                   "a: {{ event }}: event has no such field",
		"{{ event.payloads.x }}":        "a: {{ event.payloads.x }}: event has no such field",
		"{{ rule.ref.x }}":              "a: {{ rule.ref.x }}: rule.ref has no fields",
		"{{ event.payload.x | upper }}": "a: {{ event.payload.x | upper }} is not a dotted path",
		"{{ event..id }}":               "a: {{ event..id }} is not a dotted path",
		"{{ {{ event.id }} }}":          "is not a dotted path",
	} {
		require.ErrorContains(t, ValidateTemplates(map[string]any{"a": tmpl}), want, tmpl)
	}
	err := ValidateTemplates(map[string]any{"o": map[string]any{"l": []any{"ok", "{{ x }}"}}})
	require.ErrorContains(t, err, `o.l[1]: {{ x }}: unknown name "x"`)
}
