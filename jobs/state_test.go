package jobs_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/attune-system/attune/jobs"
)

var allStatuses = []string{
	jobs.StatusRequested, jobs.StatusScheduled, jobs.StatusRunning, jobs.StatusCanceling,
	jobs.StatusCompleted, jobs.StatusFailed, jobs.StatusTimeout, jobs.StatusCancelled, jobs.StatusAbandoned,
}

// TestStateMachine drives each function of the state machine
// (schema/migrations/005_state_machine.sql) from every status and checks
// where it moves the execution: the table in the package doc, as SQL.
func TestStateMachine(t *testing.T) {
	t.Parallel()
	b := setup(t)

	// An execution of t.noop in status from, attempt 1 of max by worker w.
	at := func(from string, max int) int64 {
		t.Helper()
		id, err := sqlEnqueue(b.ctx, b.pool, "t.noop", `{}`, `{}`)
		require.NoError(t, err)
		_, err = b.pool.Exec(b.ctx, `UPDATE attune.execution SET status = $2, worker = 'w', attempt = 1, max_attempts = $3
			WHERE id = $1`, id, from, max)
		require.NoError(t, err)
		// Its River job runs attempt 1 on w: the token settle checks.
		_, err = b.pool.Exec(b.ctx, `UPDATE attune.river_job SET state = 'running', attempt = 1, attempted_by = '{w}',
			attempted_at = now() WHERE id = (SELECT job_id FROM attune.execution WHERE id = $1)`, id)
		require.NoError(t, err)
		return id
	}
	jobOf := func(id int64) int64 {
		t.Helper()
		var job int64
		require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT job_id FROM attune.execution WHERE id = $1", id).Scan(&job))
		return job
	}
	_, err := b.pool.Exec(b.ctx, `INSERT INTO attune.worker (name, hostname, pid, status) VALUES ('w2', 'h', 1, 'active')`)
	require.NoError(t, err)
	status := func(id int64) string {
		t.Helper()
		e, err := jobs.Get(b.ctx, b.pool, id)
		require.NoError(t, err)
		return e.Status
	}
	// settle writes one attempt of worker w with outcome, retried or not.
	settle := func(id int64, worker, outcome string, retry bool) {
		t.Helper()
		_, err := b.pool.Exec(b.ctx, `SELECT attune.settle(ARRAY[$1::bigint], ARRAY[$5::bigint], ARRAY[1], ARRAY[$2::text],
			ARRAY[NULL::jsonb], ARRAY[0], ARRAY['out'], ARRAY[''], ARRAY[false], ARRAY[false], ARRAY[NULL::text],
			ARRAY[$3::boolean], ARRAY[now()], ARRAY[now()], $4, $4)`,
			id, outcome, retry, worker, jobOf(id))
		require.NoError(t, err)
	}
	queued := func(s string) bool { return s == jobs.StatusRequested || s == jobs.StatusScheduled }

	for _, from := range allStatuses {
		t.Run(from, func(t *testing.T) {
			// cancel_execution: queued → cancelled, running → canceling.
			id := at(from, 1)
			want := from
			switch {
			case queued(from):
				want = jobs.StatusCancelled
			case from == jobs.StatusRunning:
				want = jobs.StatusCanceling
			}
			got, err := jobs.Cancel(b.ctx, b.pool, id)
			require.NoError(t, err)
			require.Equal(t, want, got, "Cancel returns the new status")
			require.Equal(t, want, status(id), "cancel_execution")

			// claim: queued or running → running, for the new attempt.
			id = at(from, 1)
			want = from
			if queued(from) || from == jobs.StatusRunning {
				want = jobs.StatusRunning
			}
			_, err = b.pool.Exec(b.ctx, "SELECT * FROM attune.claim($1, 'w2', 2, $2)", id, jobOf(id))
			require.NoError(t, err)
			require.Equal(t, want, status(id), "claim")

			// fail_unrunnable (after claim refused): queued or running →
			// failed when the action is gone, anything else unchanged.
			id = at(from, 1)
			_, err = b.pool.Exec(b.ctx, "SELECT attune.fail_unrunnable($1, 'w', $2)", id, jobOf(id))
			require.NoError(t, err)
			require.Equal(t, from, status(id), "fail_unrunnable while the action exists")
			_, err = b.pool.Exec(b.ctx, "UPDATE attune.execution SET action_ref = 't.gone' WHERE id = $1", id)
			require.NoError(t, err)
			want = from
			if queued(from) || from == jobs.StatusRunning {
				want = jobs.StatusFailed
			}
			_, err = b.pool.Exec(b.ctx, "SELECT attune.fail_unrunnable($1, 'w', $2)", id, jobOf(id))
			require.NoError(t, err)
			require.Equal(t, want, status(id), "fail_unrunnable")

			// settle: running or canceling → the outcome; a retry goes back
			// to requested unless a cancel came first. Another worker's
			// attempt writes nothing.
			for _, c := range []struct {
				outcome string
				retry   bool
				want    string
			}{
				{jobs.StatusCompleted, false, jobs.StatusCompleted},
				{jobs.StatusTimeout, false, jobs.StatusTimeout},
				{jobs.StatusRequested, true, jobs.StatusRequested}, // a failed attempt with attempts left
			} {
				id = at(from, 2)
				want = from
				// A queued row whose job runs this attempt is a claim lost
				// to a database crash: the result is written all the same.
				if from == jobs.StatusRunning || from == jobs.StatusCanceling || queued(from) {
					want = c.want
					if from == jobs.StatusCanceling && c.retry {
						want = jobs.StatusCancelled
					}
				}
				settle(id, "someone-else", c.outcome, c.retry)
				require.Equal(t, from, status(id), "settle by another worker")
				settle(id, "w", c.outcome, c.retry)
				require.Equal(t, want, status(id), "settle %s retry=%v", c.outcome, c.retry)
			}

			// record_output: no status change; output only while running.
			id = at(from, 1)
			_, err = b.pool.Exec(b.ctx, "SELECT attune.record_output($1, 'w', 1, 'so far', '')", id)
			require.NoError(t, err)
			e, err := jobs.Get(b.ctx, b.pool, id)
			require.NoError(t, err)
			require.Equal(t, from, e.Status, "record_output")
			require.Equal(t, from == jobs.StatusRunning || from == jobs.StatusCanceling, deref(e.Stdout) == "so far")

			// reap_worker: running → abandoned, or requested with attempts
			// left; canceling → cancelled.
			for _, max := range []int{1, 2} {
				id = at(from, max)
				want = from
				switch {
				case from == jobs.StatusRunning && max > 1:
					want = jobs.StatusRequested
				case from == jobs.StatusRunning:
					want = jobs.StatusAbandoned
				case from == jobs.StatusCanceling:
					want = jobs.StatusCancelled
				}
				_, err = b.pool.Exec(b.ctx, "SELECT attune.reap_worker('w', 'w', NULL)")
				require.NoError(t, err)
				require.Equal(t, want, status(id), "reap_worker with max_attempts %d", max)
			}
		})
	}
}

// TestClaimAgainAfterLostReply: a worker whose claim committed but whose
// connection dropped before the reply (a database restart) claims again
// with the same attempt and must get the execution, or it gives the job
// back and the execution stays running with nothing running it. Another
// worker at that attempt gets nothing.
func TestClaimAgainAfterLostReply(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, err := b.pool.Exec(b.ctx, `INSERT INTO attune.worker (name, hostname, pid, status)
		VALUES ('w-lost', 'h', 1, 'active'), ('w-other', 'h', 2, 'active')`)
	require.NoError(t, err)
	id, err := sqlEnqueue(b.ctx, b.pool, "t.noop", `{}`, `{}`)
	require.NoError(t, err)
	var job int64
	require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT job_id FROM attune.execution WHERE id = $1", id).Scan(&job))
	claims := func(worker string, attempt int) int {
		t.Helper()
		var n int
		require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT count(*) FROM attune.claim($1, $2, $3, $4)", id, worker, attempt, job).Scan(&n))
		return n
	}
	require.Equal(t, 1, claims("w-lost", 1), "the first claim")
	require.Equal(t, 1, claims("w-lost", 1), "the same claim again, its reply lost")
	require.Equal(t, 0, claims("w-other", 1), "another worker at the same attempt")
	e, err := jobs.Get(b.ctx, b.pool, id)
	require.NoError(t, err)
	require.Equal(t, jobs.StatusRunning, e.Status)
	require.Equal(t, "w-lost", deref(e.Worker))
	require.Equal(t, 1, e.Attempt)
}

// Statuses, which the API and the console list, holds every status.
func TestStatusesListed(t *testing.T) {
	require.ElementsMatch(t, allStatuses, jobs.Statuses)
}

// TestClaimMany checks attune.claim_many (schema/migrations/017_claim_many.sql):
// each row claims as claim does, an execution whose
// action or pack has a policy is admitted by policy_admit in the same
// statement (or comes back refused, unclaimed), and the slots of the
// attempts given back are freed first, so that a claim in the same
// statement may take them.
func TestClaimMany(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, err := b.pool.Exec(b.ctx, `INSERT INTO attune.worker (name, hostname, pid, status) VALUES ('w', 'h', 1, 'active'), ('w-other', 'h', 2, 'active')`)
	require.NoError(t, err)
	type queued struct{ id, job int64 }
	enqueue := func(ref, params string) queued {
		t.Helper()
		id, err := sqlEnqueue(b.ctx, b.pool, ref, params, `{}`)
		require.NoError(t, err)
		q := queued{id: id}
		require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT job_id FROM attune.execution WHERE id = $1", id).Scan(&q.job))
		return q
	}
	setPolicy := func(table, ref, policy string) {
		t.Helper()
		_, err := b.pool.Exec(b.ctx, "UPDATE attune."+table+" SET policy = $2 WHERE ref = $1", ref, policy)
		require.NoError(t, err)
	}
	// claimAs claims qs (attempt 1) as worker, after giving back the slots
	// of released (attempt 1), and says per River job what came back.
	claimAs := func(worker string, qs []queued, released ...queued) map[int64]string {
		t.Helper()
		var ids, jobIDs, rel []int64
		var attempts, relAttempts []int
		for _, q := range qs {
			ids, jobIDs, attempts = append(ids, q.id), append(jobIDs, q.job), append(attempts, 1)
		}
		for _, q := range released {
			rel, relAttempts = append(rel, q.id), append(relAttempts, 1)
		}
		rows, err := b.pool.Query(b.ctx, `SELECT job_id, admitted, cancelled, coalesce(reason, ''), coalesce(array_to_string(retry_on, ','), ''),
				holds_slots, action_ref FROM attune.claim_many($1, $2, $3, $4, $5, $6)`,
			ids, attempts, jobIDs, worker, rel, relAttempts)
		require.NoError(t, err)
		got := map[int64]string{}
		for rows.Next() {
			var job int64
			var admitted, cancelled, holds bool
			var reason, retryOn string
			var ref *string
			require.NoError(t, rows.Scan(&job, &admitted, &cancelled, &reason, &retryOn, &holds, &ref))
			require.Equal(t, admitted, ref != nil, "a claimed row carries its action, a refused one nothing")
			switch {
			case cancelled:
				got[job] = "cancelled"
			case !admitted:
				got[job] = reason
			case holds:
				got[job] = "claimed, holding slots"
			case retryOn != "":
				got[job] = "claimed, retry on " + retryOn
			default:
				got[job] = "claimed"
			}
		}
		require.NoError(t, rows.Err())
		return got
	}
	claimMany := func(qs []queued, released ...queued) map[int64]string {
		t.Helper()
		return claimAs("w", qs, released...)
	}
	status := func(q queued) string {
		t.Helper()
		e, err := jobs.Get(b.ctx, b.pool, q.id)
		require.NoError(t, err)
		return e.Status
	}

	// No policy, or one admission has nothing to do with (retention, a
	// retry without "on"): claimed. A concurrency limit and a retry
	// policy's "on" go through admission, in the same statement.
	plain := enqueue("t.noop", `{}`)
	setPolicy("action", "t.fail", `{"retention": "3600000ms", "retry": {"max": 2, "delay": "1000ms", "backoff": "constant"}}`)
	retried := enqueue("t.fail", `{}`)
	setPolicy("action", "t.params", `{"concurrency": {"limit": 1, "on_limit": "queue"}}`)
	limited := enqueue("t.params", `{"n": 1}`)
	second := enqueue("t.params", `{"n": 2}`)
	setPolicy("action", "t.hang", `{"retry": {"max": 1, "backoff": "constant", "on": ["timeout"]}}`)
	retryOn := enqueue("t.hang", `{"pidfile": "/nonexistent"}`)
	// Another job than the execution's claims nothing, as with claim.
	stale := enqueue("t.noop", `{}`)
	stale.job = plain.job

	waits := "waiting: concurrency limit 1 of t.params reached"
	got := claimMany([]queued{plain, retried, limited, second, retryOn, stale})
	require.Equal(t, map[int64]string{plain.job: "claimed", retried.job: "claimed", limited.job: "claimed, holding slots",
		second.job: waits, retryOn.job: "claimed, retry on timeout"}, got)
	require.Equal(t, jobs.StatusRunning, status(plain))
	require.Equal(t, jobs.StatusRunning, status(retried))
	require.Equal(t, jobs.StatusRunning, status(limited))
	require.Equal(t, jobs.StatusRunning, status(retryOn))
	require.Equal(t, jobs.StatusRequested, status(second), "refused: not claimed")
	require.Equal(t, jobs.StatusRequested, status(stale))

	// Only the running attempt's own worker gives its slot back: another
	// worker's release, or another attempt's, frees nothing.
	require.Equal(t, map[int64]string{second.job: waits}, claimAs("w-other", []queued{second}, limited))
	_, err = b.pool.Exec(b.ctx, "UPDATE attune.execution SET attempt = 2 WHERE id = $1", limited.id)
	require.NoError(t, err)
	require.Equal(t, map[int64]string{second.job: waits}, claimMany([]queued{second}, limited))
	_, err = b.pool.Exec(b.ctx, "UPDATE attune.execution SET attempt = 1 WHERE id = $1", limited.id)
	require.NoError(t, err)
	// Its process ended: the release comes first, and the waiter's claim
	// in the same statement takes the slot.
	require.Equal(t, map[int64]string{second.job: "claimed, holding slots"}, claimMany([]queued{second}, limited))
	require.Equal(t, jobs.StatusRunning, status(limited), "the result is settle's to write")
	require.Equal(t, jobs.StatusRunning, status(second))
	// A release on its own hands the seat to the waiter as it commits
	// (019_policy_handover.sql): a holder now, it waits no more, and its
	// claim in a later statement is admitted on the seat it holds.
	third := enqueue("t.params", `{"n": 3}`)
	require.Equal(t, map[int64]string{third.job: waits}, claimMany([]queued{third}))
	require.Empty(t, claimMany(nil, second))
	var seats, waiting int
	require.NoError(t, b.pool.QueryRow(b.ctx, `SELECT (SELECT count(*) FROM attune.policy_seat WHERE execution_id = $1),
		(SELECT count(*) FROM attune.policy_waiter WHERE execution_id = $1)`, third.id).Scan(&seats, &waiting))
	require.Equal(t, []int{1, 0}, []int{seats, waiting}, "the release handed its seat to the waiter")
	require.Equal(t, jobs.StatusRequested, status(third), "handed a seat, not claimed")
	// Another execution's claim meanwhile finds the seat taken.
	fourth := enqueue("t.params", `{"n": 4}`)
	require.Equal(t, map[int64]string{fourth.job: waits}, claimMany([]queued{fourth}))
	require.Equal(t, map[int64]string{third.job: "claimed, holding slots"}, claimMany([]queued{third}))
	_, err = b.pool.Exec(b.ctx, "SELECT attune.cancel_execution($1)", fourth.id)
	require.NoError(t, err)

	// The same attempt again, by the same worker, is the same claim (its
	// reply lost: TestClaimAgainAfterLostReply); by another worker, nothing.
	require.Equal(t, map[int64]string{plain.job: "claimed"}, claimMany([]queued{plain}))
	require.Empty(t, claimAs("w-other", []queued{plain}), "another worker at the same attempt")

	setPolicy("pack", "t", `{"concurrency": {"limit": 3, "on_limit": "queue"}}`)
	inPack := enqueue("t.noop", `{}`)
	require.Equal(t, map[int64]string{inPack.job: "claimed, holding slots"}, claimMany([]queued{inPack}), "the pack's limit")
	// A holder's row deleted by hand frees its seats.
	seatsOf := func(q queued) (n int) {
		t.Helper()
		require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT count(*) FROM attune.policy_seat WHERE execution_id = $1", q.id).Scan(&n))
		return n
	}
	require.Equal(t, 1, seatsOf(inPack))
	_, err = b.pool.Exec(b.ctx, "DELETE FROM attune.execution WHERE id = $1", inPack.id)
	require.NoError(t, err)
	require.Zero(t, seatsOf(inPack))

	// A policy admission cannot read fails the statement, its context
	// naming policy_admit (the worker tells an admission's error by it);
	// nothing is claimed.
	setPolicy("pack", "t", `{}`)
	setPolicy("action", "t.params", `{"concurrency": {"limit": "many"}}`)
	broken := enqueue("t.params", `{"n": 3}`)
	fine := enqueue("t.noop", `{}`)
	_, err = b.pool.Exec(b.ctx, "SELECT * FROM attune.claim_many($1, $2, $3, 'w', '{}', '{}')",
		[]int64{fine.id, broken.id}, []int{1, 1}, []int64{fine.job, broken.job})
	var pgErr *pgconn.PgError
	require.ErrorAs(t, err, &pgErr)
	require.Contains(t, pgErr.Where, "function attune.policy_admit(")
	require.Equal(t, jobs.StatusRequested, status(broken))
	require.Equal(t, jobs.StatusRequested, status(fine), "the statement's other claims rolled back with it")
	require.Equal(t, map[int64]string{fine.job: "claimed"}, claimMany([]queued{fine}))

	// A worker marked inactive claims nothing.
	_, err = b.pool.Exec(b.ctx, "UPDATE attune.worker SET status = 'inactive' WHERE name = 'w'")
	require.NoError(t, err)
	last := enqueue("t.noop", `{}`)
	require.Empty(t, claimMany([]queued{last}))
	require.Equal(t, jobs.StatusRequested, status(last))
}

// TestClaimManyLimitUnderRace has ten connections claim executions of one
// limited action at the same instant, round after round: exactly the
// limit is admitted each round, each holder holds a seat
// (018_policy_seats.sql) or was handed one (019_policy_handover.sql), and
// the releases of the round free them all.
func TestClaimManyLimitUnderRace(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const limit, conns, perConn, rounds = 3, 10, 2, 5
	_, err := b.pool.Exec(b.ctx, `INSERT INTO attune.worker (name, hostname, pid, status) VALUES ('w', 'h', 1, 'active')`)
	require.NoError(t, err)
	_, err = b.pool.Exec(b.ctx, `UPDATE attune.action SET policy = '{"concurrency": {"limit": 3}}' WHERE ref = 't.params'`)
	require.NoError(t, err)
	type queued struct{ id, job int64 }
	var queue []queued
	for i := range conns * perConn * rounds {
		id, err := sqlEnqueue(b.ctx, b.pool, "t.params", fmt.Sprintf(`{"n": %d}`, i%5+1), `{}`)
		require.NoError(t, err)
		q := queued{id: id}
		require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT job_id FROM attune.execution WHERE id = $1", id).Scan(&q.job))
		queue = append(queue, q)
	}
	// The executions holding a seat, in order, one row per seat.
	held := func() []int64 {
		t.Helper()
		rows, err := b.pool.Query(b.ctx, "SELECT execution_id FROM attune.policy_seat WHERE execution_id IS NOT NULL ORDER BY 1")
		require.NoError(t, err)
		ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
		require.NoError(t, err)
		return ids
	}
	ids := func(qs []queued) []int64 {
		var out []int64
		for _, q := range qs {
			out = append(out, q.id)
		}
		slices.Sort(out)
		return out
	}
	var running []queued
	for round := range rounds {
		start := make(chan struct{})
		var mu sync.Mutex
		var admitted []queued
		var wg sync.WaitGroup
		for c := range conns {
			batch := queue[(round*conns+c)*perConn:][:perConn]
			wg.Go(func() {
				var ids, jobIDs []int64
				var attempts []int
				for _, q := range batch {
					ids, jobIDs, attempts = append(ids, q.id), append(jobIDs, q.job), append(attempts, 1)
				}
				// The previous round's holders are given back by the first
				// connection, in the same instant as everyone's claims.
				var rel []int64
				var relAttempts []int
				if c == 0 {
					for _, q := range running {
						rel, relAttempts = append(rel, q.id), append(relAttempts, 1)
					}
				}
				<-start
				rows, err := b.pool.Query(b.ctx, "SELECT job_id FROM attune.claim_many($1, $2, $3, 'w', $4, $5) WHERE admitted",
					ids, attempts, jobIDs, rel, relAttempts)
				if !assert.NoError(t, err) {
					return
				}
				jobIDsAdmitted, err := pgx.CollectRows(rows, pgx.RowTo[int64])
				assert.NoError(t, err)
				mu.Lock()
				defer mu.Unlock()
				for _, q := range batch {
					if slices.Contains(jobIDsAdmitted, q.job) {
						admitted = append(admitted, q)
					}
				}
			})
		}
		close(start)
		wg.Wait()
		// The releases may have committed after some claims looked:
		// never more than the limit, at least one, and the seats held are
		// the holders', one each. A seat a release freed after the claims
		// looked went to the oldest waiter of the round, refused a moment
		// before (019_policy_handover.sql): it holds a seat, not yet
		// claimed.
		require.LessOrEqual(t, len(admitted), limit, "round %d", round)
		if round == 0 {
			require.Len(t, admitted, limit, "nothing held yet: the limit, exactly")
		}
		require.Positive(t, len(admitted), "round %d: the releasing connection claims after its releases", round)
		this := queue[round*conns*perConn:][:conns*perConn]
		h := held()
		require.LessOrEqual(t, len(h), limit, "round %d: seats held, admitted or handed over", round)
		require.Subset(t, h, ids(admitted), "round %d: a seat per admitted holder", round)
		for i, id := range h {
			require.True(t, i == 0 || h[i-1] != id, "round %d: %d holds two seats", round, id)
			if slices.Contains(ids(admitted), id) {
				continue
			}
			var st string
			require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT status FROM attune.execution WHERE id = $1", id).Scan(&st))
			require.True(t, slices.ContainsFunc(this, func(q queued) bool { return q.id == id }) && st == jobs.StatusRequested,
				"round %d: seat held by %d (%s), neither admitted nor a waiter of the round", round, id, st)
		}
		// Those not admitted are moved out of the way (cancelled), so that
		// the next round's claims do not queue behind them; a seat handed
		// to one goes back as it is cancelled.
		for _, q := range this {
			if !slices.Contains(admitted, q) {
				_, err := b.pool.Exec(b.ctx, "SELECT attune.cancel_execution($1)", q.id)
				require.NoError(t, err)
			}
		}
		require.Equal(t, ids(admitted), held(), "round %d: once the waiters are gone, a seat per holder, and only theirs", round)
		running = admitted
	}
	// The last round's holders end: everything is free again.
	_, err = b.pool.Exec(b.ctx, "SELECT count(*) FROM attune.claim_many('{}', '{}', '{}', 'w', $1, $2)",
		[]int64{running[0].id}, []int{1})
	require.NoError(t, err)
	require.Equal(t, ids(running[1:]), held())
}

// TestClaimManyLimitChanges: a limit lowered under its holders admits
// nothing until they are below it; a limit raised admits up to the new
// one; and a huge limit makes seats only as they are used, not one per
// unit of the limit.
func TestClaimManyLimitChanges(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, err := b.pool.Exec(b.ctx, `INSERT INTO attune.worker (name, hostname, pid, status) VALUES ('w', 'h', 1, 'active')`)
	require.NoError(t, err)
	setLimit := func(limit int) {
		t.Helper()
		_, err := b.pool.Exec(b.ctx, `UPDATE attune.action SET policy = jsonb_build_object('concurrency', jsonb_build_object('limit', $1::int))
			WHERE ref = 't.params'`, limit)
		require.NoError(t, err)
	}
	type queued struct{ id, job int64 }
	enqueue := func() queued {
		t.Helper()
		id, err := sqlEnqueue(b.ctx, b.pool, "t.params", `{"n": 1}`, `{}`)
		require.NoError(t, err)
		q := queued{id: id}
		require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT job_id FROM attune.execution WHERE id = $1", id).Scan(&q.job))
		return q
	}
	// claim claims q (attempt 1) after releasing rel, and says whether it
	// was admitted.
	claim := func(q queued, rel ...queued) bool {
		t.Helper()
		var relIDs []int64
		var relAttempts []int
		for _, r := range rel {
			relIDs, relAttempts = append(relIDs, r.id), append(relAttempts, 1)
		}
		var admitted bool
		require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT admitted FROM attune.claim_many($1, '{1}', $2, 'w', $3, $4)",
			[]int64{q.id}, []int64{q.job}, relIDs, relAttempts).Scan(&admitted))
		return admitted
	}
	seats := func() (all, held int) {
		t.Helper()
		require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT count(*), count(execution_id) FROM attune.policy_seat").Scan(&all, &held))
		return all, held
	}

	setLimit(3)
	h := []queued{enqueue(), enqueue(), enqueue()}
	for _, q := range h {
		require.True(t, claim(q))
	}
	// Lowered to 1 with 3 holding: nothing starts until fewer than 1 hold.
	setLimit(1)
	w := enqueue()
	require.False(t, claim(w), "3 holders, limit 1")
	require.False(t, claim(w, h[0], h[1]), "1 holder, limit 1")
	require.True(t, claim(w, h[2]), "no holder left")
	// Raised to 4: three more beside w.
	setLimit(4)
	more := []queued{enqueue(), enqueue(), enqueue()}
	for _, q := range more {
		require.True(t, claim(q))
	}
	fifth := enqueue()
	require.False(t, claim(fifth), "the fifth")
	all, held := seats()
	require.Equal(t, 4, held)
	require.Equal(t, 4, all, "seats up to the limit, no more")

	// Lowered to 2 while the fifth waits (refused under 4): releases hand
	// it nothing while 2 or more still hold, and a seat once 1 holds
	// (019_policy_handover.sql keeps a waiter's limit the key's).
	setLimit(2)
	release := func(q queued) {
		t.Helper()
		_, err := b.pool.Exec(b.ctx, "SELECT count(*) FROM attune.claim_many('{}', '{}', '{}', 'w', $1, '{1}')", []int64{q.id})
		require.NoError(t, err)
	}
	fifthSeats := func() (n int) {
		t.Helper()
		require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT count(*) FROM attune.policy_seat WHERE execution_id = $1", fifth.id).Scan(&n))
		return n
	}
	release(more[0])
	require.Zero(t, fifthSeats(), "3 hold, limit 2")
	release(more[1])
	require.Zero(t, fifthSeats(), "2 hold, limit 2")
	release(w)
	require.Equal(t, 1, fifthSeats(), "1 held, limit 2: the fifth is handed a seat")
	require.True(t, claim(fifth))
	// Back to 4 holders under 4.
	setLimit(4)
	require.True(t, claim(enqueue()))
	require.True(t, claim(enqueue()))
	all, held = seats()
	require.Equal(t, []int{4, 4}, []int{all, held})

	// A huge limit is not a huge table.
	setLimit(2_000_000_000)
	for range 70 {
		require.True(t, claim(enqueue()))
	}
	all, held = seats()
	require.Equal(t, 74, held)
	require.Equal(t, 4+64+64, all, "seats made 64 at a time as they are needed")
}

// TestClaimManyHandOver: a freed seat goes to the key's oldest waiter as
// its release commits (019_policy_handover.sql); a waiter refused by
// another key gives back the seat it was handed, to the next waiter; and
// a job snoozed by a worker after its execution was handed a seat is made
// available at once.
func TestClaimManyHandOver(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, err := b.pool.Exec(b.ctx, `INSERT INTO attune.worker (name, hostname, pid, status) VALUES ('w', 'h', 1, 'active')`)
	require.NoError(t, err)
	setPolicy := func(table, ref, policy string) {
		t.Helper()
		_, err := b.pool.Exec(b.ctx, "UPDATE attune."+table+" SET policy = $2 WHERE ref = $1", ref, policy)
		require.NoError(t, err)
	}
	type queued struct{ id, job int64 }
	enqueue := func(ref string) queued {
		t.Helper()
		params := `{}`
		if ref == "t.params" {
			params = `{"n": 1}`
		}
		id, err := sqlEnqueue(b.ctx, b.pool, ref, params, `{}`)
		require.NoError(t, err)
		q := queued{id: id}
		require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT job_id FROM attune.execution WHERE id = $1", id).Scan(&q.job))
		return q
	}
	// claim claims q (attempt 1) after giving back the slots of released;
	// true when admitted.
	claim := func(q *queued, released ...queued) bool {
		t.Helper()
		var ids, jobIDs, rel []int64
		var attempts, relAttempts []int
		if q != nil {
			ids, jobIDs, attempts = []int64{q.id}, []int64{q.job}, []int{1}
		}
		for _, r := range released {
			rel, relAttempts = append(rel, r.id), append(relAttempts, 1)
		}
		rows, err := b.pool.Query(b.ctx, "SELECT admitted FROM attune.claim_many($1, $2, $3, 'w', $4, $5)", ids, attempts, jobIDs, rel, relAttempts)
		require.NoError(t, err)
		got, err := pgx.CollectRows(rows, pgx.RowTo[bool])
		require.NoError(t, err)
		return len(got) == 1 && got[0]
	}
	// holds says which keys' seats q holds, and which key it waits behind.
	holds := func(q queued) (seats []string, waits string) {
		t.Helper()
		rows, err := b.pool.Query(b.ctx, "SELECT key FROM attune.policy_seat WHERE execution_id = $1 ORDER BY key", q.id)
		require.NoError(t, err)
		seats, err = pgx.CollectRows(rows, pgx.RowTo[string])
		require.NoError(t, err)
		err = b.pool.QueryRow(b.ctx, "SELECT key FROM attune.policy_waiter WHERE execution_id = $1", q.id).Scan(&waits)
		if !errors.Is(err, pgx.ErrNoRows) {
			require.NoError(t, err)
		}
		return seats, waits
	}
	const actionKey, packKey = "concurrency:action:t.params:", "concurrency:pack:t:"

	// Two t.noop fill the pack's limit of 2; a t.params waits behind it.
	setPolicy("pack", "t", `{"concurrency": {"limit": 2}}`)
	setPolicy("action", "t.params", `{"concurrency": {"limit": 1}}`)
	a1, a2, waiter := enqueue("t.noop"), enqueue("t.noop"), enqueue("t.params")
	require.True(t, claim(&a1))
	require.True(t, claim(&a2))
	require.False(t, claim(&waiter))
	seats, waits := holds(waiter)
	require.Empty(t, seats, "refused by the pack: the action's seat it took goes back")
	require.Equal(t, packKey, waits)

	// a1 ends: its pack seat is the waiter's, and it waits no more.
	require.False(t, claim(nil, a1))
	seats, waits = holds(waiter)
	require.Equal(t, []string{packKey}, seats, "handed the seat a1 gave back")
	require.Empty(t, waits)
	// The snooze of a worker that gave up waiting just before makes its
	// job available at once: it holds a seat.
	_, err = b.pool.Exec(b.ctx, "UPDATE attune.river_job SET state = 'running', attempt = 1, attempted_at = now() WHERE id = $1", waiter.job)
	require.NoError(t, err)
	_, err = b.pool.Exec(b.ctx, "UPDATE attune.river_job SET state = 'scheduled', scheduled_at = now() + interval '5 minutes' WHERE id = $1", waiter.job)
	require.NoError(t, err)
	var state string
	require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT state FROM attune.river_job WHERE id = $1", waiter.job).Scan(&state))
	require.Equal(t, "available", state, "a snoozed job holding a seat")

	// Before its claim comes, another t.params takes the action's only
	// seat (the pack raised to 3 lets it in), and a t.noop queues behind
	// the pack.
	setPolicy("pack", "t", `{"concurrency": {"limit": 3}}`)
	other, next := enqueue("t.params"), enqueue("t.noop")
	require.True(t, claim(&other))
	require.False(t, claim(&next))
	// The waiter's claim is refused by the action's limit: the pack seat
	// it was handed goes to the next waiter behind the pack, and it
	// queues behind the action.
	require.False(t, claim(&waiter))
	seats, waits = holds(waiter)
	require.Empty(t, seats, "refused by another key: no seat kept")
	require.Equal(t, actionKey, waits)
	seats, waits = holds(next)
	require.Equal(t, []string{packKey}, seats, "the seat the waiter gave back")
	require.Empty(t, waits)
	require.True(t, claim(&next), "admitted on the seat it was handed")

	// other ends: the waiter is handed the action's seat, and its claim
	// takes one of the pack's (a2 and next hold 2 of 3).
	require.False(t, claim(nil, other))
	seats, waits = holds(waiter)
	require.Equal(t, []string{actionKey}, seats)
	require.Empty(t, waits)
	require.True(t, claim(&waiter), "a seat of each key at last")
	seats, waits = holds(waiter)
	require.Equal(t, []string{actionKey, packKey}, seats)
	require.Empty(t, waits)
	// policy_give_back (for an execution whose policy cannot be read)
	// frees nothing of an execution that runs.
	var freed int
	require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT attune.policy_give_back($1)", waiter.id).Scan(&freed))
	require.Zero(t, freed)
	seats, _ = holds(waiter)
	require.Equal(t, []string{actionKey, packKey}, seats)

	// A seat of a later key handed to x goes back too when an earlier key
	// refuses x in the count, which stops at that key. The waiter ends; a
	// third t.noop fills the pack again, and x queues behind it.
	require.False(t, claim(nil, waiter))
	n3, x := enqueue("t.noop"), enqueue("t.params")
	require.True(t, claim(&n3))
	require.False(t, claim(&x))
	_, waits = holds(x)
	require.Equal(t, packKey, waits)
	// The pack raised to 5: x is handed one of the seats it adds, and o is
	// admitted (holding the action's seat and a pack seat).
	setPolicy("pack", "t", `{"concurrency": {"limit": 5}}`)
	o := enqueue("t.params")
	require.True(t, claim(&o))
	seats, waits = holds(x)
	require.Equal(t, []string{packKey}, seats, "handed a seat of the raised limit")
	require.Empty(t, waits)
	// y queues behind the action, which o holds; x's claim is then
	// refused by the action's count (y waits on it), and gives back the
	// pack seat it held.
	y := enqueue("t.params")
	require.False(t, claim(&y))
	require.False(t, claim(&x))
	seats, waits = holds(x)
	require.Empty(t, seats, "refused by the first key: the second key's seat goes back")
	require.Equal(t, actionKey, waits)
}

// executionBuffersRead runs sql in tx and returns how many buffers of
// attune.execution and its indexes it read, from the transaction's own
// counters: what a lookup costs, without a clock.
func executionBuffersRead(t *testing.T, tx pgx.Tx, sql string, args ...any) int64 {
	t.Helper()
	ctx := context.Background()
	const read = `SELECT sum(pg_stat_get_xact_blocks_fetched(c.oid))::bigint FROM pg_class c
		WHERE c.relnamespace = 'attune'::regnamespace AND (c.relname = 'execution' OR c.relname LIKE 'execution\_%')`
	var before, after int64
	require.NoError(t, tx.QueryRow(ctx, read).Scan(&before))
	_, err := tx.Exec(ctx, sql, args...)
	require.NoError(t, err)
	require.NoError(t, tx.QueryRow(ctx, read).Scan(&after))
	return after - before
}

// TestHandOverFromALongQueue: handing a freed seat to the oldest of 2,000
// waiters reads a few buffers of attune.execution, not one lookup per
// waiter. 019's _policy_wake filtered every waiter of the key by its
// execution's status before it sorted them (on a table the planner has no
// statistics for, as with autovacuum off), and read about 10,000 buffers
// here; 020 finds the head by the key's index alone.
func TestHandOverFromALongQueue(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, err := b.pool.Exec(b.ctx, `INSERT INTO attune.worker (name, hostname, pid, status) VALUES ('w', 'h', 1, 'active');
		UPDATE attune.action SET policy = '{"concurrency": {"limit": 1}}' WHERE ref = 't.noop'`)
	require.NoError(t, err)
	const waiters = 2000
	qs := claimAll(t, b, waiters+1)
	require.True(t, qs[0].admitted)
	for _, q := range qs[1:] {
		require.False(t, q.admitted, "the limit of 1 is held")
	}

	tx, err := b.pool.Begin(b.ctx)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(b.ctx) }()
	_, err = tx.Exec(b.ctx, "SELECT * FROM attune.claim_many('{}', '{}', '{}', 'w', $1, '{1}')", []int64{qs[0].ID})
	require.NoError(t, err)
	// The hand-over, deferred to the commit, made at once.
	read := executionBuffersRead(t, tx, "SET CONSTRAINTS ALL IMMEDIATE")
	require.NoError(t, tx.Commit(b.ctx))
	var holder int64
	require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT execution_id FROM attune.policy_seat WHERE execution_id IS NOT NULL").Scan(&holder))
	require.Equal(t, qs[1].ID, holder, "the seat goes to the oldest waiter")
	t.Logf("the hand-over read %d buffers of attune.execution", read)
	require.Less(t, read, int64(100), "a hand-over reads the queue's head, not every waiter")
}

// TestReleaseAmongManyRunning: a release reads its execution's row, however
// many the worker runs. claim_many looks it up by id and worker, and with
// 001's index of running executions by worker alone the planner took that
// index and read every execution the worker runs: a claim carrying a
// release read 89 buffers of attune.execution here, against 32 with 020's
// index of (worker, id).
func TestReleaseAmongManyRunning(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, err := b.pool.Exec(b.ctx, `INSERT INTO attune.worker (name, hostname, pid, status) VALUES ('w', 'h', 1, 'active')`)
	require.NoError(t, err)
	rows, err := b.pool.Query(b.ctx, "SELECT attune.enqueue('t.noop') FROM generate_series(1, 4000)")
	require.NoError(t, err)
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	require.NoError(t, err)
	// Claimed one transaction each on one connection, each also releasing
	// the execution before (which stays running: nothing settles here), as
	// a replica's claims carry the releases of the processes that ended.
	claim := func(tx pgx.Tx, i int) int64 {
		return executionBuffersRead(t, tx, `SELECT count(*) FROM attune.claim_many(ARRAY[$1::bigint], '{1}',
			ARRAY[(SELECT job_id FROM attune.execution WHERE id = $1)], 'w', ARRAY[$2::bigint], '{1}')`, ids[i], ids[max(i-1, 0)])
	}
	conn, err := b.pool.Acquire(b.ctx)
	require.NoError(t, err)
	defer conn.Release()
	// The last 100 statements, after 3,900 executions started running:
	// what one reads on average.
	var read int64
	for i := range ids {
		tx, err := conn.Begin(b.ctx)
		require.NoError(t, err)
		if n := claim(tx, i); i >= len(ids)-100 {
			read += n
		}
		require.NoError(t, tx.Commit(b.ctx))
	}
	read /= 100
	t.Logf("a claim with a release read %d buffers of attune.execution", read)
	require.Less(t, read, int64(60), "a release reads its own execution's row, not every running one")
}

// claimAnswer is what claim_many answered for one execution.
type claimAnswer struct {
	benchExecution
	admitted bool
}

// claimAll enqueues n executions of t.noop and claims them for worker w,
// in one claim_many, in id order; it returns what each claim answered.
func claimAll(t *testing.T, b *testBundle, n int) []claimAnswer {
	t.Helper()
	rows, err := b.pool.Query(b.ctx, "SELECT attune.enqueue('t.noop') FROM generate_series(1, $1)", n)
	require.NoError(t, err)
	enqueued, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	require.NoError(t, err)
	// Read in a statement of its own: the enqueue's rows are not visible
	// to the statement that inserts them.
	rows, err = b.pool.Query(b.ctx, "SELECT id, job_id FROM attune.execution WHERE id = ANY ($1) ORDER BY id", enqueued)
	require.NoError(t, err)
	es, err := pgx.CollectRows(rows, pgx.RowToStructByPos[benchExecution])
	require.NoError(t, err)
	require.Len(t, es, n)
	ids, jobIDs, attempts := make([]int64, n), make([]int64, n), make([]int, n)
	for i, e := range es {
		ids[i], jobIDs[i], attempts[i] = e.ID, e.Job, 1
	}
	rows, err = b.pool.Query(b.ctx, "SELECT job_id, admitted FROM attune.claim_many($1, $2, $3, 'w', '{}', '{}')", ids, attempts, jobIDs)
	require.NoError(t, err)
	answers, err := pgx.CollectRows(rows, pgx.RowToStructByPos[struct {
		Job      int64
		Admitted bool
	}])
	require.NoError(t, err)
	admitted := map[int64]bool{}
	for _, a := range answers {
		admitted[a.Job] = a.Admitted
	}
	out := make([]claimAnswer, n)
	for i, e := range es {
		out[i] = claimAnswer{e, admitted[e.Job]}
	}
	return out
}

// BenchmarkClaimManyQueued measures what one execution costs the database
// under a limit that binds (of 1 here), in the statements a replica sends
// for it: the claim the limit refuses (it queues), the release of the
// holder's seat, which hands the seat to the oldest waiter, and that
// waiter's claim again. BenchmarkClaimMany/plain is the same execution
// without a limit, one statement that claims it and releases the previous
// one (go test -run '^$' -bench ClaimMany ./jobs).
func BenchmarkClaimManyQueued(b *testing.B) {
	ctx := context.Background()
	pool := benchPool(b)
	_, err := pool.Exec(ctx, `INSERT INTO attune.worker (name, hostname, pid, status) VALUES ('w', 'h', 1, 'active');
		UPDATE attune.action SET policy = '{"concurrency": {"limit": 1}}' WHERE ref = 't.noop'`)
	require.NoError(b, err)
	next := benchQueue(b, pool)
	claim := func(q *benchExecution, released *benchExecution) (admitted bool) {
		ids, jobIDs, rel := []int64{}, []int64{}, []int64{}
		if q != nil {
			ids, jobIDs = []int64{q.ID}, []int64{q.Job}
		}
		if released != nil {
			rel = []int64{released.ID}
		}
		rows, err := pool.Query(ctx, "SELECT admitted FROM attune.claim_many($1, '{1}', $2, 'w', $3, '{1}')", ids, jobIDs, rel)
		if err != nil {
			b.Fatal(err)
		}
		got, err := pgx.CollectRows(rows, pgx.RowTo[bool])
		if err != nil {
			b.Fatal(err)
		}
		return len(got) == 1 && got[0]
	}
	holder, waiter := next(), next()
	if !claim(&holder, nil) || claim(&waiter, nil) {
		b.Fatal("the first claim is admitted and the second queues")
	}
	b.ResetTimer()
	for range b.N {
		n := next()
		if claim(&n, nil) {
			b.Fatalf("%d admitted past the limit", n.ID)
		}
		claim(nil, &holder) // hands the seat to waiter
		if !claim(&waiter, nil) {
			b.Fatalf("%d, handed the seat, refused", waiter.ID)
		}
		holder, waiter = waiter, n
	}
}

// BenchmarkClaimMany measures one attune.claim_many statement that claims
// an execution and gives back the previous one's slots, as a replica's
// claims do one after the other: "plain" without a policy, "limited" under
// a concurrency limit of 10 that never binds. The ratio of the two is what
// admission and release add to a claim (go test -bench ClaimMany ./jobs).
func BenchmarkClaimMany(b *testing.B) {
	for _, bc := range []struct{ name, policy string }{
		{"plain", `{}`},
		{"limited", `{"concurrency": {"limit": 10}}`},
	} {
		b.Run(bc.name, func(b *testing.B) {
			ctx := context.Background()
			pool := benchPool(b)
			_, err := pool.Exec(ctx, `INSERT INTO attune.worker (name, hostname, pid, status) VALUES ('w', 'h', 1, 'active')`)
			require.NoError(b, err)
			_, err = pool.Exec(ctx, "UPDATE attune.action SET policy = $1 WHERE ref = 't.noop'", bc.policy)
			require.NoError(b, err)
			next := benchQueue(b, pool)
			prev := int64(0) // an execution that does not exist: its release frees nothing
			for i := 0; i < b.N; i++ {
				q := next()
				var admitted bool
				if err := pool.QueryRow(ctx, "SELECT admitted FROM attune.claim_many($1, '{1}', $2, 'w', $3, '{1}')",
					[]int64{q.ID}, []int64{q.Job}, []int64{prev}).Scan(&admitted); err != nil || !admitted {
					b.Fatalf("claim %d: admitted %v, %v", q.ID, admitted, err)
				}
				prev = q.ID
			}
		})
	}
}

// benchExecution is an execution enqueued for a test or a benchmark, and
// its job.
type benchExecution struct{ ID, Job int64 }

// benchQueue returns a function that hands out new executions of t.noop in
// id order, enqueued a thousand at a time off the clock.
func benchQueue(b *testing.B, pool *pgxpool.Pool) func() benchExecution {
	ctx := context.Background()
	var queue []benchExecution
	last := int64(0)
	return func() benchExecution {
		if len(queue) == 0 {
			b.StopTimer()
			_, err := pool.Exec(ctx, "SELECT attune.enqueue('t.noop', '{}') FROM generate_series(1, 1000)")
			require.NoError(b, err)
			rows, err := pool.Query(ctx, "SELECT id, job_id FROM attune.execution WHERE id > $1 ORDER BY id", last)
			require.NoError(b, err)
			queue, err = pgx.CollectRows(rows, pgx.RowToStructByPos[benchExecution])
			require.NoError(b, err)
			last = queue[len(queue)-1].ID
			b.StartTimer()
		}
		q := queue[0]
		queue = queue[1:]
		return q
	}
}
