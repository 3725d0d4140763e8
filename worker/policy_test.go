package worker

import (
	"context"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/attune-system/attune/jobs"
)

func init() {
	for name, body := range map[string]string{
		"nap.sh": "sleep \"$ATTUNE_ACTION_SECONDS\"\n",
		"limited.yaml": `name: limited
entry_point: nap.sh
output_format: text
concurrency: {limit: 2}
parameters:
  seconds: {type: number, default: 0.5}
`,
		"per_host.yaml": `name: per_host
entry_point: nap.sh
output_format: text
concurrency: {limit: 1, key: "{{ parameters.host }}"}
parameters:
  seconds: {type: number, default: 0.5}
  host: {type: string, required: true}
`,
		"exclusive.yaml": `name: exclusive
entry_point: nap.sh
output_format: text
concurrency: {limit: 1, on_limit: cancel}
parameters:
  seconds: {type: number, default: 2}
`,
		"rated.yaml": `name: rated
entry_point: nap.sh
output_format: text
rate_limit: {count: 2, per: 2s}
parameters:
  seconds: {type: number, default: 0}
`,
		"backoff.yaml": `name: backoff
entry_point: helper
retry: {max: 2, delay: 1s, backoff: exponential, on: [failed]}
` + helperParams,
		"limited_retry.yaml": `name: limited_retry
entry_point: helper
concurrency: {limit: 1}
retry: {max: 1, delay: 1s}
` + helperParams,
		"reap_retry.yaml": `name: reap_retry
entry_point: helper
retry: {max: 2, delay: 30s, backoff: exponential, max_delay: 3s, on: [abandoned]}
` + helperParams,
		"rated_slow.yaml": `name: rated_slow
entry_point: nap.sh
output_format: text
rate_limit: {count: 1, per: 4s}
parameters:
  seconds: {type: number, default: 0}
`,
		"rated_exclusive.yaml": `name: rated_exclusive
entry_point: nap.sh
output_format: text
concurrency: {limit: 1, on_limit: cancel}
rate_limit: {count: 1, per: 2s}
parameters:
  seconds: {type: number, default: 0}
`,
		"timeout_only.yaml": `name: timeout_only
entry_point: helper
retry: {max: 2, delay: 1s, on: [timeout]}
` + helperParams,
	} {
		testActions[name] = body
	}
}

// maxOverlap is the largest number of executions running at once,
// from their started and finished times.
func maxOverlap(es []*jobs.Execution) int {
	type edge struct {
		at    time.Time
		delta int
	}
	var edges []edge
	for _, e := range es {
		edges = append(edges, edge{*e.StartedAt, 1}, edge{*e.FinishedAt, -1})
	}
	sort.Slice(edges, func(i, j int) bool {
		if edges[i].at.Equal(edges[j].at) {
			return edges[i].delta < edges[j].delta // a finish before a start at the same instant
		}
		return edges[i].at.Before(edges[j].at)
	})
	n, most := 0, 0
	for _, e := range edges {
		n += e.delta
		most = max(most, n)
	}
	return most
}

func TestConcurrencyLimitQueuesAndWakes(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	var ids []int64
	for range 6 {
		ids = append(ids, b.enqueue(t, "t.limited", nil, nil))
	}
	// The last one waits, and says why.
	require.Eventually(t, func() bool {
		e, err := jobs.Get(b.ctx, b.pool, ids[5])
		require.NoError(t, err)
		return e.WaitingReason != nil
	}, 10*time.Second, 20*time.Millisecond)
	e, err := jobs.Get(b.ctx, b.pool, ids[5])
	require.NoError(t, err)
	require.Equal(t, "waiting: concurrency limit 2 of t.limited reached", *e.WaitingReason)

	start := time.Now()
	var done []*jobs.Execution
	for _, id := range ids {
		e := b.wait(t, id)
		require.Equal(t, jobs.StatusCompleted, e.Status, deref(e.Error))
		require.Equal(t, 1, e.Attempt, "waiting costs no attempt")
		require.Nil(t, e.WaitingReason)
		done = append(done, e)
	}
	require.Equal(t, 2, maxOverlap(done))
	// Three rounds of 0.5 s, woken by the releases, not by a poll.
	require.Less(t, time.Since(start), 5*time.Second)
	var held int
	require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT count(*) FROM attune.policy_seat WHERE execution_id IS NOT NULL").Scan(&held))
	require.Zero(t, held, "every slot is freed")
}

func TestConcurrencyLimitPerKey(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	var ids []int64
	for i := range 6 {
		host := []string{"web-1", "web-2"}[i%2]
		ids = append(ids, b.enqueue(t, "t.per_host", map[string]any{"host": host}, nil))
	}
	require.Eventually(t, func() bool {
		e, err := jobs.Get(b.ctx, b.pool, ids[4])
		require.NoError(t, err)
		return e.WaitingReason != nil
	}, 10*time.Second, 20*time.Millisecond)
	e, err := jobs.Get(b.ctx, b.pool, ids[4])
	require.NoError(t, err)
	require.Equal(t, "waiting: concurrency limit 1 of t.per_host (key web-1) reached", *e.WaitingReason)

	byKey := map[int][]*jobs.Execution{}
	var all []*jobs.Execution
	for i, id := range ids {
		e := b.wait(t, id)
		require.Equal(t, jobs.StatusCompleted, e.Status, deref(e.Error))
		byKey[i%2] = append(byKey[i%2], e)
		all = append(all, e)
	}
	require.Equal(t, 1, maxOverlap(byKey[0]))
	require.Equal(t, 1, maxOverlap(byKey[1]))
	require.Equal(t, 2, maxOverlap(all))
}

func TestConcurrencyLimitCancels(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	first := b.enqueue(t, "t.exclusive", nil, nil)
	b.waitStatus(t, first, jobs.StatusRunning)
	second := b.execute(t, "t.exclusive", nil, nil)
	require.Equal(t, jobs.StatusCancelled, second.Status)
	require.Equal(t, "Cancelled: concurrency limit 1 of t.exclusive reached (on_limit: cancel)", *second.Error)
	require.Nil(t, second.StartedAt)
	require.Equal(t, jobs.StatusCompleted, b.wait(t, first).Status)
}

func TestConcurrencySlotFreedByCancel(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	first := b.enqueue(t, "t.per_host", map[string]any{"host": "h", "seconds": 30}, nil)
	b.waitStatus(t, first, jobs.StatusRunning)
	second := b.enqueue(t, "t.per_host", map[string]any{"host": "h", "seconds": 0}, nil)
	require.Eventually(t, func() bool {
		e, err := jobs.Get(b.ctx, b.pool, second)
		require.NoError(t, err)
		return e.WaitingReason != nil
	}, 10*time.Second, 20*time.Millisecond)
	_, err := jobs.Cancel(b.ctx, b.pool, first)
	require.NoError(t, err)
	start := time.Now()
	require.Equal(t, jobs.StatusCompleted, b.wait(t, second).Status)
	require.Less(t, time.Since(start), 10*time.Second, "woken by the release, not the fallback")
}

func TestRateLimitSchedulesTheNextStart(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	// The limit counts admissions: the starts it reserves, by the
	// database's clock. They are read while they are kept (a later
	// admission drops those past the window); the processes start a moment
	// after theirs, each by as much as the machine's load makes it, so
	// their times would measure the load (CI: 1.944 s between a first and
	// a third process start whose reservations were 2 s apart).
	reserved := map[int64]time.Time{}
	stop := make(chan struct{})
	polled := make(chan struct{})
	go func() {
		defer close(polled)
		for {
			rows, err := b.pool.Query(b.ctx, "SELECT execution_id, start_at FROM attune.policy_start WHERE key LIKE 'rate:t.rated:%'")
			if err == nil {
				var id int64
				var at time.Time
				_, _ = pgx.ForEachRow(rows, []any{&id, &at}, func() error {
					if old, ok := reserved[id]; !ok || at.Before(old) {
						reserved[id] = at
					}
					return nil
				})
			}
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	var ids []int64
	for range 4 {
		ids = append(ids, b.enqueue(t, "t.rated", nil, nil))
	}
	var starts []time.Time
	for _, id := range ids {
		e := b.wait(t, id)
		require.Equal(t, jobs.StatusCompleted, e.Status, deref(e.Error))
		require.Equal(t, 1, e.Attempt)
		starts = append(starts, *e.StartedAt)
	}
	close(stop)
	<-polled
	var at []time.Time
	for _, id := range ids {
		r, ok := reserved[id]
		require.True(t, ok, "execution %d's reserved start was seen", id)
		at = append(at, r)
	}
	sortTimes := func(ts []time.Time) { sort.Slice(ts, func(i, j int) bool { return ts[i].Before(ts[j]) }) }
	sortTimes(at)
	sortTimes(starts)
	// At most 2 starts in any 2 s window.
	require.GreaterOrEqual(t, at[2].Sub(at[0]), 2*time.Second)
	require.GreaterOrEqual(t, at[3].Sub(at[1]), 2*time.Second)
	for i := range at {
		require.False(t, starts[i].Before(at[i]), "no process before its reserved start")
	}
	require.Less(t, starts[3].Sub(starts[0]), 5*time.Second, "scheduled for the free time, not polled")
}

func TestRetryPolicyBacksOff(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	id := b.enqueue(t, "t.backoff", map[string]any{"helper": "exit3"}, nil)
	// After the first failure, show says when the next attempt runs.
	require.Eventually(t, func() bool {
		e, err := jobs.Get(b.ctx, b.pool, id)
		require.NoError(t, err)
		return e.NextAttemptAt != nil
	}, 10*time.Second, 10*time.Millisecond)
	start := time.Now()
	e := b.wait(t, id)
	require.Equal(t, jobs.StatusFailed, e.Status)
	require.Equal(t, 3, e.Attempt)
	// 1 s, then 2 s.
	require.GreaterOrEqual(t, time.Since(start), 2500*time.Millisecond)

	// retry.on: [timeout] does not retry a failure.
	e = b.execute(t, "t.timeout_only", map[string]any{"helper": "exit3"}, nil)
	require.Equal(t, jobs.StatusFailed, e.Status)
	require.Equal(t, 1, e.Attempt)
	require.Equal(t, 3, e.MaxAttempts)
}

func TestConcurrencySlotFreedBetweenAttempts(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	flaky := b.enqueue(t, "t.limited_retry", map[string]any{"helper": "hang"}, &jobs.Options{TimeoutSeconds: 1})
	b.waitStatus(t, flaky, jobs.StatusRunning)
	other := b.enqueue(t, "t.limited_retry", map[string]any{"helper": "json"}, nil)
	f, o := b.wait(t, flaky), b.wait(t, other)
	require.Equal(t, jobs.StatusTimeout, f.Status)
	require.Equal(t, 2, f.Attempt)
	require.Equal(t, jobs.StatusCompleted, o.Status, deref(o.Error))
	require.Equal(t, 1, o.Attempt)
	// The other ran while the flaky one waited its retry delay: the slot
	// is not held between attempts, and the retry took it again after.
	require.True(t, o.StartedAt.Before(*f.StartedAt), "other started %s, flaky's last attempt %s", o.StartedAt, f.StartedAt)
	require.False(t, f.StartedAt.Before(*o.FinishedAt), "the retry waited for the slot")
	var held int
	require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT count(*) FROM attune.policy_seat WHERE execution_id IS NOT NULL").Scan(&held))
	require.Zero(t, held)
}

// ghostRunning makes id look started by a worker on another host that then
// died mid-run: the row and its River job say running on "ghost".
func ghostRunning(t *testing.T, b *testBundle, id int64) {
	t.Helper()
	_, err := b.pool.Exec(b.ctx, `INSERT INTO attune.worker (name, hostname, pid) VALUES ('ghost', 'elsewhere', 1)
		ON CONFLICT (name) DO NOTHING`)
	require.NoError(t, err)
	_, err = b.pool.Exec(b.ctx, `UPDATE attune.execution SET status = 'running', worker = 'ghost', attempt = 1, started_at = now() WHERE id = $1`, id)
	require.NoError(t, err)
	_, err = b.pool.Exec(b.ctx, `UPDATE attune.river_job SET state = 'running', attempt = 1, attempted_at = now(), attempted_by = '{ghost}'
		WHERE id = (SELECT job_id FROM attune.execution WHERE id = $1)`, id)
	require.NoError(t, err)
}

// The reaper retries a dead worker's attempt as the worker itself would:
// only when retry.on allows an abandoned attempt, after the policy's delay
// (capped by max_delay).
func TestReaperFollowsRetryPolicy(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	later := &jobs.Options{ScheduledAt: time.Now().Add(time.Hour)} // not for this replica to take first
	retried := b.enqueue(t, "t.reap_retry", map[string]any{"helper": "json"}, later)
	failedOnly := b.enqueue(t, "t.backoff", map[string]any{"helper": "json"}, later) // retry.on: [failed]
	ghostRunning(t, b, retried)
	ghostRunning(t, b, failedOnly)
	require.NoError(t, b.srv.reap(b.ctx, "ghost", 0))

	// retry.on: [failed] does not retry an abandoned attempt, though
	// attempts are left.
	e, err := jobs.Get(b.ctx, b.pool, failedOnly)
	require.NoError(t, err)
	require.Equal(t, jobs.StatusAbandoned, e.Status)
	require.Equal(t, 3, e.MaxAttempts)
	require.Contains(t, *e.Error, "retry.on does not list abandoned")

	// retry.on: [abandoned]: back to requested on a new job that waits
	// delay 30 s × 2^0 capped to max_delay 3 s.
	e, err = jobs.Get(b.ctx, b.pool, retried)
	require.NoError(t, err)
	require.Equal(t, jobs.StatusRequested, e.Status)
	var wait time.Duration
	var state string
	require.NoError(t, b.pool.QueryRow(b.ctx, `SELECT j.scheduled_at - now(), j.state::text FROM attune.river_job j
		JOIN attune.execution e ON e.job_id = j.id WHERE e.id = $1`, retried).Scan(&wait, &state))
	require.Equal(t, "scheduled", state)
	require.Greater(t, wait, 2*time.Second)
	require.LessOrEqual(t, wait, 3*time.Second)
	require.NotNil(t, e.NextAttemptAt, "show says when the next attempt runs")

	e = b.wait(t, retried)
	require.Equal(t, jobs.StatusCompleted, e.Status, deref(e.Error))
	require.Equal(t, 2, e.Attempt)
}

// reservation reads when execution id is reserved to start (zero: none).
func reservation(t *testing.T, b *testBundle, id int64) time.Time {
	t.Helper()
	var at *time.Time
	require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT min(start_at) FROM attune.policy_start WHERE execution_id = $1", id).Scan(&at))
	if at == nil {
		return time.Time{}
	}
	return *at
}

// A reserved start that never happens holds no slot of the window: a
// cancelled execution's reservation goes, and those reserved after it move
// up in order; one the concurrency limit cancels gives its back too.
func TestRateLimitReservationGivenBack(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	// One start per 4 s: a starts now, b and c are reserved 4 s and 8 s on
	// (in either order).
	a := b.enqueue(t, "t.rated_slow", nil, nil)
	first := b.wait(t, a)
	require.Equal(t, jobs.StatusCompleted, first.Status, deref(first.Error))
	bID := b.enqueue(t, "t.rated_slow", nil, nil)
	cID := b.enqueue(t, "t.rated_slow", nil, nil)
	require.Eventually(t, func() bool {
		return !reservation(t, b, bID).IsZero() && !reservation(t, b, cID).IsZero()
	}, 10*time.Second, 10*time.Millisecond)
	// Both were fetched at once: whichever was admitted first has the
	// earlier time; that one is cancelled.
	if reservation(t, b, cID).Before(reservation(t, b, bID)) {
		bID, cID = cID, bID
	}
	bAt, cAt := reservation(t, b, bID), reservation(t, b, cID)
	require.Equal(t, 4*time.Second, cAt.Sub(bAt))

	_, err := jobs.Cancel(b.ctx, b.pool, bID)
	require.NoError(t, err)
	require.True(t, reservation(t, b, bID).IsZero(), "the cancelled execution's reservation is gone")
	require.True(t, reservation(t, b, cID).Equal(bAt), "c moved up to b's time: %s, was %s", reservation(t, b, cID), cAt)
	e, err := jobs.Get(b.ctx, b.pool, cID)
	require.NoError(t, err)
	require.NotNil(t, e.WaitingReason)
	require.Contains(t, *e.WaitingReason, "starts at "+bAt.UTC().Format("2006-01-02T15:04:05.000Z"))

	c := b.wait(t, cID)
	require.Equal(t, jobs.StatusCompleted, c.Status, deref(c.Error))
	// The limit counts admissions (the starts it reserves, by the
	// database's clock); the processes start a moment after theirs, each
	// by as much as the machine's load makes it, so their times would
	// measure the load.
	require.GreaterOrEqual(t, reservation(t, b, cID).Sub(reservation(t, b, a)), 4*time.Second, "the limit holds")
	require.False(t, c.StartedAt.Before(reservation(t, b, cID)), "c's process started at its reserved time or after")
	var n int
	require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT count(*) FROM attune.policy_start WHERE key LIKE 'rate:t.rated_slow:%'").Scan(&n))
	require.Equal(t, 2, n, "a's and c's starts, not b's")

	// on_limit: cancel. The next start is reserved 2 s after the first;
	// when its time comes the only slot is held (made up here: the limit
	// and the rate are on one action, so a real holder would need a start
	// of its own) and the limit cancels it: its reservation goes.
	done := b.wait(t, b.enqueue(t, "t.rated_exclusive", nil, nil))
	require.Equal(t, jobs.StatusCompleted, done.Status, deref(done.Error))
	next := b.enqueue(t, "t.rated_exclusive", nil, nil)
	require.Eventually(t, func() bool { return !reservation(t, b, next).IsZero() }, 10*time.Second, 10*time.Millisecond)
	// A holder holds a seat (018_policy_seats.sql).
	_, err = b.pool.Exec(b.ctx, `INSERT INTO attune.policy_seat (key, n, execution_id) VALUES ('concurrency:action:t.rated_exclusive:', 1, $1)
		ON CONFLICT (key, n) DO UPDATE SET execution_id = EXCLUDED.execution_id`, done.ID)
	require.NoError(t, err)
	e = b.wait(t, next)
	require.Equal(t, jobs.StatusCancelled, e.Status)
	require.True(t, strings.HasPrefix(deref(e.Error), "Cancelled: concurrency limit 1"), deref(e.Error))
	require.Nil(t, e.StartedAt)
	require.True(t, reservation(t, b, next).IsZero(), "a start the limit cancelled holds no reservation")
}

// A waiter whose job this replica holds is started by the release's
// wake-up notification: no snooze, no second fetch from River.
func TestConcurrencyWaiterWokenInProcess(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	holder := b.enqueue(t, "t.per_host", map[string]any{"host": "h", "seconds": 0.3}, nil)
	b.waitStatus(t, holder, jobs.StatusRunning)
	waiter := b.enqueue(t, "t.per_host", map[string]any{"host": "h", "seconds": 0}, nil)
	h, w := b.wait(t, holder), b.wait(t, waiter)
	require.Equal(t, jobs.StatusCompleted, w.Status, deref(w.Error))
	require.False(t, w.StartedAt.Before(*h.FinishedAt), "the limit holds")
	var snoozes *int
	require.NoError(t, b.pool.QueryRow(b.ctx, `SELECT (j.metadata ->> 'snoozes')::int FROM attune.river_job j
		JOIN attune.execution e ON e.job_id = j.id WHERE e.id = $1`, waiter).Scan(&snoozes))
	require.Nil(t, snoozes, "the waiter never went back to River")
}

// An action whose stored policy admission cannot apply (written by hand,
// past pack check) neither runs nor spends an attempt: its job goes back
// to River for a minute, with the error logged, while the replica runs
// the rest.
func TestBrokenPolicyWaitsWithoutAnAttempt(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	_, err := b.pool.Exec(b.ctx, `UPDATE attune.action SET policy = '{"concurrency": {"limit": "many"}}' WHERE ref = 't.limited'`)
	require.NoError(t, err)
	// Handed a seat by a release before its policy broke
	// (019_policy_handover.sql): it gives the seat back, and its job is
	// not made available again at once for holding one.
	var broken int64
	require.NoError(t, pgx.BeginFunc(b.ctx, b.pool, func(tx pgx.Tx) error {
		var err error
		if broken, err = jobs.Enqueue(b.ctx, tx, "t.limited", nil, nil); err != nil {
			return err
		}
		_, err = tx.Exec(b.ctx, "INSERT INTO attune.policy_seat (key, n, execution_id) VALUES ('concurrency:action:t.limited:', 1, $1)", broken)
		return err
	}))
	fine := b.enqueue(t, "t.script", nil, nil)
	require.Equal(t, jobs.StatusCompleted, b.wait(t, fine).Status)
	require.Eventually(t, func() bool {
		var state string
		var in time.Duration
		require.NoError(t, b.pool.QueryRow(b.ctx, `SELECT j.state::text, coalesce(j.scheduled_at - now(), '0')
			FROM attune.river_job j JOIN attune.execution e ON e.job_id = j.id WHERE e.id = $1`, broken).Scan(&state, &in))
		return state == "scheduled" && in > 30*time.Second
	}, 10*time.Second, 20*time.Millisecond, "snoozed for a minute")
	e, err := jobs.Get(b.ctx, b.pool, broken)
	require.NoError(t, err)
	require.Equal(t, jobs.StatusRequested, e.Status)
	require.Zero(t, e.Attempt, "no attempt spent")
	require.Contains(t, b.logs.String(), `"msg":"checking an execution's policies failed; trying again in a minute"`)
	require.Contains(t, b.logs.String(), `invalid input syntax for type integer`)
	var seats int
	require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT count(*) FROM attune.policy_seat WHERE execution_id = $1", broken).Scan(&seats))
	require.Zero(t, seats, "the seat it was handed goes back")
}

// The seats of a keyed limit's keys go with Prune once nobody holds or
// waits for them; a key in use keeps its seats, and a pruned key works
// again at its next admission.
func TestPruneIdleConcurrencyKeys(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	for _, host := range []string{"h1", "h2"} {
		e := b.wait(t, b.enqueue(t, "t.per_host", map[string]any{"host": host, "seconds": 0}, nil))
		require.Equal(t, jobs.StatusCompleted, e.Status)
	}
	busy := b.enqueue(t, "t.per_host", map[string]any{"host": "h3", "seconds": 30}, nil)
	b.waitStatus(t, busy, jobs.StatusRunning)
	keys := func() []string {
		t.Helper()
		rows, err := b.pool.Query(b.ctx, "SELECT DISTINCT key FROM attune.policy_seat ORDER BY key")
		require.NoError(t, err)
		ks, err := pgx.CollectRows(rows, pgx.RowTo[string])
		require.NoError(t, err)
		return ks
	}
	prefix := "concurrency:action:t.per_host:"
	require.Equal(t, []string{prefix + "h1", prefix + "h2", prefix + "h3"}, keys())

	_, ok, err := Prune(b.ctx, b.pool, 0, b.srv.log)
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, []string{prefix + "h3"}, keys(), "the key in use keeps its seat")
	require.Contains(t, b.logs.String(), `"idle_concurrency_keys":2`)

	again := b.wait(t, b.enqueue(t, "t.per_host", map[string]any{"host": "h1", "seconds": 0}, nil))
	require.Equal(t, jobs.StatusCompleted, again.Status)
	require.Equal(t, []string{prefix + "h1", prefix + "h3"}, keys())
	_, err = jobs.Cancel(b.ctx, b.pool, busy)
	require.NoError(t, err)
}

// A process's end gives its concurrency seats back before its result is
// written (claimer.release, releaseSent): a settle that began first would
// hold the execution's row, the release would skip it, and the seat would
// stay held until the settle committed, the next claim finding the key
// full. A trigger that runs first in each settle's update notes whether
// the execution still held a seat.
func TestSeatsGivenBackBeforeTheSettle(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{env: []string{"ATTUNE_MAX_CONCURRENT_EXECUTIONS=2"}})
	_, err := b.pool.Exec(b.ctx, `
		CREATE TABLE public.seat_at_settle (execution_id bigint, held boolean);
		CREATE FUNCTION public.note_seat_at_settle() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			INSERT INTO public.seat_at_settle
			VALUES (NEW.id, EXISTS (SELECT 1 FROM attune.policy_seat st WHERE st.execution_id = NEW.id));
			RETURN NEW;
		END $$;
		-- Named to fire before execution_policy_release, which frees what is left.
		CREATE TRIGGER a_seat_at_settle BEFORE UPDATE OF status ON attune.execution
		FOR EACH ROW WHEN (OLD.status = 'running' AND NEW.status <> 'running')
		EXECUTE FUNCTION public.note_seat_at_settle();`)
	require.NoError(t, err)
	var ids []int64
	for range 20 {
		ids = append(ids, b.enqueue(t, "t.limited", map[string]any{"seconds": 0}, nil))
	}
	for _, id := range ids {
		e := b.wait(t, id)
		require.Equal(t, jobs.StatusCompleted, e.Status, deref(e.Error))
	}
	var settles, held int
	require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT count(*), count(*) FILTER (WHERE held) FROM public.seat_at_settle").Scan(&settles, &held))
	require.Equal(t, len(ids), settles)
	require.Zero(t, held, "settles that found their execution still holding a seat")
}

// A release said to be carried by a claim that never comes (the Work call
// waiting for the process slot gave up) is sent on its own: the settle
// waiting for it (releaseSent) returns because the release ran, not
// because its wait ran out.
func TestReleaseWithoutItsClaimIsSentOnItsOwn(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	// Scheduled an hour ahead, so that the replica leaves it alone; claimed
	// here, by a worker of another name, holding a seat.
	id := b.enqueue(t, "t.limited", nil, &jobs.Options{ScheduledAt: time.Now().Add(time.Hour)})
	_, err := b.pool.Exec(b.ctx, "INSERT INTO attune.worker (name, hostname, pid) VALUES ('release-test', 'test', 1)")
	require.NoError(t, err)
	var admitted, holds bool
	require.NoError(t, b.pool.QueryRow(b.ctx, `SELECT c.admitted, c.holds_slots FROM attune.execution e,
		attune.claim_many(ARRAY[e.id], ARRAY[1], ARRAY[e.job_id], 'release-test', NULL, NULL) c WHERE e.id = $1`, id).Scan(&admitted, &holds))
	require.True(t, admitted)
	require.True(t, holds)

	c := newClaimer("release-test", b.pool)
	ctx, cancel := context.WithCancel(b.ctx)
	go c.run(ctx)
	t.Cleanup(func() { cancel(); <-c.batches.stopped })
	w := &executor{claimer: c}
	sent := c.release(id, 1)
	w.releaseSent(b.ctx, sent, true) // said to follow, no claim comes
	select {
	case <-sent:
	default:
		t.Fatal("releaseSent returned before the release was sent")
	}
	var seats int
	require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT count(*) FROM attune.policy_seat WHERE execution_id = $1", id).Scan(&seats))
	require.Zero(t, seats, "the release freed the seat")
}
