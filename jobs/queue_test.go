package jobs_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/attune-system/attune/jobs"
)

// TestQueueDepths counts what waits per runtime queue: due and scheduled
// apart, the oldest due one's wait, nothing for what runs or finished.
func TestQueueDepths(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var runner string
	require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT runner_type FROM attune.action WHERE ref = 't.noop'").Scan(&runner))
	for range 2 {
		_, err := sqlEnqueue(b.ctx, b.pool, "t.noop", `{}`, `{}`)
		require.NoError(t, err)
	}
	later := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	_, err := sqlEnqueue(b.ctx, b.pool, "t.noop", `{}`, `{"scheduled_at": "`+later+`"}`)
	require.NoError(t, err)
	cancelled, err := sqlEnqueue(b.ctx, b.pool, "t.noop", `{}`, `{}`)
	require.NoError(t, err)
	_, err = jobs.Cancel(b.ctx, b.pool, cancelled)
	require.NoError(t, err)

	qs, err := jobs.QueueDepths(b.ctx, b.pool)
	require.NoError(t, err)
	require.Len(t, qs, 1)
	require.Equal(t, runner, qs[0].Queue)
	require.Equal(t, 2, qs[0].Due)
	require.Equal(t, 1, qs[0].Scheduled)
	require.NotNil(t, qs[0].OldestDueSeconds)
	require.GreaterOrEqual(t, *qs[0].OldestDueSeconds, 0.0)
}
