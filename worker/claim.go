package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"

	"github.com/attune-system/attune/jobs"
	"github.com/attune-system/attune/schema"
)

// claimer claims executions in batches (batches, batch.go): the Work calls
// that got a process slot at about the same time share one attune.claim_many
// statement (schema/migrations/017_claim_many.sql, 018_policy_seats.sql,
// 019_policy_handover.sql), which also admits the executions whose action
// or pack has a policy, and gives back the concurrency slots of the
// executions whose process has ended.
type claimer struct {
	worker  string
	pool    *pgxpool.Pool
	batches *batches[*claimRequest]

	mu       sync.Mutex
	released []release // given back by the next claim statement
}

// release is a finished attempt's hold on its concurrency slots. sent is
// closed once a statement carrying it has run (or failed).
type release struct {
	id      int64
	attempt int
	sent    chan struct{}
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

// claimRequest is one Work call's claim, waiting for its batch, or (job
// nil) a statement asked for the releases alone.
type claimRequest struct {
	job  *river.Job[jobs.ExecutionArgs]
	done chan claimAnswer
}

type claimAnswer struct {
	row *claimRow // nil when the execution may not run (claim_many returned no row)
	err error
}

// claimRow is a row of claim_many before its JSON is decoded. Only the
// admission's columns are set when admitted is false.
type claimRow struct {
	admitted   bool
	cancelled  bool
	retryAt    *time.Time
	reason     *string
	retryOn    []string
	holdsSlots bool

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
func (c *claimer) claim(job *river.Job[jobs.ExecutionArgs]) (*claimRow, error) {
	r := &claimRequest{job: job, done: make(chan claimAnswer, 1)}
	a, ok := call(c.batches, r, r.done)
	if !ok {
		return nil, errClaimerStopped
	}
	return a.row, a.err
}

// release queues the giving back of the concurrency slots of an attempt
// whose process has ended, for the replica's next claim statement, before
// its claims, and returns a channel closed once that statement has run (or
// failed). The Work call then waits for it with releaseSent before it
// writes the result. Should the statement fail, settle frees the slots
// with the result; a release after that frees nothing.
func (c *claimer) release(id int64, attempt int) <-chan struct{} {
	r := release{id, attempt, make(chan struct{})}
	c.mu.Lock()
	c.released = append(c.released, r)
	c.mu.Unlock()
	return r.sent
}

// releaseFlushAfter is how long a release waits for the claim said to
// follow it (the Work call that waited for the process slot may have given
// up instead) before it is sent on its own.
const releaseFlushAfter = 50 * time.Millisecond

// maxReleaseWait bounds how long a settle waits for its release's
// statement: the settle frees the slots anyway, so a slow or failing claim
// statement delays the result by this much at most.
const maxReleaseWait = time.Second

// releaseSent waits until the statement carrying a release has run (sent,
// from claimer.release), the claimer has stopped, ctx is done or
// maxReleaseWait has passed. It is called once the process slot has gone to
// the next Work call, before the result is written:
//
//   - When a Work call was waiting for the process slot just freed
//     (claimFollows), its claim comes at once and carries the release, and
//     takes the freed slot in the same statement. Sent on its own beside
//     that claim, the release was a statement more per execution, and the
//     claim, in the other statement in flight, could find the key still
//     full and wait for the release's wake. Should that claim not come
//     within releaseFlushAfter, the release is sent on its own.
//   - With no claim to come, the release is sent on its own at once: held
//     until the settle, the slot would keep another replica's claim
//     waiting.
//
// The result waits for the release because a settle that began first
// would hold the execution's row, the release would skip it (see
// claim_many's releases in 019_policy_handover.sql), and the seat would
// stay held until the settle committed: under a limit that the replicas'
// process slots just fill, one claim in fifteen found the key full and
// queued for the settle's hand-over.
func (w *executor) releaseSent(ctx context.Context, sent <-chan struct{}, claimFollows bool) {
	limit := time.NewTimer(maxReleaseWait)
	defer limit.Stop()
	alone := &claimRequest{} // a statement of releases alone
	// flush is nil, never ready, until it is time to ask: at once with no
	// claim to come, else when ask fires.
	var flush chan<- *claimRequest
	var ask <-chan time.Time
	if claimFollows {
		t := time.NewTimer(releaseFlushAfter)
		defer t.Stop()
		ask = t.C
	} else {
		flush = w.claimer.batches.reqs
	}
	for {
		select {
		case <-sent:
			return
		case <-w.claimer.batches.stopped:
			return
		case <-ctx.Done():
			return
		case <-limit.C:
			return
		case <-ask:
			flush = w.claimer.batches.reqs
		case flush <- alone:
			flush = nil
		}
	}
}

// takeReleased returns the releases waiting for a claim statement.
func (c *claimer) takeReleased() []release {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.released
	c.released = nil
	return r
}

func (c *claimer) serve(ctx context.Context, batch []*claimRequest) {
	// A claim is not interrupted half way (it would be unknown whether the
	// row says running): once sent, the statement runs to its end.
	ctx = context.WithoutCancel(ctx)
	releases := c.takeReleased()
	rows, err := c.claimMany(ctx, batch, releases)
	for _, r := range releases {
		close(r.sent)
	}
	if err != nil && len(batch) > 1 && !schema.Transient(err) {
		// One bad row must not fail the others: claim them one by one.
		for _, r := range batch {
			rows, err := c.claimMany(ctx, []*claimRequest{r}, nil)
			r.answer(rows, err)
		}
		return
	}
	// A transient error goes to each Work call, which retries its claim
	// (executor.claim), with whatever else is waiting by then.
	for _, r := range batch {
		r.answer(rows, err)
	}
}

func (r *claimRequest) answer(rows map[int64]*claimRow, err error) {
	if r.job != nil {
		r.done <- claimAnswer{rows[r.job.ID], err}
	}
}

// claimMany runs claim_many for batch, after releases, and returns its
// rows by River job id.
func (c *claimer) claimMany(ctx context.Context, batch []*claimRequest, releases []release) (map[int64]*claimRow, error) {
	var ids, jobIDs, released []int64
	var attempts, releasedAttempts []int
	for _, r := range releases {
		released, releasedAttempts = append(released, r.id), append(releasedAttempts, r.attempt)
	}
	for _, r := range batch {
		if r.job != nil {
			ids, attempts, jobIDs = append(ids, r.job.Args.ExecutionID), append(attempts, r.job.Attempt), append(jobIDs, r.job.ID)
		}
	}
	n := len(ids)
	rows, err := c.pool.Query(ctx, "SELECT * FROM attune.claim_many($1, $2, $3, $4, $5, $6)",
		ids, attempts, jobIDs, c.worker, released, releasedAttempts)
	if err != nil {
		return nil, fmt.Errorf("error claiming %d execution(s): %w", n, err)
	}
	defer rows.Close()
	out := make(map[int64]*claimRow, n)
	for rows.Next() {
		var jobID int64
		r := &claimRow{}
		if err := rows.Scan(&jobID, &r.admitted, &r.cancelled, &r.retryAt, &r.reason, &r.retryOn, &r.holdsSlots,
			&r.maxAttempts, &r.actionRef, &r.packRef, &r.runnerType, &r.path,
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

// claim admits job's execution under its action's and pack's policies,
// marks it running for its attempt and reads everything needed to start
// it, in a batch with other Work calls' claims. A refusal by a policy is
// returned as refused, nothing claimed. pgx.ErrNoRows is an execution that
// may not run. While the database is unreachable the claim is tried again
// until ctx ends: a claim lost to an outage would cost an attempt.
func (w *executor) claim(ctx context.Context, job *river.Job[jobs.ExecutionArgs]) (c *claimed, refused *admission, err error) {
	var row *claimRow
	err = schema.Retry(ctx, quietRetry(w.retryLog, "claiming an execution", "id", job.Args.ExecutionID), func() (err error) {
		row, err = w.claimer.claim(job)
		return err
	})
	var pgErr *pgconn.PgError
	switch {
	case errors.As(err, &pgErr) && strings.Contains(pgErr.Where, "function attune.policy_admit("):
		// The action's or pack's policy cannot be applied (the claimer
		// has tried this row alone): nothing was claimed.
		return nil, &admission{Error: pgErr.Message}, nil
	case err != nil:
		return nil, nil, err
	case row == nil:
		return nil, nil, pgx.ErrNoRows
	case !row.admitted:
		return nil, &admission{Cancelled: row.cancelled, RetryAt: row.retryAt, Reason: row.reason}, nil
	}
	if row.retryOn != nil {
		w.retryOn.Store(job.ID, row.retryOn)
	}
	c, err = row.decode(job)
	if c != nil {
		c.HoldsSlots = row.holdsSlots
	}
	return c, nil, err
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
