package main

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/attune-system/attune/schema/schematest"
)

// TestCLIRuleEnable: rule enable and disable say whether they changed the
// rule, their state survives pack register, which says so, and an unknown
// rule is named with a hint.
func TestCLIRuleEnable(t *testing.T) {
	t.Parallel()
	b := &cliBundle{ctx: context.Background(), url: schematest.URL(t), packs: t.TempDir()}
	for path, body := range map[string]string{
		"r/pack.yaml":       "ref: r\n",
		"r/triggers/t.yaml": "name: t\n",
		"r/actions/a.yaml":  "name: a\nentry_point: a.sh\n",
		"r/actions/a.sh":    "#!/bin/sh\n",
		"r/rules/on_t.yaml": "name: on_t\ntrigger_ref: r.t\naction_ref: r.a\n",
	} {
		path = filepath.Join(b.packs, path)
		require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
		require.NoError(t, os.WriteFile(path, []byte(body), 0o755))
	}
	b.ok(t, "pack", "register")

	require.Equal(t, "rule r.on_t disabled\n", b.ok(t, "rule", "disable", "r.on_t"))
	require.Equal(t, "rule r.on_t was already disabled\n", b.ok(t, "rule", "disable", "r.on_t"))
	var res map[string]any
	b.okJSON(t, &res, "rule", "enable", "r.on_t")
	require.Equal(t, map[string]any{"ref": "r.on_t", "enabled": true, "changed": true}, res)

	// The state set here survives pack register while the rule's YAML
	// keeps saying what it said.
	b.ok(t, "rule", "disable", "r.on_t")
	require.Equal(t, "registered pack r: 1 actions, 0 sensors, 1 triggers, 1 rules\n"+
		"  rule r.on_t stays disabled (set by attune rule disable; its YAML says enabled: true)\n", b.ok(t, "pack", "register"))
	var reg []map[string]any
	b.okJSON(t, &reg, "pack", "register")
	require.Len(t, reg, 1)
	require.Equal(t, []any{map[string]any{"ref": "r.on_t", "enabled": false}}, reg[0]["kept_rules"])
	var list []map[string]any
	b.okJSON(t, &list, "rule", "list")
	require.Equal(t, false, list[0]["enabled"])

	r := b.attune(t, "rule", "enable", "r.nope")
	require.Error(t, r.err)
	require.Equal(t, `attune: unknown rule "r.nope"; attune rule list shows the registered rules`, r.line())
}
