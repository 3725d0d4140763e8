package worker

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestForgetOldWorkers: the heartbeat deletes workers inactive for over 7
// days, and only those.
func TestForgetOldWorkers(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{env: []string{"ATTUNE_HEARTBEAT_INTERVAL=200ms"}})
	_, err := b.pool.Exec(b.ctx, `INSERT INTO attune.worker (name, hostname, pid, status, heartbeat_at) VALUES
		('ancient', 'h', 1, 'inactive', now() - interval '8 days'),
		('lastweek', 'h', 2, 'inactive', now() - interval '6 days')`)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		var n int
		require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT count(*) FROM attune.worker WHERE name = 'ancient'").Scan(&n))
		return n == 0
	}, 10*time.Second, 50*time.Millisecond)
	var names []string
	rows, err := b.pool.Query(b.ctx, "SELECT name FROM attune.worker ORDER BY name")
	require.NoError(t, err)
	for rows.Next() {
		var n string
		require.NoError(t, rows.Scan(&n))
		names = append(names, n)
	}
	require.NoError(t, rows.Err())
	require.Equal(t, []string{"lastweek", b.cfg.WorkerName}, names)
}
