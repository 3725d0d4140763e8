package jobs

import (
	"context"
	"fmt"
	"time"
)

// DefaultWaitInterval is how often Wait reads the executions it waits for.
// No notification announces that an execution finished, so waiting polls;
// one primary-key read of the rows per interval is cheap.
const DefaultWaitInterval = 100 * time.Millisecond

// WaitOptions tunes WaitWith.
type WaitOptions struct {
	// Interval is the time between reads; zero means DefaultWaitInterval.
	Interval time.Duration
	// Progress, when set, is called after every read, the last one
	// included, with the executions as read, in the order of the ids.
	// Watchers use it to show intermediate states or output as it grows.
	// An error it returns ends the wait with that error.
	Progress func(execs []*Execution) error
}

// Wait blocks until every execution in ids has finished (see Finished) and
// returns them as they ended, in the order of ids. When ctx ends first, or a
// read fails, it returns the executions as last read (nil before the first
// read) with the error: ctx's own error when ctx ended, so a caller can say
// in what state it left them. An unknown id fails with ErrNotFound.
func Wait(ctx context.Context, db Querier, ids ...int64) ([]*Execution, error) {
	return WaitWith(ctx, db, WaitOptions{}, ids...)
}

// WaitWith is Wait with options: the interval between reads, and a Progress
// callback that sees every state read.
func WaitWith(ctx context.Context, db Querier, opts WaitOptions, ids ...int64) ([]*Execution, error) {
	interval := opts.Interval
	if interval <= 0 {
		interval = DefaultWaitInterval
	}
	var last []*Execution
	timer := time.NewTimer(0) // the first read is at once
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return last, ctx.Err()
		case <-timer.C:
		}
		execs, err := read(ctx, db, ids)
		if err != nil {
			if ctx.Err() != nil { // the read was cut short by ctx
				return last, ctx.Err()
			}
			return last, err
		}
		last = execs
		if opts.Progress != nil {
			if err := opts.Progress(execs); err != nil {
				return execs, err
			}
		}
		done := true
		for _, e := range execs {
			done = done && Finished(e.Status)
		}
		if done {
			return execs, nil
		}
		timer.Reset(interval)
	}
}

// read reads the executions ids in one query, in the order of ids.
func read(ctx context.Context, db Querier, ids []int64) ([]*Execution, error) {
	rows, err := db.Query(ctx, "SELECT "+executionColumns+" FROM attune.execution WHERE id = ANY($1)", ids)
	if err != nil {
		return nil, fmt.Errorf("error reading executions: %w", err)
	}
	defer rows.Close()
	byID := make(map[int64]*Execution, len(ids))
	for rows.Next() {
		e, err := scanExecution(rows)
		if err != nil {
			return nil, fmt.Errorf("error reading executions: %w", err)
		}
		byID[e.ID] = e
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("error reading executions: %w", err)
	}
	out := make([]*Execution, len(ids))
	for i, id := range ids {
		e, ok := byID[id]
		if !ok {
			return nil, fmt.Errorf("%w: %d (attune execution list shows recent ones)", ErrNotFound, id)
		}
		out[i] = e
	}
	return out, nil
}
