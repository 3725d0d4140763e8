package jobs

import (
	"context"
	"fmt"
)

// QueueDepth is one runtime queue's waiting executions.
type QueueDepth struct {
	Queue     string
	Due       int // requested or scheduled, due now
	Scheduled int // scheduled for later
	// OldestDueSeconds is how long the oldest due execution has waited;
	// nil when none is due.
	OldestDueSeconds *float64
}

// QueueDepths counts the executions not yet started (requested or
// scheduled) in each runtime queue, across replicas. An execution's queue
// is its action's runner type (attune.enqueue_prepare); it is counted from
// attune's rows, so that nothing here depends on River's schema. The
// console and the metrics both show it.
func QueueDepths(ctx context.Context, db Querier) ([]QueueDepth, error) {
	rows, err := db.Query(ctx, `SELECT a.runner_type,
			count(*) FILTER (WHERE e.scheduled_at <= now())::int,
			count(*) FILTER (WHERE e.scheduled_at > now())::int,
			extract(epoch FROM now() - min(e.scheduled_at) FILTER (WHERE e.scheduled_at <= now()))::float8
		FROM attune.execution e JOIN attune.action a ON a.ref = e.action_ref
		WHERE e.status IN ('requested', 'scheduled')
		GROUP BY a.runner_type ORDER BY a.runner_type`)
	if err != nil {
		return nil, fmt.Errorf("error reading queue depths: %w", err)
	}
	defer rows.Close()
	var out []QueueDepth
	for rows.Next() {
		var q QueueDepth
		if err := rows.Scan(&q.Queue, &q.Due, &q.Scheduled, &q.OldestDueSeconds); err != nil {
			return nil, fmt.Errorf("error reading queue depths: %w", err)
		}
		out = append(out, q)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("error reading queue depths: %w", err)
	}
	return out, nil
}
