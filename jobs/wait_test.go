package jobs_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/attune-system/attune/jobs"
)

// Wait returns once every execution has finished, in the order asked, and
// Progress sees the states before that.
func TestWait(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ok, err := sqlEnqueue(b.ctx, b.pool, "t.noop", `{}`, `{}`)
	require.NoError(t, err)
	bad, err := sqlEnqueue(b.ctx, b.pool, "t.fail", `{}`, `{}`)
	require.NoError(t, err)

	var (
		mu   sync.Mutex
		seen []string
	)
	type waited struct {
		execs []*jobs.Execution
		err   error
	}
	res := make(chan waited, 1)
	go func() {
		es, err := jobs.WaitWith(b.ctx, b.pool, jobs.WaitOptions{Interval: 20 * time.Millisecond, Progress: func(es []*jobs.Execution) error {
			mu.Lock()
			defer mu.Unlock()
			seen = append(seen, es[0].Status)
			return nil
		}}, bad, ok)
		res <- waited{es, err}
	}()
	time.Sleep(100 * time.Millisecond) // no worker yet: it waits
	run(t, b.startWorker(t, "w1"))

	var w waited
	select {
	case w = <-res:
	case <-time.After(30 * time.Second):
		t.Fatal("Wait did not return")
	}
	require.NoError(t, w.err)
	require.Len(t, w.execs, 2)
	require.Equal(t, bad, w.execs[0].ID)
	require.Equal(t, jobs.StatusFailed, w.execs[0].Status)
	require.Equal(t, ok, w.execs[1].ID)
	require.Equal(t, jobs.StatusCompleted, w.execs[1].Status)
	mu.Lock()
	require.Equal(t, jobs.StatusRequested, seen[0], "Progress sees the waiting states")
	require.Equal(t, jobs.StatusFailed, seen[len(seen)-1], "and the final one")
	mu.Unlock()

	// Finished already: one read.
	reads := 0
	es, err := jobs.WaitWith(b.ctx, b.pool, jobs.WaitOptions{Progress: func([]*jobs.Execution) error { reads++; return nil }}, ok)
	require.NoError(t, err)
	require.Equal(t, jobs.StatusCompleted, es[0].Status)
	require.Equal(t, 1, reads)

	es, err = jobs.Wait(b.ctx, b.pool)
	require.NoError(t, err)
	require.Empty(t, es)
}

// When ctx ends first, Wait says so and returns the states it last read.
func TestWaitContextEnds(t *testing.T) {
	t.Parallel()
	b := setup(t)
	id, err := sqlEnqueue(b.ctx, b.pool, "t.noop", `{}`, `{}`) // no worker: it stays requested
	require.NoError(t, err)

	ctx, cancel := context.WithTimeout(b.ctx, 300*time.Millisecond)
	defer cancel()
	es, err := jobs.Wait(ctx, b.pool, id)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Len(t, es, 1)
	require.Equal(t, jobs.StatusRequested, es[0].Status)

	stop := errors.New("enough")
	es, err = jobs.WaitWith(b.ctx, b.pool, jobs.WaitOptions{Progress: func([]*jobs.Execution) error { return stop }}, id)
	require.ErrorIs(t, err, stop, "Progress ends the wait")
	require.Equal(t, jobs.StatusRequested, es[0].Status)
}

func TestWaitNotFound(t *testing.T) {
	t.Parallel()
	b := setup(t)
	id, err := sqlEnqueue(b.ctx, b.pool, "t.noop", `{}`, `{}`)
	require.NoError(t, err)
	_, err = jobs.Wait(b.ctx, b.pool, id, 12345)
	require.ErrorIs(t, err, jobs.ErrNotFound)
	require.EqualError(t, err, "execution not found: 12345 (attune execution list shows recent ones)")
}
