package packs

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/attune-system/attune/schema/schematest"
)

// TestSetRuleEnabled: a change is written and notified when the caller
// commits; asking for the state a rule is already in changes and notifies
// nothing; an unknown rule is ErrUnknownRule.
func TestSetRuleEnabled(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := schematest.URL(t)
	pool, err := pgxpool.New(ctx, url)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	ps, problems := writePacks(t, t.TempDir(), twoPacks)
	require.NoError(t, RegisterPool(ctx, pool, ps, problems).Err())

	listener, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	t.Cleanup(func() { listener.Close(context.Background()) })
	_, err = listener.Exec(ctx, "LISTEN "+pgx.Identifier{RuleChannel}.Sanitize())
	require.NoError(t, err)
	// notified waits briefly for one notification; "" when none came.
	notified := func(wait time.Duration) string {
		t.Helper()
		wctx, cancel := context.WithTimeout(ctx, wait)
		defer cancel()
		n, err := listener.WaitForNotification(wctx)
		if err != nil {
			require.ErrorIs(t, err, context.DeadlineExceeded)
			return ""
		}
		return n.Payload
	}
	set := func(ref string, enabled bool) (bool, error) {
		t.Helper()
		var changed bool
		err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) (err error) {
			changed, err = SetRuleEnabled(ctx, tx, ref, enabled)
			return err
		})
		return changed, err
	}
	enabled := func() bool {
		t.Helper()
		var on bool
		require.NoError(t, pool.QueryRow(ctx, "SELECT enabled FROM attune.rule WHERE ref = 'alpha.r'").Scan(&on))
		return on
	}
	require.True(t, enabled(), "rules are enabled unless their YAML says otherwise")

	changed, err := set("alpha.r", false)
	require.NoError(t, err)
	require.True(t, changed)
	require.False(t, enabled())
	require.Equal(t, "alpha.r", notified(5*time.Second))

	changed, err = set("alpha.r", false)
	require.NoError(t, err)
	require.False(t, changed, "already disabled")
	require.Empty(t, notified(200*time.Millisecond), "no change, no notification")

	// Rolled back, the change is neither written nor notified.
	tx, err := pool.Begin(ctx)
	require.NoError(t, err)
	changed, err = SetRuleEnabled(ctx, tx, "alpha.r", true)
	require.NoError(t, err)
	require.True(t, changed)
	require.NoError(t, tx.Rollback(ctx))
	require.False(t, enabled())
	require.Empty(t, notified(200*time.Millisecond))

	changed, err = set("alpha.r", true)
	require.NoError(t, err)
	require.True(t, changed)
	require.True(t, enabled())
	require.Equal(t, "alpha.r", notified(5*time.Second))

	_, err = set("alpha.nope", true)
	require.ErrorIs(t, err, ErrUnknownRule)
	require.EqualError(t, err, `unknown rule "alpha.nope"`)
}
