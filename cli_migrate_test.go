package main

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestCLIMigrate(t *testing.T) {
	t.Parallel()
	b := setupCLI(t)

	// migrate on an emptied database, then again.
	_, err := b.pool.Exec(b.ctx, "DROP SCHEMA attune CASCADE")
	require.NoError(t, err)
	require.Regexp(t, `^applied River migrations \[.+\] and attune migrations 001_core, 002_enqueue`, b.ok(t, "migrate"))
	require.Equal(t, "schema attune is up to date\n", b.ok(t, "migrate"))
	var m map[string]any
	b.okJSON(t, &m, "migrate")
	require.Equal(t, map[string]any{"applied": []any{}, "river_versions": []any{}}, m)
}
