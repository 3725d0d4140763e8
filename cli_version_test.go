package main

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestCLIVersion(t *testing.T) {
	t.Parallel()
	b := setupCLI(t)

	out := b.ok(t, "version")
	require.Regexp(t, `^attune \S+ \(commit \S+, go1\.\S+\)\n$`, out)
	var v map[string]any
	b.okJSON(t, &v, "version")
	require.Equal(t, []string{"commit", "go", "version"}, sortedKeys(v))
}
