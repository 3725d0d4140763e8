package jobs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// ErrSecretParameters is returned by ReRun for an execution that had secret
// parameters: attune keeps their values only while it is queued.
var ErrSecretParameters = errors.New("execution had secret parameters, whose values attune does not keep; enqueue it again with every parameter")

// ReRun enqueues a new execution of the same action with the same
// parameters, timeout, priority and attempts as execution id, inside tx,
// and returns the new id. The new one is a manual run: no rule, no event.
func ReRun(ctx context.Context, tx pgx.Tx, id int64) (int64, error) {
	var (
		ref         string
		params      []byte
		secretDecl  []string
		timeout     *int
		priority    int
		maxAttempts int
	)
	err := tx.QueryRow(ctx, `SELECT e.action_ref, e.parameters, e.timeout_seconds, e.priority, e.max_attempts,
			coalesce((SELECT array_agg(k) FROM jsonb_each(a.parameters) AS p(k, v)
				WHERE (v->>'secret')::boolean AND e.parameters ? k), '{}')
		FROM attune.execution e LEFT JOIN attune.action a ON a.ref = e.action_ref WHERE e.id = $1`, id).
		Scan(&ref, &params, &timeout, &priority, &maxAttempts, &secretDecl)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, fmt.Errorf("%w: %d (attune execution list shows recent ones)", ErrNotFound, id)
	}
	if err != nil {
		return 0, fmt.Errorf("error reading execution %d: %w", id, err)
	}
	if len(secretDecl) > 0 {
		return 0, fmt.Errorf("%w (%v)", ErrSecretParameters, secretDecl)
	}
	var p map[string]any
	dec := json.NewDecoder(bytes.NewReader(params))
	dec.UseNumber() // large integers keep their digits
	if err := dec.Decode(&p); err != nil {
		return 0, fmt.Errorf("error reading execution %d's parameters: %w", id, err)
	}
	opts := Options{Priority: priority, MaxAttempts: maxAttempts}
	if timeout != nil {
		opts.TimeoutSeconds = *timeout
	}
	return Enqueue(ctx, tx, ref, p, &opts)
}
