package worker

import (
	"sort"
	"testing"
	"time"

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
	var slots int
	require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT count(*) FROM attune.policy_slot").Scan(&slots))
	require.Zero(t, slots, "every slot is freed")
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
	sort.Slice(starts, func(i, j int) bool { return starts[i].Before(starts[j]) })
	// At most 2 starts in any 2 s window.
	require.GreaterOrEqual(t, starts[2].Sub(starts[0]), 2*time.Second-50*time.Millisecond)
	require.GreaterOrEqual(t, starts[3].Sub(starts[1]), 2*time.Second-50*time.Millisecond)
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
	var slots int
	require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT count(*) FROM attune.policy_slot").Scan(&slots))
	require.Zero(t, slots)
}
