package console

import (
	"context"
	"fmt"
	"time"

	"github.com/attune-system/attune/jobs"
)

// The few reads package jobs has no function for: aggregates for the
// overview, and the executions of given events.

// minute is one bar of the overview's chart.
type minute struct {
	At       time.Time
	Created  int // executions enqueued in this minute
	Failures int // executions that finished failed, timeout or abandoned in it
}

// lastHour is the last 60 minutes, oldest first, ending with the current one.
func lastHour(ctx context.Context, db jobs.Querier) ([]minute, error) {
	rows, err := db.Query(ctx, `WITH since AS (SELECT date_trunc('minute', now()) - interval '59 minutes' AS t)
		SELECT m.at, coalesce(c.n, 0)::int, coalesce(f.n, 0)::int
		FROM generate_series((SELECT t FROM since), date_trunc('minute', now()), interval '1 minute') AS m(at)
		LEFT JOIN (SELECT date_trunc('minute', created_at) AS at, count(*) AS n FROM attune.execution
			WHERE created_at >= (SELECT t FROM since) GROUP BY 1) c USING (at)
		LEFT JOIN (SELECT date_trunc('minute', finished_at) AS at, count(*) AS n FROM attune.execution
			WHERE finished_at >= (SELECT t FROM since) AND status IN ('failed', 'timeout', 'abandoned') GROUP BY 1) f USING (at)
		ORDER BY m.at`)
	if err != nil {
		return nil, fmt.Errorf("error reading the last hour: %w", err)
	}
	defer rows.Close()
	var out []minute
	for rows.Next() {
		var m minute
		if err := rows.Scan(&m.At, &m.Created, &m.Failures); err != nil {
			return nil, fmt.Errorf("error reading the last hour: %w", err)
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

// fired is one execution a rule enqueued for an event.
type fired struct {
	ID        int64
	EventID   int64
	ActionRef string
	RuleRef   *string
	Status    string
}

// firedBy lists the executions of the given events, by event id.
func firedBy(ctx context.Context, db jobs.Querier, events []int64) (map[int64][]fired, error) {
	out := map[int64][]fired{}
	if len(events) == 0 {
		return out, nil
	}
	rows, err := db.Query(ctx, `SELECT id, event_id, action_ref, rule_ref, status FROM attune.execution
		WHERE event_id = ANY($1) ORDER BY id`, events)
	if err != nil {
		return nil, fmt.Errorf("error reading the executions of events: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var f fired
		if err := rows.Scan(&f.ID, &f.EventID, &f.ActionRef, &f.RuleRef, &f.Status); err != nil {
			return nil, fmt.Errorf("error reading the executions of events: %w", err)
		}
		out[f.EventID] = append(out[f.EventID], f)
	}
	return out, rows.Err()
}
