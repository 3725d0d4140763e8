package packs

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/attune-system/attune/schema/schematest"
)

// repeatPack is pack c with an action whose parameters have a type, an
// enum, bounds and a required one.
var repeatPack = map[string]string{
	"c/pack.yaml":         "ref: c\n",
	"c/triggers/t.yaml":   "name: t\n",
	"c/actions/repeat.sh": "#!/bin/sh\n",
	"c/actions/repeat.yaml": `name: repeat
entry_point: repeat.sh
parameters:
  times: {type: integer, minimum: 1, maximum: 5}
  mode: {type: string, enum: [fast, slow]}
  message: {type: string, required: true}
  tags: {type: array, default: []}
`,
}

// TestLoadActionParams: the literal values of a rule's action_params are
// checked against its action, of the same pack or of another pack loaded
// with it, each problem on the line of the parameter; values holding
// templates only count as present.
func TestLoadActionParams(t *testing.T) {
	t.Parallel()
	base := t.TempDir()
	rule := func(name, params string) string {
		return "name: " + name + "\ntrigger_ref: c.t\naction_ref: c.repeat\n" + params
	}
	files := map[string]string{
		"c/rules/too_many.yaml": rule("too_many", "action_params:\n  message: hi\n  times: 99\n"),
		"c/rules/missing.yaml":  rule("missing", "action_params:\n  times: 2\n"),
		"c/rules/none.yaml":     rule("none", ""),
		"c/rules/kinds.yaml":    rule("kinds", "action_params:\n  message: 3\n  mode: medium\n  times: 2.5\n  tags: {a: 1}\n"),
		"c/rules/templated.yaml": rule("templated",
			"action_params:\n  message: 'at {{ event.payload.when }}'\n  times: '{{ event.payload.n }}'\n  tags: ['{{ rule.ref }}']\n"),
		"c/rules/ok.yaml": rule("ok", "action_params: {message: hi, times: 5, mode: slow}\n"),
		// Another pack's rules on c.repeat: a sorts before c, so only a
		// check after every pack loaded can see c.repeat.
		"a/pack.yaml":          "ref: a\n",
		"a/rules/zero.yaml":    "name: zero\ntrigger_ref: c.t\naction_ref: c.repeat\naction_params: {times: 0, message: hi}\n",
		"a/rules/fine.yaml":    "name: fine\ntrigger_ref: c.t\naction_ref: c.repeat\naction_params: {times: 1, message: hi}\n",
		"a/rules/unknown.yaml": "name: unknown\ntrigger_ref: c.t\naction_ref: c.repeat\naction_params:\n  message: hi\n  count: 1\n",
	}
	for k, v := range repeatPack {
		files[k] = v
	}
	ps, problems := writePacks(t, base, files)
	f := func(path string) string { return filepath.Join(base, path) }
	requireProblems(t, []Problem{
		{File: f("c/rules/kinds.yaml"), Line: 5, Msg: `action_params do not fit action c.repeat: parameter "message": expected string, got number`},
		{File: f("c/rules/kinds.yaml"), Line: 6, Msg: `action_params do not fit action c.repeat: parameter "mode": must be one of "fast", "slow", got "medium"`},
		{File: f("c/rules/kinds.yaml"), Line: 8, Msg: `action_params do not fit action c.repeat: parameter "tags": expected array, got object`},
		{File: f("c/rules/kinds.yaml"), Line: 7, Msg: `action_params do not fit action c.repeat: parameter "times": expected integer, got number`},
		{File: f("c/rules/missing.yaml"), Line: 4, Msg: `action_params do not fit action c.repeat: missing required parameter "message"`},
		{File: f("c/rules/none.yaml"), Line: 3, Msg: `action_params do not fit action c.repeat: missing required parameter "message"`},
		{File: f("c/rules/too_many.yaml"), Line: 6, Msg: `action_params do not fit action c.repeat: parameter "times": must be at most 5, got 99`},
		{File: f("a/rules/unknown.yaml"), Line: 6, Msg: `action_params: unknown parameter "count"; c.repeat declares: message, mode, tags, times`},
		{File: f("a/rules/zero.yaml"), Line: 4, Msg: `action_params do not fit action c.repeat: parameter "times": must be at least 1, got 0`},
	}, problems)
	require.Len(t, ps, 2)
	require.Equal(t, []string{"a.fine"}, refs(ps[0].Rules, func(r *Rule) string { return r.Ref }), "the failing rules are left out")
	require.Equal(t, []string{"c.ok", "c.templated"}, refs(ps[1].Rules, func(r *Rule) string { return r.Ref }))
	for _, p := range problems[len(problems)-2:] {
		require.Equal(t, ps[0].Dir, p.PackDir, "a's rules spoil pack a")
	}

	// Loaded alone, pack a cannot know c.repeat: registration checks it.
	_, problems = Load(f("a"))
	require.Empty(t, problems)
}

// TestRegisterActionParams: a rule naming an action registered before, from
// another pack, has its action_params checked against the stored
// declaration, and its pack fails naming the file and line.
func TestRegisterActionParams(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := schematest.Pool(t)
	base := t.TempDir()
	ps, problems := writePacks(t, base, repeatPack)
	require.NoError(t, RegisterPool(ctx, pool, ps, problems).Err())

	writeFile(t, filepath.Join(base, "a/pack.yaml"), "ref: a\n")
	writeFile(t, filepath.Join(base, "a/rules/r.yaml"), "name: r\ntrigger_ref: c.t\naction_ref: c.repeat\naction_params:\n  times: 99\n  note: '{{ event.id }}'\n")
	p, problems := Load(filepath.Join(base, "a"))
	require.Empty(t, problems)
	rs := RegisterPool(ctx, pool, []*Pack{p}, problems)
	file := filepath.Join(base, "a/rules/r.yaml")
	require.EqualError(t, rs[0].Err, file+`:6: rule a.r: action_params: unknown parameter "note"; c.repeat declares: message, mode, tags, times`+"\n"+
		file+`:5: rule a.r: action_params do not fit action c.repeat: parameter "times": must be at most 5, got 99`+"\n"+
		file+`:4: rule a.r: action_params do not fit action c.repeat: missing required parameter "message"`)
	require.Equal(t, 0, count(t, pool, "rule"))

	writeFile(t, filepath.Join(base, "a/rules/r.yaml"), "name: r\ntrigger_ref: c.t\naction_ref: c.repeat\naction_params: {times: 5, message: '{{ event.id }}'}\n")
	p, problems = Load(filepath.Join(base, "a"))
	require.NoError(t, RegisterPool(ctx, pool, []*Pack{p}, problems).Err())
	require.Equal(t, 1, count(t, pool, "rule"))
}
