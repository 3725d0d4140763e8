package main

import (
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestCLIPackRemove(t *testing.T) {
	t.Parallel()
	b := setupCLI(t)

	// A queued execution holds the pack.
	id := b.execute(t, "c.echo", "--param", "n=1", "--param", "s=x")
	r := b.attune(t, "pack", "remove", "c")
	require.Equal(t, 1, exitCode(r.err))
	require.Equal(t, "attune: pack has unfinished executions: 1 execution(s) of pack c are queued or running; cancel them or let them finish", r.line())
	b.ok(t, "execution", "cancel", strconv.FormatInt(id, 10))

	require.Equal(t, "removed pack c: 5 actions, 0 sensors, 0 triggers, 0 rules (its files stay on disk; pack register would add it again)\n",
		b.ok(t, "pack", "remove", "c"))
	var n int
	require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT (SELECT count(*) FROM attune.pack) + (SELECT count(*) FROM attune.action)").Scan(&n))
	require.Zero(t, n)
	require.Equal(t, 1, b.executions(t), "history stays")

	r = b.attune(t, "pack", "remove", "c")
	require.Equal(t, `attune: no pack "c" is registered; attune pack list shows them`, r.line())
	b.ok(t, "pack", "register")
}
