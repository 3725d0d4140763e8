package worker

import (
	"context"
	"io"
	"log/slog"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/attune-system/attune/schema/schematest"
)

func TestPruneKeepsWhatRunsAndWhatIsYoung(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := schematest.Pool(t)
	_, err := pool.Exec(ctx, `INSERT INTO attune.pack (ref) VALUES ('p');
		INSERT INTO attune.action (ref, pack_ref, name, runner_type, entry_point, path, policy) VALUES
			('p.a', 'p', 'a', 'shell', 'a.sh', '/bin/true', '{}'),
			('p.short', 'p', 'short', 'shell', 'a.sh', '/bin/true', '{"retention": "3600000ms"}'),
			('p.forever', 'p', 'forever', 'shell', 'a.sh', '/bin/true', '{"retention": "0ms"}')`)
	require.NoError(t, err)
	exec := func(action, status string, age time.Duration, event *int64) int64 {
		t.Helper()
		var id int64
		// The public options cannot name an event (only rules do), so the
		// link to one is set with the rest of the made-up history.
		require.NoError(t, pool.QueryRow(ctx, "SELECT attune.enqueue($1)", action).Scan(&id))
		_, err := pool.Exec(ctx, `UPDATE attune.execution SET status = $2,
			finished_at = CASE WHEN $2 IN ('completed', 'failed') THEN now() - $3::interval END,
			started_at = now() - $3::interval, event_id = $4 WHERE id = $1`, id, status, interval(age), event)
		require.NoError(t, err)
		return id
	}
	event := func(age time.Duration) int64 {
		var id int64
		require.NoError(t, pool.QueryRow(ctx, "INSERT INTO attune.event (trigger_ref, created_at) VALUES ('p.t', now() - $1::interval) RETURNING id", interval(age)).Scan(&id))
		return id
	}
	const day = 24 * time.Hour
	oldEvent, keptEvent, youngEvent := event(40*day), event(40*day), event(time.Hour)
	oldDone := exec("p.a", "completed", 40*day, nil)
	exec("p.a", "completed", day, &keptEvent)
	exec("p.a", "running", 40*day, nil)
	exec("p.a", "requested", 40*day, nil)
	shortDone := exec("p.short", "failed", 2*time.Hour, nil)
	exec("p.forever", "completed", 400*day, nil)

	cands, res, err := PruneDry(ctx, pool, 30*day, 10)
	require.NoError(t, err)
	require.Equal(t, PruneResult{Executions: 2, Events: 1}, res)
	require.Len(t, cands, 2)
	require.ElementsMatch(t, []int64{oldDone, shortDone}, []int64{cands[0].ID, cands[1].ID})

	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	res, ok, err := Prune(ctx, pool, 30*day, log)
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, PruneResult{Executions: 2, Events: 1}, res)
	var left []int64
	rows, err := pool.Query(ctx, "SELECT id FROM attune.event ORDER BY id")
	require.NoError(t, err)
	for rows.Next() {
		var id int64
		require.NoError(t, rows.Scan(&id))
		left = append(left, id)
	}
	require.NoError(t, rows.Err())
	require.Equal(t, []int64{keptEvent, youngEvent}, left)
	require.NotContains(t, left, oldEvent)
	var n int
	require.NoError(t, pool.QueryRow(ctx, "SELECT count(*) FROM attune.execution").Scan(&n))
	require.Equal(t, 4, n)

	// 0 keeps everything but what an action's own retention lets go.
	res, _, err = Prune(ctx, pool, 0, log)
	require.NoError(t, err)
	require.Equal(t, PruneResult{}, res)

	// One replica at a time.
	conn, err := pool.Acquire(ctx)
	require.NoError(t, err)
	defer conn.Release()
	_, err = conn.Exec(ctx, "SELECT pg_advisory_lock($1)", int64(pruneLockKey))
	require.NoError(t, err)
	_, ok, err = Prune(ctx, pool, 30*day, log)
	require.NoError(t, err)
	require.False(t, ok)
	_, err = conn.Exec(ctx, "SELECT pg_advisory_unlock($1)", int64(pruneLockKey))
	require.NoError(t, err)
}

func TestPruneAfterRiverCleanedItsJobs(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	e := b.execute(t, "t.run", map[string]any{"helper": "json"}, nil)
	// As River's JobCleaner would, long after: the execution stays readable.
	_, err := b.pool.Exec(b.ctx, "DELETE FROM attune.river_job")
	require.NoError(t, err)
	_, err = b.pool.Exec(b.ctx, "UPDATE attune.execution SET finished_at = now() - interval '40 days' WHERE id = $1", e.ID)
	require.NoError(t, err)
	res, ok, err := Prune(b.ctx, b.pool, 30*24*time.Hour, slog.New(slog.NewTextHandler(io.Discard, nil)))
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, 1, res.Executions)
}

// TestPruneLarge measures a prune of 100,000 finished executions and the
// latency of enqueues while it runs:
// ATTUNE_MEASURE=1 go test ./worker -run TestPruneLarge -v
func TestPruneLarge(t *testing.T) {
	if os.Getenv("ATTUNE_MEASURE") == "" {
		t.Skip("a measurement: ATTUNE_MEASURE=1 go test ./worker -run TestPruneLarge -v")
	}
	ctx := context.Background()
	pool := schematest.Pool(t)
	_, err := pool.Exec(ctx, `INSERT INTO attune.pack (ref) VALUES ('p');
		INSERT INTO attune.action (ref, pack_ref, name, runner_type, entry_point, path) VALUES ('p.a', 'p', 'a', 'shell', 'a.sh', '/bin/true')`)
	require.NoError(t, err)
	const n = 100_000
	_, err = pool.Exec(ctx, `INSERT INTO attune.execution (action_ref, status, stdout, attempt, created_at, started_at, finished_at)
		SELECT 'p.a', 'completed', repeat('x', 1000), 1, now() - interval '40 days', now() - interval '40 days', now() - interval '40 days'
		FROM generate_series(1, $1)`, n)
	require.NoError(t, err)
	_, err = pool.Exec(ctx, "ANALYZE attune.execution")
	require.NoError(t, err)

	enqueue := func(k int) []time.Duration {
		var ds []time.Duration
		for range k {
			start := time.Now()
			_, err := pool.Exec(ctx, "SELECT attune.enqueue('p.a')")
			require.NoError(t, err)
			ds = append(ds, time.Since(start))
		}
		slices.Sort(ds)
		return ds
	}
	before := enqueue(200)
	done := make(chan struct{})
	var during []time.Duration
	go func() {
		defer close(done)
		for {
			select {
			case <-done:
				return
			default:
			}
			start := time.Now()
			if _, err := pool.Exec(ctx, "SELECT attune.enqueue('p.a')"); err != nil {
				return
			}
			during = append(during, time.Since(start))
		}
	}()
	start := time.Now()
	res, ok, err := Prune(ctx, pool, 30*24*time.Hour, slog.New(slog.NewTextHandler(io.Discard, nil)))
	took := time.Since(start)
	done <- struct{}{}
	<-done
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, n, res.Executions)
	slices.Sort(during)
	pct := func(ds []time.Duration, p float64) time.Duration { return ds[int(float64(len(ds)-1)*p)] }
	t.Logf("pruned %d executions in %s (%.0f rows/s); enqueue latency before p50 %s p99 %s, during (%d enqueues) p50 %s p99 %s max %s",
		res.Executions, took.Round(time.Millisecond), float64(res.Executions)/took.Seconds(),
		pct(before, 0.5), pct(before, 0.99), len(during), pct(during, 0.5), pct(during, 0.99), during[len(during)-1])
}

// An event is history of the executions it led to: it goes with the last
// of them, whichever retention pruned them, and never while one is kept.
// An event that led to none goes by ATTUNE_RETENTION.
func TestPruneEventsGoWithTheirLastExecution(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := schematest.Pool(t)
	_, err := pool.Exec(ctx, `INSERT INTO attune.pack (ref) VALUES ('p');
		INSERT INTO attune.action (ref, pack_ref, name, runner_type, entry_point, path, policy) VALUES
			('p.a', 'p', 'a', 'shell', 'a.sh', '/bin/true', '{}'),
			('p.short', 'p', 'short', 'shell', 'a.sh', '/bin/true', '{"retention": "3600000ms"}')`)
	require.NoError(t, err)
	event := func(age time.Duration) int64 {
		var id int64
		require.NoError(t, pool.QueryRow(ctx, "INSERT INTO attune.event (trigger_ref, created_at) VALUES ('p.t', now() - $1::interval) RETURNING id", interval(age)).Scan(&id))
		return id
	}
	exec := func(action string, age time.Duration, event int64) {
		t.Helper()
		var id int64
		require.NoError(t, pool.QueryRow(ctx, "SELECT attune.enqueue($1)", action).Scan(&id))
		_, err := pool.Exec(ctx, `UPDATE attune.execution SET status = 'completed', started_at = now() - $2::interval,
			finished_at = now() - $2::interval, event_id = $3 WHERE id = $1`, id, interval(age), event)
		require.NoError(t, err)
	}
	events := func() []int64 {
		rows, err := pool.Query(ctx, "SELECT id FROM attune.event ORDER BY id")
		require.NoError(t, err)
		var ids []int64
		for rows.Next() {
			var id int64
			require.NoError(t, rows.Scan(&id))
			ids = append(ids, id)
		}
		require.NoError(t, rows.Err())
		return ids
	}
	const day = 24 * time.Hour
	// Its only execution is past the action's 1 h: both go.
	shortOnly := event(3 * time.Hour)
	exec("p.short", 2*time.Hour, shortOnly)
	// One execution goes, the other (default retention) stays: so does it.
	mixed := event(3 * time.Hour)
	exec("p.short", 2*time.Hour, mixed)
	exec("p.a", 2*time.Hour, mixed)
	// Its execution is young: it stays, however old the event.
	young := event(40 * day)
	exec("p.short", 10*time.Minute, young)
	// No execution ever: ATTUNE_RETENTION decides.
	lonely, lonelyYoung := event(40*day), event(3*time.Hour)

	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	_, dry, err := PruneDry(ctx, pool, 30*day, 10)
	require.NoError(t, err)
	require.Equal(t, PruneResult{Executions: 2, Events: 2}, dry)
	res, _, err := Prune(ctx, pool, 30*day, log)
	require.NoError(t, err)
	require.Equal(t, dry, res, "the dry run counted what went")
	require.Equal(t, []int64{mixed, young, lonelyYoung}, events())
	require.NotContains(t, events(), shortOnly)
	require.NotContains(t, events(), lonely)

	// ATTUNE_RETENTION=0 keeps events that led to nothing, but an action's
	// own retention still takes its events along.
	keptForever := event(400 * day)
	gone := event(3 * time.Hour)
	exec("p.short", 2*time.Hour, gone)
	_, dry, err = PruneDry(ctx, pool, 0, 10)
	require.NoError(t, err)
	require.Equal(t, PruneResult{Executions: 1, Events: 1}, dry)
	res, _, err = Prune(ctx, pool, 0, log)
	require.NoError(t, err)
	require.Equal(t, dry, res)
	require.Equal(t, []int64{mixed, young, lonelyYoung, keptForever}, events())
}
