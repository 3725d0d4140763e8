package jobs_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/attune-system/attune/jobs"
)

func TestGetNotFound(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, err := jobs.Get(b.ctx, b.pool, 12345)
	require.ErrorIs(t, err, jobs.ErrNotFound)
	require.EqualError(t, err, "execution not found: 12345 (attune execution list shows recent ones)")

	_, err = jobs.Cancel(b.ctx, b.pool, 12345)
	require.ErrorIs(t, err, jobs.ErrNotFound)
}

func TestList(t *testing.T) {
	t.Parallel()
	b := setup(t)

	var ids []int64
	for _, ref := range []string{"t.noop", "t.params", "t.noop", "t.noop"} {
		params := `{}`
		if ref == "t.params" {
			params = `{"n": 1}`
		}
		id, err := sqlEnqueue(b.ctx, b.pool, ref, params, `{}`)
		require.NoError(t, err)
		ids = append(ids, id)
	}
	status, err := jobs.Cancel(b.ctx, b.pool, ids[3])
	require.NoError(t, err)
	require.Equal(t, jobs.StatusCancelled, status)

	listIDs := func(f jobs.PageFilter) []int64 {
		t.Helper()
		list, _, err := jobs.ListPage(b.ctx, b.pool, f)
		require.NoError(t, err)
		var out []int64
		for _, e := range list {
			out = append(out, e.ID)
		}
		return out
	}
	require.Equal(t, []int64{ids[3], ids[2], ids[1], ids[0]}, listIDs(jobs.PageFilter{}), "newest first")
	require.Equal(t, []int64{ids[3], ids[2], ids[0]}, listIDs(jobs.PageFilter{ActionRef: "t.noop"}))
	require.Equal(t, []int64{ids[2], ids[1], ids[0]}, listIDs(jobs.PageFilter{Status: jobs.StatusRequested}))
	require.Equal(t, []int64{ids[2], ids[0]}, listIDs(jobs.PageFilter{ActionRef: "t.noop", Status: jobs.StatusRequested}))
	require.Equal(t, []int64{ids[3], ids[2]}, listIDs(jobs.PageFilter{Limit: 2}))
	require.Empty(t, listIDs(jobs.PageFilter{ActionRef: "t.nope"}))

	// The counts beside a list: by status, under the filter but its status.
	counts, err := jobs.CountByStatus(b.ctx, b.pool, jobs.PageFilter{ActionRef: "t.noop", Status: jobs.StatusCancelled, Limit: 1})
	require.NoError(t, err)
	require.Equal(t, map[string]int{jobs.StatusRequested: 2, jobs.StatusCancelled: 1}, counts)
}

// TestExecutionOutcomes: Get reads back what the worker wrote.
func TestExecutionOutcomes(t *testing.T) {
	t.Parallel()
	b := setup(t)
	run(t, b.startWorker(t, "w1"))

	ok, err := sqlEnqueue(b.ctx, b.pool, "t.noop", `{}`, `{}`)
	require.NoError(t, err)
	bad, err := sqlEnqueue(b.ctx, b.pool, "t.fail", `{}`, `{}`)
	require.NoError(t, err)

	e := waitStatus(t, b.pool, ok, 10*time.Second, jobs.StatusCompleted, jobs.StatusFailed)
	require.Equal(t, jobs.StatusCompleted, e.Status, deref(e.Error))
	require.JSONEq(t, `{"ok": true}`, string(e.Result))
	require.Equal(t, 0, *e.ExitCode)
	require.Equal(t, 1, e.Attempt)
	require.Equal(t, "w1", *e.Worker)
	require.NotNil(t, e.StartedAt)
	require.NotNil(t, e.FinishedAt)
	require.False(t, e.FinishedAt.Before(*e.StartedAt))

	e = waitStatus(t, b.pool, bad, 10*time.Second, jobs.StatusCompleted, jobs.StatusFailed)
	require.Equal(t, jobs.StatusFailed, e.Status)
	require.Equal(t, 3, *e.ExitCode)
	require.Equal(t, "exited with code 3: something broke", *e.Error)
	require.Equal(t, "something broke\n", *e.Stderr)
	require.Nil(t, e.Result)
}

// TestCancelQueued: a queued execution is cancelled at once and never runs.
func TestCancelQueued(t *testing.T) {
	t.Parallel()
	b := setup(t)

	id, err := sqlEnqueue(b.ctx, b.pool, "t.noop", `{}`, `{}`)
	require.NoError(t, err)
	scheduled, err := sqlEnqueue(b.ctx, b.pool, "t.noop", `{}`, `{"scheduled_at": "`+time.Now().Add(time.Hour).UTC().Format(time.RFC3339)+`"}`)
	require.NoError(t, err)
	for _, id := range []int64{id, scheduled} {
		status, err := jobs.Cancel(b.ctx, b.pool, id)
		require.NoError(t, err)
		require.Equal(t, jobs.StatusCancelled, status)
	}
	var state string
	require.NoError(t, b.pool.QueryRow(b.ctx, `SELECT j.state::text FROM attune.river_job j
		JOIN attune.execution e ON e.job_id = j.id WHERE e.id = $1`, id).Scan(&state))
	require.Equal(t, "cancelled", state, "River's job is cancelled too")

	// A worker started now finds nothing to run but a later execution.
	run(t, b.startWorker(t, "w1"))
	later, err := sqlEnqueue(b.ctx, b.pool, "t.noop", `{}`, `{}`)
	require.NoError(t, err)
	waitStatus(t, b.pool, later, 10*time.Second, jobs.StatusCompleted)
	for _, id := range []int64{id, scheduled} {
		e, err := jobs.Get(b.ctx, b.pool, id)
		require.NoError(t, err)
		require.Equal(t, jobs.StatusCancelled, e.Status)
		require.Equal(t, "Cancelled before it started", deref(e.Error))
		require.Nil(t, e.StartedAt, "it never ran")
		require.NotNil(t, e.FinishedAt)
		require.Nil(t, e.Worker)
	}

	// Cancelling a finished execution changes nothing.
	for _, id := range []int64{id, later} {
		before, err := jobs.Get(b.ctx, b.pool, id)
		require.NoError(t, err)
		status, err := jobs.Cancel(b.ctx, b.pool, id)
		require.NoError(t, err)
		require.Equal(t, before.Status, status)
		after, err := jobs.Get(b.ctx, b.pool, id)
		require.NoError(t, err)
		require.Equal(t, before, after)
	}
}

// TestCancelRunningAcrossReplicas: Cancel, called from another process's
// pool, reaches the replica running the execution through River's remote
// cancel; the process group dies and the execution ends cancelled.
func TestCancelRunningAcrossReplicas(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		ignoreTerm bool
	}{
		{name: "Term"},
		// SIGTERM ignored: SIGKILL follows after ATTUNE_KILL_GRACE (1s).
		{name: "IgnoresTerm", ignoreTerm: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			// Two replicas; either may take it.
			run(t, b.startWorker(t, "replica-a"))
			run(t, b.startWorker(t, "replica-b"))

			pidfile := t.TempDir() + "/pids"
			id, err := sqlEnqueue(b.ctx, b.pool, "t.hang", `{"pidfile": "`+pidfile+`", "ignore_term": `+map[bool]string{true: "true", false: "false"}[tc.ignoreTerm]+`}`, `{}`)
			require.NoError(t, err)
			waitStatus(t, b.pool, id, 10*time.Second, jobs.StatusRunning)
			pids := waitPidfile(t, pidfile)
			require.True(t, alive(pids[0]) && alive(pids[1]))

			// The canceller shares nothing with the replicas but the database.
			other := newPool(t, b.url)
			start := time.Now()
			status, err := jobs.Cancel(b.ctx, other, id)
			require.NoError(t, err)
			require.Equal(t, jobs.StatusCanceling, status)
			if tc.ignoreTerm {
				// It outlives SIGTERM: canceling until SIGKILL lands.
				e, err := jobs.Get(b.ctx, other, id)
				require.NoError(t, err)
				require.Equal(t, jobs.StatusCanceling, e.Status)
				require.Nil(t, e.FinishedAt)
			}

			// Cancelling again changes nothing (it may be over already).
			status, err = jobs.Cancel(b.ctx, other, id)
			require.NoError(t, err)
			require.Contains(t, []string{jobs.StatusCanceling, jobs.StatusCancelled}, status)

			e := waitStatus(t, other, id, 10*time.Second, jobs.StatusCancelled, jobs.StatusFailed, jobs.StatusAbandoned, jobs.StatusCompleted)
			took := time.Since(start)
			require.Equal(t, jobs.StatusCancelled, e.Status, deref(e.Error))
			require.Equal(t, "Cancelled while running", deref(e.Error))
			require.NotNil(t, e.FinishedAt)
			requireGone(t, 2*time.Second, pids...)
			t.Logf("cancel → cancelled in %s (worker %s)", took.Round(time.Millisecond), deref(e.Worker))
			if tc.ignoreTerm {
				require.GreaterOrEqual(t, took, 900*time.Millisecond, "SIGKILL came before the kill grace")
			}
			require.Less(t, took, 4*time.Second, "kill grace is 1s")

			var state string
			require.NoError(t, b.pool.QueryRow(b.ctx, `SELECT j.state::text FROM attune.river_job j
				JOIN attune.execution e ON e.job_id = j.id WHERE e.id = $1`, id).Scan(&state))
			require.Contains(t, []string{"completed", "cancelled"}, state, "the River job is finalized")

			// The replicas still work.
			next, err := sqlEnqueue(b.ctx, b.pool, "t.noop", `{}`, `{}`)
			require.NoError(t, err)
			waitStatus(t, b.pool, next, 10*time.Second, jobs.StatusCompleted)
		})
	}
}
