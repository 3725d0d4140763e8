package packs

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// requireProblems checks file, line and kind exactly, and that each message
// contains the wanted text.
func requireProblems(t *testing.T, want, got []Problem) {
	t.Helper()
	var gotText []string
	for _, p := range got {
		gotText = append(gotText, p.Error())
	}
	require.Len(t, got, len(want), "problems:\n%s", strings.Join(gotText, "\n"))
	for i, w := range want {
		g := got[i]
		require.Equal(t, w.File, g.File, "problem %d: %s", i, g)
		require.Equal(t, w.Line, g.Line, "problem %d: %s", i, g)
		require.Equal(t, w.Warning, g.Warning, "problem %d: %s", i, g)
		require.Contains(t, g.Msg, w.Msg, "problem %d", i)
	}
}

func refs[T any](items []*T, ref func(*T) string) []string {
	var out []string
	for _, it := range items {
		out = append(out, ref(it))
	}
	return out
}

func actionRefs(p *Pack) []string { return refs(p.Actions, func(a *Action) string { return a.Ref }) }

func TestLoadGood(t *testing.T) {
	t.Parallel()

	p, problems := Load("testdata/good")
	requireProblems(t, []Problem{
		{File: "testdata/good/actions/greet.yaml", Line: 50, Warning: true, Msg: "unknown key notify; it is kept but attune does not use it"},
	}, problems)
	require.NotNil(t, p)

	abs, err := filepath.Abs("testdata/good")
	require.NoError(t, err)
	real, err := filepath.EvalSymlinks(abs)
	require.NoError(t, err)
	require.Equal(t, "good", p.Ref)
	require.Equal(t, "Good", p.Label)
	require.Equal(t, "2.1", p.Version, "version is kept as written")
	require.Equal(t, abs, p.Dir)
	require.Equal(t, filepath.Join(abs, "pack.yaml"), p.File)

	require.Equal(t, []string{"good.greet", "good.native", "good.script"}, actionRefs(p),
		"YAML in subdirectories of actions/ and other files are not items")

	greet := p.Actions[0]
	one, ten, onePointFive := 1.0, 10.0, 1.5
	require.Equal(t, &Action{
		Ref: "good.greet", Name: "greet", PackRef: "good", Label: "Greet", Description: "Greets someone.",
		Enabled:    false,
		RunnerType: RunnerShell,
		EntryPoint: "greet.sh",
		Path:       filepath.Join(real, "actions", "greet.sh"),
		Parameters: Params{
			"name":     {Type: "string", Description: "Who to greet.", Required: true},
			"greeting": {Type: "string", Default: "Hello", Enum: []any{"Hello", "Hi", "Howdy"}},
			"count":    {Type: "integer", Default: 1, Minimum: &one, Maximum: &ten},
			"ratio":    {Type: "number", Maximum: &onePointFive},
			"loud":     {Type: "boolean", Default: false},
			"options":  {Type: "object", Default: map[string]any{"color": "blue"}},
			"names":    {Type: "array", Default: []any{"a", "b"}},
			"token":    {Type: "string", Secret: true},
		},
		ResultSchema: map[string]any{
			"type": "object",
			"properties": map[string]any{
				"greeting": map[string]any{"type": "string"},
				"count":    map[string]any{"type": "integer"},
			},
			"required": []string{"greeting"},
		},
		TimeoutSeconds:    45,
		ParameterDelivery: DeliveryStdin,
		ParameterFormat:   FormatDotenv,
		OutputFormat:      FormatYAML,
		MaxRetries:        2,
		Tags:              []string{"greeting", "demo"},
		Extra:             map[string]any{"notify": map[string]any{"on_failure": "ops"}},
		File:              filepath.Join(abs, "actions", "greet.yaml"),
	}, greet)

	native := p.Actions[1]
	require.Equal(t, RunnerNative, native.RunnerType, "detected: no known extension")
	require.Equal(t, filepath.Join(real, "actions", "bin", "tool"), native.Path)
	require.True(t, native.Enabled)
	require.Equal(t, DeliveryEnv, native.ParameterDelivery)
	require.Equal(t, FormatJSON, native.ParameterFormat)
	require.Equal(t, FormatJSON, native.OutputFormat)
	require.Equal(t, Params{}, native.Parameters)

	script := p.Actions[2]
	require.Equal(t, RunnerPython, script.RunnerType, "detected from .py; scripts need no execute bit")
	require.Equal(t, map[string]any{"type": "object", "properties": map[string]any{"ok": map[string]any{"type": "boolean"}}}, script.ResultSchema)

	require.Len(t, p.Sensors, 1)
	s := p.Sensors[0]
	require.Equal(t, "good.watch", s.Ref)
	require.Equal(t, RunnerShell, s.RunnerType)
	require.Equal(t, filepath.Join(real, "sensors", "watch.sh"), s.Path)
	require.Equal(t, []string{"good.ping", "good.schema_trigger"}, s.TriggerTypes, "bare names are qualified with the pack")
	require.Equal(t, Params{"poll_seconds": {Type: "integer", Default: 5}}, s.Parameters)

	require.Equal(t, []string{"good.ping", "good.schema_trigger"}, refs(p.Triggers, func(t *Trigger) string { return t.Ref }))
	ping := p.Triggers[0]
	require.Equal(t, map[string]any{
		"type": "object",
		"properties": map[string]any{
			"host": map[string]any{"type": "string"},
			"port": map[string]any{"type": "integer", "default": 80},
		},
		"required":             []string{"host"},
		"additionalProperties": false,
	}, ping.Parameters, "a StackStorm-style map becomes a JSON Schema")
	require.Equal(t, map[string]any{
		"type": "object",
		"properties": map[string]any{
			"host":   map[string]any{"type": "string"},
			"rtt_ms": map[string]any{"type": "number"},
		},
		"required": []string{"host"},
	}, ping.PayloadSchema, "output is an alias of payload_schema, flat maps converted")
	require.Equal(t, []any{"path"}, p.Triggers[1].Parameters["required"], "a JSON Schema is kept as is")

	require.Equal(t, []string{"good.criteria", "good.on_ping"}, refs(p.Rules, func(r *Rule) string { return r.Ref }))
	crit := p.Rules[0]
	require.False(t, crit.Enabled)
	require.Equal(t, "other.webhook", crit.TriggerRef, "refs into other packs are left for registration")
	require.Equal(t, []Condition{
		{Field: "trigger.body.action", Operator: OpEquals, Value: "opened"},
		{Field: "trigger.body.title", Operator: OpMatches, Value: "^fix"},
	}, crit.Conditions, "StackStorm criteria become conditions")
	require.Equal(t, map[string]any{}, crit.ActionParams)

	onPing := p.Rules[1]
	require.True(t, onPing.Enabled)
	require.Equal(t, "good.ping", onPing.TriggerRef)
	require.Equal(t, map[string]any{"host": "web1"}, onPing.TriggerParams)
	require.Equal(t, []Condition{
		{Field: "event.payload.host", Operator: OpEquals, Value: "web1"},
		{Field: "payload.rtt_ms", Operator: OpGreaterThan, Value: 100},
		{Field: "trigger.host", Operator: OpMatches, Value: "^web[0-9]+$"},
	}, onPing.Conditions)
	require.Equal(t, "good.greet", onPing.ActionRef)
	require.Equal(t, "{{ event.payload.host }}", onPing.ActionParams["name"])
}

func TestLoadBad(t *testing.T) {
	t.Parallel()

	tests := []struct {
		dir     string
		want    []Problem
		nilPack bool
		loaded  []string // action refs that still load
	}{
		{dir: "no_pack_yaml", nilPack: true, want: []Problem{
			{File: "testdata/no_pack_yaml/pack.yaml", Msg: "pack.yaml not found"}}},
		{dir: "bad_pack_ref", nilPack: true, want: []Problem{
			{File: "testdata/bad_pack_ref/pack.yaml", Line: 2, Msg: `pack ref "Bad.Pack" must be lowercase letters, digits, '_' or '-' (no dots), such as "bad_pack"`}}},
		{dir: "bad_syntax", want: []Problem{
			{File: "testdata/bad_syntax/actions/broken.yaml", Line: 4, Msg: "YAML syntax error: did not find expected ',' or '}'"}}},
		{dir: "empty_file", want: []Problem{
			{File: "testdata/empty_file/actions/empty.yaml", Msg: "the file is empty"}}},
		{dir: "ref_mismatch", want: []Problem{
			{File: "testdata/ref_mismatch/actions/wrong.yaml", Line: 2, Msg: `ref "other.wrong" must be "ref_mismatch.wrong" ({pack}.{name})`}}},
		{dir: "bad_runner", want: []Problem{
			{File: "testdata/bad_runner/actions/ruby.yaml", Line: 2, Msg: `unknown runner_type "ruby"; use native, shell, python or node`}}},
		{dir: "bad_param_type", want: []Problem{
			{File: "testdata/bad_param_type/actions/p.yaml", Line: 5, Msg: `parameter "count": unknown type "int"; use string, integer, number, boolean, object or array`}}},
		{dir: "bad_enum", want: []Problem{
			{File: "testdata/bad_enum/actions/p.yaml", Line: 6, Msg: `parameter "level": enum value "two" is string, not integer`}}},
		{dir: "min_over_max", want: []Problem{
			{File: "testdata/min_over_max/actions/p.yaml", Line: 7, Msg: `parameter "count": minimum 10 is greater than maximum 1`}}},
		{dir: "bad_delivery", want: []Problem{
			{File: "testdata/bad_delivery/actions/p.yaml", Line: 3, Msg: `unknown parameter_delivery "socket"; use env, stdin or file`}}},
		{dir: "bad_param_format", want: []Problem{
			{File: "testdata/bad_param_format/actions/p.yaml", Line: 4, Msg: `unknown parameter_format "xml"; use json, dotenv or yaml`}}},
		{dir: "bad_output_format", want: []Problem{
			{File: "testdata/bad_output_format/actions/p.yaml", Line: 3, Msg: `unknown output_format "csv"; use json, text, yaml or jsonl`}}},
		{dir: "negative_timeout", want: []Problem{
			{File: "testdata/negative_timeout/actions/p.yaml", Line: 3, Msg: "timeout_seconds must not be negative, got -1"}}},
		{dir: "negative_retries", want: []Problem{
			{File: "testdata/negative_retries/actions/p.yaml", Line: 3, Msg: "max_retries must not be negative, got -2"}}},
		// Past the enqueue options' bounds the row cannot even be stored.
		{dir: "huge_timeout", want: []Problem{
			{File: "testdata/huge_timeout/actions/p.yaml", Line: 3, Msg: "timeout_seconds must be at most 604800 (7 days), got 99999999999"}}},
		{dir: "huge_retries", want: []Problem{
			{File: "testdata/huge_retries/actions/p.yaml", Line: 3, Msg: "max_retries must be at most 999, got 5000000000"}}},
		{dir: "duplicate_ref", loaded: []string{"duplicate_ref.dup", "duplicate_ref.ok"}, want: []Problem{
			{File: "testdata/duplicate_ref/actions/b.yaml", Line: 2, Msg: `duplicate action ref "duplicate_ref.dup", already defined in testdata/duplicate_ref/actions/a.yaml`}}},
		{dir: "entry_parent", want: []Problem{
			{File: "testdata/entry_parent/actions/p.yaml", Line: 3, Msg: `entry_point "../../bin/sh" leads out of the pack's actions/ folder`}}},
		{dir: "entry_absolute", want: []Problem{
			{File: "testdata/entry_absolute/actions/p.yaml", Line: 3, Msg: `entry_point "/bin/sh" is an absolute path`}}},
		{dir: "entry_missing", loaded: []string{"entry_missing.ok", "entry_missing.p"}, want: []Problem{
			{File: "testdata/entry_missing/actions/p.yaml", Line: 2, Warning: true, Msg: "entry point actions/not_built_yet not found; build or deploy it"}}},
		{dir: "entry_not_executable", loaded: []string{"entry_not_executable.ok", "entry_not_executable.p"}, want: []Problem{
			{File: "testdata/entry_not_executable/actions/p.yaml", Line: 2, Warning: true, Msg: "entry point actions/tool is not executable; chmod +x it"}}},
		{dir: "param_digit", want: []Problem{
			{File: "testdata/param_digit/actions/p.yaml", Line: 4, Msg: `parameter name "1st" starts with a digit`}}},
		{dir: "param_env_clash", want: []Problem{
			{File: "testdata/param_env_clash/actions/p.yaml", Line: 6, Msg: `parameters "my-name" and "my_name" both become ATTUNE_ACTION_MY_NAME; rename one`}}},
		{dir: "rule_operator", want: []Problem{
			{File: "testdata/rule_operator/rules/r.yaml", Line: 6, Msg: `unknown operator "eq"; use equals, not_equals, contains, greater_than, less_than or matches`}}},
		{dir: "rule_regexp", want: []Problem{
			{File: "testdata/rule_regexp/rules/r.yaml", Line: 7, Msg: `matches: invalid regular expression "2025-(01"`}}},
		{dir: "rule_no_trigger", want: []Problem{
			{File: "testdata/rule_no_trigger/rules/r.yaml", Msg: "missing trigger_ref"}}},
		{dir: "rule_no_action", want: []Problem{
			{File: "testdata/rule_no_action/rules/r.yaml", Msg: "missing action_ref"}}},
		{dir: "template_unclosed", want: []Problem{
			{File: "testdata/template_unclosed/rules/r.yaml", Line: 5, Msg: `action_params.message: unclosed "{{"`}}},
		{dir: "template_path", want: []Problem{
			{File: "testdata/template_path/rules/r.yaml", Line: 5, Msg: `action_params.message: {{ sensor.ref }}: unknown name "sensor"`}}},
	}
	for _, tt := range tests {
		t.Run(tt.dir, func(t *testing.T) {
			t.Parallel()

			p, problems := Load(filepath.Join("testdata", tt.dir))
			requireProblems(t, tt.want, problems)
			require.Equal(t, slices.ContainsFunc(tt.want, func(p Problem) bool { return !p.Warning }), HasErrors(problems))
			if tt.nilPack {
				require.Nil(t, p)
				return
			}
			require.NotNil(t, p)
			loaded := tt.loaded
			if loaded == nil {
				loaded = []string{tt.dir + ".ok"}
			}
			require.Equal(t, loaded, actionRefs(p), "the other files still load")
		})
	}
}

func TestLoadShippedPacks(t *testing.T) {
	t.Parallel()

	for _, dir := range []string{"core", "examples"} {
		p, problems := Load(dir)
		for _, prob := range problems {
			require.True(t, prob.Warning, "%s", prob)
			require.Contains(t, prob.Msg, "not found; build or deploy it", "only binaries not built yet may warn")
		}
		require.NotNil(t, p)
	}

	core, _ := Load("core")
	require.Equal(t, []string{"core.crontimer", "core.datetimetimer", "core.intervaltimer", "core.webhook"}, refs(core.Triggers, func(t *Trigger) string { return t.Ref }))
	require.Len(t, core.Sensors, 1)
	require.Equal(t, "core.timer_sensor", core.Sensors[0].Ref)
	require.Equal(t, RunnerNative, core.Sensors[0].RunnerType)
	require.Equal(t, "attune-core-timer-sensor", core.Sensors[0].EntryPoint)
	require.Equal(t, []string{"core.intervaltimer", "core.crontimer", "core.datetimetimer"}, core.Sensors[0].TriggerTypes)
	interval := core.Triggers[2]
	require.NoError(t, ValidateAgainst(interval.Parameters, map[string]any{"unit": "seconds", "interval": 1}))
	require.ErrorContains(t, ValidateAgainst(interval.Parameters, map[string]any{"unit": "weeks", "interval": 1}), `field "unit": must be one of`)
	require.ErrorContains(t, ValidateAgainst(interval.Parameters, map[string]any{"unit": "seconds", "interval": 0}), `field "interval": must be at least 1, got 0`)
	require.ErrorContains(t, ValidateAgainst(interval.Parameters, map[string]any{"unit": "seconds"}), `missing required field "interval"`)
	require.NoError(t, ValidateAgainst(interval.PayloadSchema, map[string]any{
		"type": "interval", "interval_seconds": 1, "fired_at": "2030-01-02T15:04:05Z", "execution_count": 3, "sensor_ref": "core.timer_sensor",
	}))
	require.NoError(t, ValidateAgainst(core.Triggers[0].Parameters, map[string]any{"expression": "*/5 * * * *"}))
	require.NoError(t, ValidateAgainst(core.Triggers[1].Parameters, map[string]any{"fire_at": "2030-01-02T15:04:05Z"}))

	ex, _ := Load("examples")
	require.Equal(t, []string{"examples.echo", "examples.fail", "examples.hello", "examples.sleep"}, actionRefs(ex))
	for _, a := range ex.Actions {
		if a.RunnerType == RunnerShell {
			fi, err := os.Stat(a.Path)
			require.NoError(t, err)
			require.NotZero(t, fi.Mode().Perm()&0o111, "%s must be committed executable", a.Path)
		}
	}
	hello := ex.Actions[2]
	require.Equal(t, RunnerNative, hello.RunnerType)
	got, err := hello.Parameters.Validate(nil)
	require.NoError(t, err)
	require.Equal(t, map[string]any{"name": "world", "count": 1}, got)
	require.NoError(t, ValidateAgainst(hello.ResultSchema, map[string]any{"greeting": "Hello, world!", "count": 1, "exec_id": "7"}))
	require.ErrorContains(t, ValidateAgainst(hello.ResultSchema, map[string]any{"count": 1}), `missing required field "greeting"`)

	sleep := ex.Actions[3]
	require.Equal(t, 2, sleep.TimeoutSeconds)
	require.Equal(t, 30, sleep.Parameters["seconds"].Default)
	require.Equal(t, FormatText, ex.Actions[0].OutputFormat)

	require.Len(t, ex.Rules, 1)
	rule := ex.Rules[0]
	require.Equal(t, "examples.every_second", rule.Ref)
	require.False(t, rule.Enabled, "the demo enables it")
	require.Equal(t, "core.intervaltimer", rule.TriggerRef)
	require.NoError(t, ValidateAgainst(interval.Parameters, rule.TriggerParams))
	require.Equal(t, "examples.echo", rule.ActionRef)
	rendered, err := RenderParams(rule.ActionParams, TemplateContext(9, "core.intervaltimer", map[string]any{"execution_count": 3}, rule.Ref))
	require.NoError(t, err)
	require.Equal(t, map[string]any{"message": "tick 3"}, rendered)
}

func TestLoadAll(t *testing.T) {
	t.Parallel()

	t.Run("shipped", func(t *testing.T) {
		t.Parallel()
		// packs/ is also a Go package: testdata and source files are skipped.
		ps, problems := LoadAll(".")
		require.False(t, HasErrors(problems), "%v", problems)
		require.Equal(t, []string{"core", "examples"}, refs(ps, func(p *Pack) string { return p.Ref }))
	})

	t.Run("testdata", func(t *testing.T) {
		t.Parallel()
		ps, problems := LoadAll("testdata")
		require.True(t, HasErrors(problems))
		var got []string
		for _, p := range ps {
			got = append(got, p.Ref)
		}
		require.NotContains(t, got, "bad_pack_ref")
		require.NotContains(t, got, "no_pack_yaml", "a directory without pack.yaml is not a pack")
		require.Contains(t, got, "good", "one bad pack does not stop the others")
		require.Contains(t, got, "bad_runner", "a pack with one bad file still loads")
		for _, p := range problems {
			require.NotContains(t, p.File, "no_pack_yaml")
		}
	})

	t.Run("duplicate pack ref", func(t *testing.T) {
		t.Parallel()
		base := t.TempDir()
		writeFile(t, filepath.Join(base, "a", "pack.yaml"), "ref: same\n")
		writeFile(t, filepath.Join(base, "b", "pack.yaml"), "label: B\nref: same\n")
		ps, problems := LoadAll(base)
		require.Len(t, ps, 1)
		require.Equal(t, filepath.Join(base, "a"), ps[0].Dir)
		requireProblems(t, []Problem{
			{File: filepath.Join(base, "a", "pack.yaml"), Line: 1, Warning: true, Msg: `pack ref "same" differs from its directory name "a"`},
			{File: filepath.Join(base, "b", "pack.yaml"), Line: 2, Warning: true, Msg: `pack ref "same" differs from its directory name "b"`},
			{File: filepath.Join(base, "b", "pack.yaml"), Line: 2, Msg: `duplicate pack ref "same", already used by ` + filepath.Join(base, "a", "pack.yaml")},
		}, problems)
	})

	t.Run("missing base", func(t *testing.T) {
		t.Parallel()
		ps, problems := LoadAll(filepath.Join(t.TempDir(), "nope"))
		require.Empty(t, ps)
		require.Len(t, problems, 1)
		require.Contains(t, problems[0].Msg, "cannot read the packs directory")
	})
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
	require.NoError(t, os.WriteFile(path, []byte(content), 0o644))
}

// TestLoadSymlinks builds its packs at run time: links pointing out of the
// repository do not survive git well.
func TestLoadSymlinks(t *testing.T) {
	t.Parallel()

	base := t.TempDir()
	outside := filepath.Join(base, "outside")
	writeFile(t, filepath.Join(outside, "tool"), "#!/bin/sh\n")
	require.NoError(t, os.Chmod(filepath.Join(outside, "tool"), 0o755))

	dir := filepath.Join(base, "lnk")
	actions := filepath.Join(dir, "actions")
	writeFile(t, filepath.Join(dir, "pack.yaml"), "ref: lnk\n")
	writeFile(t, filepath.Join(actions, "bin", "tool"), "#!/bin/sh\n")
	require.NoError(t, os.Chmod(filepath.Join(actions, "bin", "tool"), 0o755))
	for name, target := range map[string]string{
		"relative_out": "../../outside/tool",
		"absolute_out": filepath.Join(outside, "tool"),
		"dangling_out": "/nonexistent/attune/tool",
		"inside":       "bin/tool",
	} {
		require.NoError(t, os.Symlink(target, filepath.Join(actions, name)))
		writeFile(t, filepath.Join(actions, name+".yaml"), "name: "+name+"\nrunner_type: native\nentry_point: "+name+"\n")
	}
	writeFile(t, filepath.Join(actions, "dir.yaml"), "name: dir\nentry_point: bin\n")

	p, problems := Load(dir)
	f := func(name string) string { return filepath.Join(actions, name+".yaml") }
	requireProblems(t, []Problem{
		{File: f("absolute_out"), Line: 3, Msg: `entry_point "absolute_out" resolves to ` + filepath.Join(outside, "tool") + `, outside the pack's actions/ folder`},
		{File: f("dangling_out"), Line: 3, Msg: `entry_point "dangling_out" is a link to /nonexistent/attune/tool, outside the pack's actions/ folder`},
		{File: f("dir"), Line: 2, Msg: `entry_point "bin" is a directory`},
		{File: f("relative_out"), Line: 3, Msg: `entry_point "relative_out" resolves to ` + filepath.Join(outside, "tool")},
	}, problems)
	require.NotNil(t, p)
	require.Equal(t, []string{"lnk.inside"}, actionRefs(p))
	require.Equal(t, filepath.Join(actions, "bin", "tool"), p.Actions[0].Path, "symlinks resolved")

	t.Run("actions folder linked out", func(t *testing.T) {
		t.Parallel()
		dir := filepath.Join(base, "linked")
		writeFile(t, filepath.Join(dir, "pack.yaml"), "ref: linked\n")
		writeFile(t, filepath.Join(outside, "actions", "a.yaml"), "name: a\nentry_point: a.sh\n")
		writeFile(t, filepath.Join(outside, "actions", "a.sh"), "#!/bin/sh\n")
		require.NoError(t, os.Symlink(filepath.Join(outside, "actions"), filepath.Join(dir, "actions")))
		p, problems := Load(dir)
		requireProblems(t, []Problem{
			{File: filepath.Join(dir, "actions", "a.yaml"), Line: 2, Msg: "the pack's actions/ folder is a link to " + filepath.Join(outside, "actions") + ", outside the pack"},
		}, problems)
		require.Empty(t, p.Actions)
	})
}

func TestLoadWarnings(t *testing.T) {
	t.Parallel()

	dir := filepath.Join(t.TempDir(), "w")
	writeFile(t, filepath.Join(dir, "pack.yaml"), "ref: w\n")
	writeFile(t, filepath.Join(dir, "actions", "a.sh"), "#!/bin/sh\n")
	writeFile(t, filepath.Join(dir, "actions", "a.yaml"), `name: a
entry_point: a.sh
timeout_seconds: 5
timeout: 9
parameters:
  x:
    type: string
    minimum: 1
    position: 0
`)
	writeFile(t, filepath.Join(dir, "sensors", "s.sh"), "#!/bin/sh\n")
	writeFile(t, filepath.Join(dir, "sensors", "s.yaml"), "name: s\nentry_point: s.sh\n")
	p, problems := Load(dir)
	requireProblems(t, []Problem{
		{File: filepath.Join(dir, "actions", "a.yaml"), Line: 8, Warning: true, Msg: `parameter "x": minimum and maximum apply only to integer and number parameters`},
		{File: filepath.Join(dir, "actions", "a.yaml"), Line: 9, Warning: true, Msg: `parameter "x": unknown key position; it is ignored`},
		{File: filepath.Join(dir, "actions", "a.yaml"), Line: 4, Warning: true, Msg: "both timeout_seconds and timeout given; timeout is ignored"},
		{File: filepath.Join(dir, "sensors", "s.yaml"), Line: 1, Warning: true, Msg: "sensor has no trigger_types"},
	}, problems)
	require.Len(t, p.Actions, 1)
	require.Equal(t, 5, p.Actions[0].TimeoutSeconds)
	require.Len(t, p.Sensors, 1)
}

func TestLoadRuleChecks(t *testing.T) {
	t.Parallel()

	dir := filepath.Join(t.TempDir(), "r")
	writeFile(t, filepath.Join(dir, "pack.yaml"), "ref: r\n")
	writeFile(t, filepath.Join(dir, "actions", "a.sh"), "#!/bin/sh\n")
	writeFile(t, filepath.Join(dir, "actions", "a.yaml"), "name: a\nentry_point: a.sh\nparameters:\n  msg: {type: string}\n")
	writeFile(t, filepath.Join(dir, "triggers", "t.yaml"), "name: t\nparameters:\n  every: {type: integer, required: true}\n")
	writeFile(t, filepath.Join(dir, "rules", "bad_param.yaml"), "name: bad_param\ntrigger_ref: r.t\ntrigger_params: {every: 1}\naction_ref: r.a\naction_params:\n  msg: hi\n  nope: 1\n")
	writeFile(t, filepath.Join(dir, "rules", "bad_trigger_params.yaml"), "name: bad_trigger_params\ntrigger_ref: r.t\ntrigger_params:\n  every: soon\naction_ref: r.a\n")
	writeFile(t, filepath.Join(dir, "rules", "missing_refs.yaml"), "name: missing_refs\ntrigger_ref: r.nope\naction_ref: r.nothing\n")
	writeFile(t, filepath.Join(dir, "rules", "short_ref.yaml"), "name: short_ref\ntrigger_ref: t\naction_ref: r.a\n")
	writeFile(t, filepath.Join(dir, "rules", "condition_field.yaml"), "name: condition_field\ntrigger_ref: r.t\ntrigger_params: {every: 1}\naction_ref: r.a\nconditions:\n  - field: status\n    operator: equals\n    value: 1\n")
	writeFile(t, filepath.Join(dir, "rules", "ok.yaml"), "name: ok\ntrigger_ref: r.t\ntrigger_params: {every: 1}\naction_ref: r.a\naction_params: {msg: '{{ event.payload }}'}\n")
	f := func(name string) string { return filepath.Join(dir, "rules", name+".yaml") }

	p, problems := Load(dir)
	requireProblems(t, []Problem{
		{File: f("bad_param"), Line: 7, Msg: `action_params: unknown parameter "nope"; r.a declares: msg`},
		{File: f("bad_trigger_params"), Line: 4, Msg: `trigger_params do not fit trigger r.t: field "every": expected integer, got string`},
		{File: f("condition_field"), Line: 6, Msg: `condition on status: condition field "status" must start with "event.payload.", "payload." or "trigger." (e.g. event.payload.status)`},
		{File: f("missing_refs"), Line: 2, Msg: `trigger_ref "r.nope": this pack defines no such trigger`},
		{File: f("missing_refs"), Line: 3, Msg: `action_ref "r.nothing": this pack defines no such action`},
		{File: f("short_ref"), Line: 2, Msg: `trigger_ref "t" must be a full ref such as "core.intervaltimer"`},
	}, problems)
	require.Equal(t, []string{"r.ok"}, refs(p.Rules, func(r *Rule) string { return r.Ref }))
}

// TestLoadProblemPackDir: every problem names the directory of its pack, so
// registration can leave that pack out without walking the disk again.
func TestLoadProblemPackDir(t *testing.T) {
	t.Parallel()

	abs := func(dir string) string {
		t.Helper()
		a, err := filepath.Abs(dir)
		require.NoError(t, err)
		return a
	}

	t.Run("load", func(t *testing.T) {
		t.Parallel()
		// One bad file in a pack that loads, and a pack that does not load.
		for _, dir := range []string{"testdata/bad_runner", "testdata/bad_pack_ref", "testdata/no_pack_yaml"} {
			_, problems := Load(dir)
			require.NotEmpty(t, problems, dir)
			for _, p := range problems {
				require.Equal(t, abs(dir), p.PackDir, "%s", p)
			}
		}
	})

	t.Run("load all", func(t *testing.T) {
		t.Parallel()
		ps, problems := LoadAll("testdata")
		require.NotEmpty(t, problems)
		for _, p := range problems {
			require.Equal(t, abs("testdata"), filepath.Dir(p.PackDir), "%s", p)
			require.True(t, strings.HasPrefix(abs(p.File), p.PackDir+string(filepath.Separator)), "%s is not inside %s", p.File, p.PackDir)
		}
		// A pack that loads with a bad file: its problems carry its Dir.
		i := slices.IndexFunc(ps, func(p *Pack) bool { return p.Ref == "bad_runner" })
		require.GreaterOrEqual(t, i, 0)
		require.True(t, slices.ContainsFunc(problems, func(p Problem) bool { return p.PackDir == ps[i].Dir }))
	})

	t.Run("duplicate pack ref", func(t *testing.T) {
		t.Parallel()
		base := t.TempDir()
		writeFile(t, filepath.Join(base, "a", "pack.yaml"), "ref: same\n")
		writeFile(t, filepath.Join(base, "b", "pack.yaml"), "ref: same\n")
		_, problems := LoadAll(base)
		require.Len(t, problems, 3)
		require.Equal(t, filepath.Join(base, "b"), problems[2].PackDir, "the duplicate spoils the second pack, not the first")
	})

	t.Run("no pack", func(t *testing.T) {
		t.Parallel()
		_, problems := LoadAll(filepath.Join(t.TempDir(), "nope"))
		require.Len(t, problems, 1)
		require.Empty(t, problems[0].PackDir)
	})
}
