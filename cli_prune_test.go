package main

import (
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestCLIPrune(t *testing.T) {
	t.Parallel()
	b := setupCLI(t)
	old := b.execute(t, "c.echo", "--param", "n=1", "--param", "s=x")
	b.ok(t, "execution", "cancel", strconv.FormatInt(old, 10))
	queued := b.execute(t, "c.echo", "--param", "n=2", "--param", "s=y")
	_, err := b.pool.Exec(b.ctx, "UPDATE attune.execution SET finished_at = now() - interval '31 days' WHERE id = $1", old)
	require.NoError(t, err)

	out := b.ok(t, "prune", "--dry-run")
	require.True(t, strings.HasPrefix(out, "would delete 1 executions and 0 events\n"), out)
	require.Regexp(t, `(?m)^`+strconv.FormatInt(old, 10)+`\s+c\.echo\s+cancelled\s`, out)
	require.Equal(t, 2, b.executions(t), "a dry run deletes nothing")

	require.Equal(t, "deleted 1 executions and 0 events\n", b.ok(t, "prune"))
	require.Equal(t, 1, b.executions(t), "the queued one %d stays", queued)
	r := b.attuneWith(t, b.env("ATTUNE_RETENTION=-1h"), "", "prune")
	require.Equal(t, 1, exitCode(r.err), r.stderr)
	require.Contains(t, r.line(), "ATTUNE_RETENTION")
}
