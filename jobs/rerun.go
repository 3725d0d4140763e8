package jobs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strings"

	"github.com/jackc/pgx/v5"
)

// ErrSecretParameters is returned by ReRun for an execution that had secret
// parameters: attune keeps their values only while it is queued.
var ErrSecretParameters = errors.New("execution had secret parameters, whose values attune does not keep; enqueue it again with every parameter")

// SecretParametersError names the secret parameters a re-run must be given
// again; it matches ErrSecretParameters.
type SecretParametersError struct{ Names []string }

func (e *SecretParametersError) Error() string {
	return fmt.Sprintf("%v (%s)", ErrSecretParameters, strings.Join(e.Names, ", "))
}

func (e *SecretParametersError) Is(target error) bool { return target == ErrSecretParameters }

// ReRun enqueues a new execution of the same action with the same
// parameters, timeout, priority and attempts as execution id, inside tx,
// and returns the new id. The new one is a manual run: no rule, no event.
func ReRun(ctx context.Context, tx pgx.Tx, id int64) (int64, error) {
	return ReRunWith(ctx, tx, id, nil, nil)
}

// ReRunWith is ReRun with some parameters replaced by overrides; it must
// give every secret parameter the execution had, whose values attune did
// not keep. secretsKey seals them, as Options.SecretsKey does.
func ReRunWith(ctx context.Context, tx pgx.Tx, id int64, overrides map[string]any, secretsKey []byte) (int64, error) {
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
	var missing []string
	for _, name := range secretDecl {
		if _, ok := overrides[name]; !ok {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		return 0, &SecretParametersError{Names: missing}
	}
	var p map[string]any
	dec := json.NewDecoder(bytes.NewReader(params))
	dec.UseNumber() // large integers keep their digits
	if err := dec.Decode(&p); err != nil {
		return 0, fmt.Errorf("error reading execution %d's parameters: %w", id, err)
	}
	maps.Copy(p, overrides)
	opts := Options{Priority: priority, MaxAttempts: maxAttempts, SecretsKey: secretsKey}
	if timeout != nil {
		opts.TimeoutSeconds = *timeout
	}
	return Enqueue(ctx, tx, ref, p, &opts)
}
