package packs

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParamParseText(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		typ, text string
		want      any
		err       string
	}{
		{typ: "string", text: "123", want: "123"},
		{typ: "string", text: "02134", want: "02134"},
		{typ: "string", text: `{"a":1}`, want: `{"a":1}`},
		{typ: "string", text: "", want: ""},
		{typ: "integer", text: "3", want: json.Number("3")},
		{typ: "integer", text: "-12", want: json.Number("-12")},
		{typ: "integer", text: "9007199254740993", want: json.Number("9007199254740993")},
		{typ: "integer", text: "02134", want: json.Number("2134")},
		{typ: "integer", text: "+7", want: json.Number("7")},
		{typ: "integer", text: "3.5", err: "--param k=3.5: k is an integer parameter; give a whole number such as 3"},
		{typ: "integer", text: "abc", err: "k is an integer parameter"},
		{typ: "number", text: "2.5", want: json.Number("2.5")},
		{typ: "number", text: "1e3", want: json.Number("1e3")},
		{typ: "number", text: ".5", want: json.Number("0.5")},
		{typ: "number", text: "5.", want: json.Number("5")},
		{typ: "number", text: "NaN", err: "k is a number parameter; give a number such as 2.5"},
		{typ: "number", text: "0x10", err: "k is a number parameter"},
		{typ: "boolean", text: "true", want: true},
		{typ: "boolean", text: "No", want: false},
		{typ: "boolean", text: "maybe", err: "k is a boolean parameter; give true or false"},
		{typ: "array", text: "a,b", want: []any{"a", "b"}},
		{typ: "array", text: "a, b ,c", want: []any{"a", "b", "c"}},
		{typ: "array", text: `["a", 1]`, want: []any{"a", json.Number("1")}},
		{typ: "array", text: "", want: []any{}},
		{typ: "array", text: "[1,", err: "k is an array parameter; give a JSON array"},
		{typ: "object", text: `{"a": 1}`, want: map[string]any{"a": json.Number("1")}},
		{typ: "object", text: "a=1", err: "k is an object parameter; give a JSON object"},
		{typ: "object", text: "[1]", err: "k is an object parameter"},
		{typ: "", text: "3", want: json.Number("3")},
		{typ: "", text: "hi", want: "hi"},
	} {
		got, err := Param{Type: tc.typ}.ParseText("k", tc.text)
		if tc.err != "" {
			require.ErrorContains(t, err, tc.err, "%s %q", tc.typ, tc.text)
			continue
		}
		require.NoError(t, err, "%s %q", tc.typ, tc.text)
		require.Equal(t, tc.want, got, "%s %q", tc.typ, tc.text)
	}
}
