package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"

	"github.com/attune-system/attune/jobs"
	"github.com/attune-system/attune/schema"
)

// claimer claims executions in batches (batches, batch.go): the Work calls
// that got a process slot at about the same time share one attune.claim_many
// statement (schema/migrations/017_claim_many.sql).
type claimer struct {
	worker  string
	pool    *pgxpool.Pool
	batches *batches[*claimRequest]
}

// claimerLoops is how many claim statements may be in flight at once. A
// claim is on the path from pickup to process start: one in flight must
// not hold back the next for long.
const claimerLoops = 2

func newClaimer(worker string, pool *pgxpool.Pool) *claimer {
	return &claimer{worker: worker, pool: pool, batches: newBatches[*claimRequest](maxBatch)}
}

// errClaimerStopped is returned to a Work call that asked for a claim
// after the replica stopped claiming (it does so only once River's Work
// calls have all returned).
var errClaimerStopped = errors.New("replica stopped before the execution was claimed")

// claimRequest is one Work call's claim, waiting for its batch.
type claimRequest struct {
	job      *river.Job[jobs.ExecutionArgs]
	admitted bool // policy_admit has admitted it
	done     chan claimAnswer
}

type claimAnswer struct {
	row *claimRow // nil when the execution may not run (claim_many returned no row)
	err error
}

// claimRow is a row of claim_many before its JSON is decoded. Its columns
// are NULL when mustAdmit is set.
type claimRow struct {
	mustAdmit         bool
	maxAttempts       *int
	actionRef         *string
	packRef           *string
	runnerType        *string
	path              *string
	parameters        []byte
	secretParams      []byte
	decls             []byte
	resultSchema      []byte
	timeoutSeconds    *int
	actionTimeout     *int
	parameterDelivery *string
	parameterFormat   *string
	outputFormat      *string
	ruleRef           *string
	triggerRef        *string
	updated           *time.Time
	sealed            []byte
}

// run serves claims until ctx is done.
func (c *claimer) run(ctx context.Context) { c.batches.run(ctx, claimerLoops, maxBatch, 0, c.serve) }

// claim asks for job's claim and waits for its batch: the row, nil when the
// execution may not run.
func (c *claimer) claim(job *river.Job[jobs.ExecutionArgs], admitted bool) (*claimRow, error) {
	r := &claimRequest{job: job, admitted: admitted, done: make(chan claimAnswer, 1)}
	a, ok := call(c.batches, r, r.done)
	if !ok {
		return nil, errClaimerStopped
	}
	return a.row, a.err
}

func (c *claimer) serve(ctx context.Context, batch []*claimRequest) {
	// A claim is not interrupted half way (it would be unknown whether the
	// row says running): once sent, the statement runs to its end.
	ctx = context.WithoutCancel(ctx)
	rows, err := c.claimMany(ctx, batch)
	if err != nil && len(batch) > 1 && !schema.Transient(err) {
		// One bad row must not fail the others: claim them one by one.
		for _, r := range batch {
			rows, err := c.claimMany(ctx, []*claimRequest{r})
			r.done <- claimAnswer{rows[r.job.ID], err}
		}
		return
	}
	// A transient error goes to each Work call, which retries its claim
	// (executor.claim), with whatever else is waiting by then.
	for _, r := range batch {
		r.done <- claimAnswer{rows[r.job.ID], err}
	}
}

// claimMany runs claim_many for batch and returns its rows by River job id.
func (c *claimer) claimMany(ctx context.Context, batch []*claimRequest) (map[int64]*claimRow, error) {
	n := len(batch)
	ids, attempts, jobIDs, admitted := make([]int64, n), make([]int, n), make([]int64, n), make([]bool, n)
	for i, r := range batch {
		ids[i], attempts[i], jobIDs[i], admitted[i] = r.job.Args.ExecutionID, r.job.Attempt, r.job.ID, r.admitted
	}
	rows, err := c.pool.Query(ctx, "SELECT * FROM attune.claim_many($1, $2, $3, $4, $5)", ids, attempts, jobIDs, admitted, c.worker)
	if err != nil {
		return nil, fmt.Errorf("error claiming %d execution(s): %w", n, err)
	}
	defer rows.Close()
	out := make(map[int64]*claimRow, n)
	for rows.Next() {
		var jobID int64
		r := &claimRow{}
		if err := rows.Scan(&jobID, &r.mustAdmit, &r.maxAttempts, &r.actionRef, &r.packRef, &r.runnerType, &r.path,
			&r.parameters, &r.secretParams, &r.decls, &r.resultSchema, &r.timeoutSeconds, &r.actionTimeout,
			&r.parameterDelivery, &r.parameterFormat, &r.outputFormat, &r.ruleRef, &r.triggerRef, &r.updated, &r.sealed); err != nil {
			return nil, fmt.Errorf("error claiming %d execution(s): %w", n, err)
		}
		out[jobID] = r
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("error claiming %d execution(s): %w", n, err)
	}
	return out, nil
}

// claim marks job's execution running for its attempt and reads everything
// needed to start it, in a batch with other Work calls' claims. mustAdmit
// is set, and nothing claimed, when the action has a policy that
// policy_admit decides first; admitted says it has. pgx.ErrNoRows is an
// execution that may not run. While the database is unreachable the claim
// is tried again until ctx ends: a claim lost to an outage would cost an
// attempt.
func (w *executor) claim(ctx context.Context, job *river.Job[jobs.ExecutionArgs], admitted bool) (c *claimed, mustAdmit bool, err error) {
	var row *claimRow
	err = schema.Retry(ctx, quietRetry(w.retryLog, "claiming an execution", "id", job.Args.ExecutionID), func() (err error) {
		row, err = w.claimer.claim(job, admitted)
		return err
	})
	switch {
	case err != nil:
		return nil, false, err
	case row == nil:
		return nil, false, pgx.ErrNoRows
	case row.mustAdmit:
		return nil, true, nil
	}
	c, err = row.decode(job)
	return c, false, err
}

// decode makes the claimed execution of a row; a decodeError when its
// stored JSON cannot be read (the row says running all the same).
func (r *claimRow) decode(job *river.Job[jobs.ExecutionArgs]) (*claimed, error) {
	c := &claimed{ID: job.Args.ExecutionID, Attempt: job.Attempt,
		MaxAttempts: val(r.maxAttempts), ActionRef: val(r.actionRef), PackRef: val(r.packRef),
		RunnerType: val(r.runnerType), Path: val(r.path), TimeoutSeconds: r.timeoutSeconds, ActionTimeout: r.actionTimeout,
		ParameterDelivery: val(r.parameterDelivery), ParameterFormat: val(r.parameterFormat),
		OutputFormat: val(r.outputFormat), RuleRef: r.ruleRef, TriggerRef: r.triggerRef, Updated: val(r.updated)}
	for _, f := range []struct {
		b []byte
		v any
	}{{r.parameters, &c.Parameters}, {r.secretParams, &c.SecretParams}, {r.decls, &c.Decls}, {r.resultSchema, &c.ResultSchema}, {r.sealed, &c.Sealed}} {
		if len(f.b) == 0 {
			continue
		}
		if f.v == &c.SecretParams && jobs.Sealed(f.b) {
			c.SealedParams = f.b
			continue
		}
		// json.Number: jsonb keeps every digit of a number, so must we.
		dec := json.NewDecoder(bytes.NewReader(f.b))
		dec.UseNumber()
		if err := dec.Decode(f.v); err != nil {
			return c, &decodeError{err}
		}
	}
	return c, nil
}

// val is *p, or the zero value for nil.
func val[T any](p *T) T {
	var v T
	if p != nil {
		v = *p
	}
	return v
}
