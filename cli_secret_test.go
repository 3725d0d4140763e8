package main

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestCLISecret(t *testing.T) {
	t.Parallel()
	b := setupCLI(t)

	// secrets: set from stdin, list without values, delete.
	key := "ATTUNE_SECRETS_KEY=" + "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
	r := b.attuneWith(t, b.env(key), "s3cr3t-value\n", "secret", "set", "api_token", "--pack", "c")
	require.NoError(t, r.err, r.stderr)
	require.Equal(t, "secret api_token stored (pack scope c)\n", r.stdout)
	r = b.attuneWith(t, b.env(key), "", "-j", "secret", "list")
	require.NoError(t, r.err)
	require.NotContains(t, r.stdout, "s3cr3t")
	var secrets []map[string]any
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &secrets))
	require.Len(t, secrets, 1)
	require.Equal(t, []string{"name", "scope", "scope_ref", "updated"}, sortedKeys(secrets[0]))
	r = b.attuneWith(t, b.env(key), "v\n", "secret", "set", "global_token")
	require.NoError(t, r.err, r.stderr)
	require.Equal(t, "secret global_token stored (global scope)\n", r.stdout)
	require.Equal(t, "secret api_token deleted\n", b.ok(t, "secret", "delete", "api_token", "--pack", "c"))
	r = b.attune(t, "secret", "delete", "api_token", "--pack", "c")
	require.Equal(t, "attune: no pack secret api_token for c; attune secret list shows them", r.line())
}
