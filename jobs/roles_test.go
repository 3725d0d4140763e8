package jobs_test

import (
	"context"
	"fmt"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/attune-system/attune/jobs"
)

// enqueueOnlyGrants are the README's grants ("Database roles") for an
// application that may enqueue executions and nothing else.
var enqueueOnlyGrants = []string{
	"GRANT USAGE ON SCHEMA attune TO %s",
	"GRANT SELECT ON attune.action, attune.runtime TO %s",
	"GRANT INSERT ON attune.execution, attune.execution_secret, attune.river_job TO %s",
	"GRANT SELECT (id) ON attune.river_job TO %s", // INSERT ... RETURNING id
	"GRANT USAGE ON ALL SEQUENCES IN SCHEMA attune TO %s",
}

// TestEnqueueOnlyRole: an application role with the README's enqueue-only
// grants can call attune.enqueue in its own transaction, and cannot read
// what executions produced.
func TestEnqueueOnlyRole(t *testing.T) {
	t.Parallel()
	b := setup(t)
	run(t, b.startWorker(t, "w1"))

	role := "attune_enq_" + strconv.FormatInt(time.Now().UnixNano(), 36)
	_, err := b.pool.Exec(b.ctx, "CREATE ROLE "+role+" LOGIN PASSWORD 'enq-pass'")
	require.NoError(t, err)
	t.Cleanup(func() {
		_, _ = b.pool.Exec(context.Background(), "DROP OWNED BY "+role)
		_, _ = b.pool.Exec(context.Background(), "DROP ROLE "+role)
	})
	for _, g := range enqueueOnlyGrants {
		_, err := b.pool.Exec(b.ctx, fmt.Sprintf(g, role))
		require.NoError(t, err, g)
	}
	u, err := url.Parse(b.url)
	require.NoError(t, err)
	u.User = url.UserPassword(role, "enq-pass")
	conn, err := pgx.Connect(b.ctx, u.String())
	require.NoError(t, err)
	defer conn.Close(b.ctx)

	id, err := sqlEnqueue(b.ctx, conn, "t.params", `{"n": 3}`, `{}`)
	require.NoError(t, err)
	e := waitStatus(t, b.pool, id, 30*time.Second, "completed", "failed")
	require.Equal(t, "completed", e.Status)

	_, err = conn.Exec(b.ctx, "SELECT stdout FROM attune.execution")
	require.ErrorContains(t, err, "permission denied")
	_, err = jobs.Get(b.ctx, conn, id)
	require.ErrorContains(t, err, "permission denied")
}
