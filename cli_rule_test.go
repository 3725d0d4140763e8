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
// rule, and name an unknown rule with a hint.
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

	r := b.attune(t, "rule", "enable", "r.nope")
	require.Error(t, r.err)
	require.Equal(t, `attune: unknown rule "r.nope"; attune rule list shows the registered rules`, r.line())
}
