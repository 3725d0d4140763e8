package packs

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestLoadYAMLErrors(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name, content string
		line          int
		msg           string
	}{
		{"unclosed flow mapping", "name: a\nentry_point: a.sh\nparameters:\n  x: {type: string\n", 4, "YAML syntax error: did not find expected ',' or '}'"},
		{"bad indent", "name: a\nentry_point: a.sh\n  runner_type: shell\n", 3, "YAML syntax error: mapping values are not allowed in this context"},
		// The parser names the line where the enclosing mapping starts.
		{"dedented key", "name: a\nparameters:\n  x:\n    type: string\n   y: 1\n", 3, "YAML syntax error: did not find expected key"},
		{"unclosed at end", "name: [a,\n", 1, "YAML syntax error: did not find expected node content"},
		{"not a mapping", "- name: a\n", 1, "the file must be a mapping of keys to values, got a list"},
		{"repeated key", "name: a\nentry_point: a.sh\nname: b\n", 3, `the file: key "name" repeated (first at line 1)`},
		{"string expected", "name: a\nentry_point: [a.sh]\n", 2, "entry_point must be a string, got a list"},
		{"bool expected", "name: a\nentry_point: a.sh\nenabled: maybe\n", 3, `enabled must be true or false, got "maybe"`},
		{"int expected", "name: a\nentry_point: a.sh\ntimeout_seconds: 1.5\n", 3, `timeout_seconds must be a whole number, got "1.5"`},
		{"tags", "name: a\nentry_point: a.sh\ntags: demo\n", 3, `tags must be a list of strings, got "demo"`},
		{"no name", "description: x\nentry_point: a.sh\n", 0, "missing name; give the action a name (its ref is p.{name})"},
		{"bad name", "name: a.b\nentry_point: a.sh\n", 1, `action name "a.b" may hold only letters, digits, '_' and '-'`},
		{"ref of another pack", "ref: other.a\nentry_point: a.sh\n", 1, `ref "other.a" must start with the pack ref, as in "p.a"`},
		{"missing entry point", "name: a\n", 0, "missing entry_point; name the file in actions/ to run"},
		{"missing param type", "name: a\nentry_point: a.sh\nparameters:\n  x:\n    description: no type\n", 4, `parameter "x": missing type`},
		{"param not a mapping", "name: a\nentry_point: a.sh\nparameters:\n  x: string\n", 4, `parameter "x" must be a mapping of keys to values, got "string"`},
		{"bad default", "name: a\nentry_point: a.sh\nparameters:\n  x:\n    type: integer\n    default: three\n", 6, `parameter "x": default "three" is string, not integer`},
		{"default out of enum", "name: a\nentry_point: a.sh\nparameters:\n  x:\n    type: string\n    enum: [a, b]\n    default: c\n", 7, `default "c" is not one of the enum values "a", "b"`},
		{"default below minimum", "name: a\nentry_point: a.sh\nparameters:\n  x:\n    type: number\n    minimum: 0.5\n    default: 0\n", 7, `default 0 is below the minimum 0.5`},
		{"bad result schema", "name: a\nentry_point: a.sh\nresult_schema:\n  type: object\n  properties: 3\n", 4, "result_schema is not a valid JSON Schema"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := filepath.Join(t.TempDir(), "p")
			writeFile(t, filepath.Join(dir, "pack.yaml"), "ref: p\n")
			writeFile(t, filepath.Join(dir, "actions", "a.sh"), "#!/bin/sh\n")
			writeFile(t, filepath.Join(dir, "actions", "a.yaml"), tt.content)
			p, problems := Load(dir)
			requireProblems(t, []Problem{{File: filepath.Join(dir, "actions", "a.yaml"), Line: tt.line, Msg: tt.msg}}, problems)
			require.Empty(t, p.Actions)
		})
	}
}
