package main

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// TestCLIWorkerListHidesOldWorkers: a row per serve run would grow the list
// forever; workers inactive for over a day show only with --all.
func TestCLIWorkerListHidesOldWorkers(t *testing.T) {
	t.Parallel()
	b := setupCLI(t)
	_, err := b.pool.Exec(b.ctx, `INSERT INTO attune.worker (name, hostname, pid, status, capabilities, started_at, heartbeat_at) VALUES
		('live', 'h', 1, 'active', '{}', now(), now()),
		('recent', 'h', 2, 'inactive', '{}', now() - interval '3 hours', now() - interval '2 hours'),
		('old', 'h', 3, 'inactive', '{}', now() - interval '3 days', now() - interval '2 days')`)
	require.NoError(t, err)

	out := b.ok(t, "worker", "list")
	require.Regexp(t, `(?m)^live\s+active\s+\S+ ago\s+0\s+\{\}$`, out)
	require.Regexp(t, `(?m)^recent\s+inactive\s+2h0m0s ago\s+`, out)
	require.NotContains(t, out, "old")
	require.Contains(t, out, "(1 workers inactive for over 24 h not shown; --all lists them)")

	out = b.ok(t, "worker", "list", "--all")
	require.Regexp(t, `(?m)^old\s+inactive\s+48h0m0s ago\s+`, out)
	require.NotContains(t, out, "not shown")

	var rows []map[string]any
	b.okJSON(t, &rows, "worker", "list")
	require.Len(t, rows, 2)
	b.okJSON(t, &rows, "worker", "list", "--all")
	require.Len(t, rows, 3)
}
