package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivertype"

	"github.com/attune-system/attune/jobs"
	"github.com/attune-system/attune/schema"
)

// settlement is one finished attempt waiting to be written.
type settlement struct {
	job  *river.Job[jobs.ExecutionArgs]
	id   int64
	out  outcome
	res  []byte // result JSON, nil for none
	err  *string
	done chan error
	// retried is set by the completer: whether the row went back to
	// requested. It differs from out.retry when a cancel came first.
	retried bool
}

// completer writes finished attempts in batches (batches, batch.go):
// several executions' rows and their River jobs' completions in one
// transaction, each row committed together with the completion of its own
// job, so that one commit and its WAL flush serve many executions.
type completer struct {
	worker  string // this replica's name: only its own attempts are written
	riverID string // its River client id, part of each attempt's token
	pool    *pgxpool.Pool
	driver  *riverpgxv5.Driver // the River client's, for completeJobs
	log     *slog.Logger
	// retryLog is log muted during an outage, for the retries' warnings.
	retryLog *slog.Logger
	batches  *batches[*settlement]

	// onFinish, when set, observes each final outcome once committed
	// (benchmarks).
	onFinish func(id int64, status string)
}

// errCompleterStopped is returned to a Work call whose result could not be
// written before the replica stopped; River's rescuer or the dead-worker
// reaper settles the execution instead.
var errCompleterStopped = errors.New("replica stopped before the result was written")

const maxBatch = 128

func newCompleter(worker string, pool *pgxpool.Pool, driver *riverpgxv5.Driver, log, retryLog *slog.Logger) *completer {
	return &completer{worker: worker, riverID: riverID(worker), pool: pool, driver: driver, log: log, retryLog: retryLog,
		batches: newBatches[*settlement](maxBatch)}
}

// completerLoops is how many transactions may be in flight at once, and
// completerStagger how long one runs before the next may start: normally
// one at a time, so that the results finishing during a transaction's
// round trips and flush share the next one (each transaction costs
// PostgreSQL a plan of River's completion statement and a WAL flush,
// whatever its size); a transaction waiting on a row lock or a slow disk
// holds back the others no longer than that.
const (
	completerLoops   = 3
	completerStagger = 20 * time.Millisecond
)

// run serves requests until ctx is done.
func (c *completer) run(ctx context.Context) {
	c.batches.run(ctx, completerLoops, maxBatch, completerStagger, c.serve)
}

func (c *completer) serve(ctx context.Context, batch []*settlement) {
	err := c.write(ctx, batch)
	if err == nil {
		for _, s := range batch {
			c.finish(s, nil)
		}
		return
	}
	// One bad row must not fail the others: write them one by one.
	for _, s := range batch {
		err := err
		if len(batch) > 1 {
			err = c.write(ctx, []*settlement{s})
		}
		if err != nil && !schema.Transient(err) {
			err = c.writeBare(ctx, s, err)
		}
		c.finish(s, err)
	}
}

// finish reports a settlement's write to its Work call.
func (c *completer) finish(s *settlement, err error) {
	if err == nil && c.onFinish != nil && !s.retried {
		c.onFinish(s.id, s.out.Status)
	}
	s.done <- err
}

// writeBare stores an outcome whose full write PostgreSQL refused, without
// the output and result that caused it, so that storing output never leaves
// an execution running: the status stands and the error says why the rest
// is missing.
func (c *completer) writeBare(ctx context.Context, s *settlement, cause error) error {
	c.log.Error("execution result could not be stored; storing the status alone", "id", s.id, "err", cause)
	bare := *s
	bare.out.Stdout, bare.out.Stderr, bare.res = nil, nil, nil
	bare.out.StdoutTruncated, bare.out.StderrTruncated = false, false
	msg := fmt.Sprintf("the output and result could not be stored: %v", cause)
	if s.err != nil {
		msg = validText(*s.err) + "; " + msg
	}
	bare.err = &msg
	return c.write(ctx, []*settlement{&bare})
}

// submit queues s and waits for its transaction.
func (c *completer) submit(s *settlement) error {
	s.done = make(chan error, 1)
	err, ok := call(c.batches, s, s.done)
	if !ok {
		return errCompleterStopped
	}
	return err
}

// write commits batch. While the database is unreachable it waits for it,
// however long, until ctx (the completer's life) ends: a finished result is
// never given up for a timeout. Meanwhile the attempt holds no process slot,
// and what waits is bounded by River's workers (twice the slots).
func (c *completer) write(ctx context.Context, batch []*settlement) error {
	n := len(batch)
	var (
		ids       = make([]int64, n)
		jobIDs    = make([]int64, n)
		started   = make([]*time.Time, n)
		finished  = make([]*time.Time, n)
		attempts  = make([]int, n)
		statuses  = make([]string, n)
		results   = make([][]byte, n)
		exitCodes = make([]*int, n)
		stdouts   = make([]*string, n)
		stderrs   = make([]*string, n)
		outTrunc  = make([]bool, n)
		errTrunc  = make([]bool, n)
		errs      = make([]*string, n)
		retries   = make([]bool, n)
	)
	for i, s := range batch {
		ids[i], attempts[i], statuses[i], results[i] = s.id, s.job.Attempt, s.out.Status, s.res
		exitCodes[i], stdouts[i], stderrs[i] = s.out.ExitCode, s.out.Stdout, s.out.Stderr
		outTrunc[i], errTrunc[i], errs[i], retries[i] = s.out.StdoutTruncated, s.out.StderrTruncated, s.err, s.out.retry
		jobIDs[i] = s.job.ID
		if !s.out.StartedAt.IsZero() {
			started[i] = &s.out.StartedAt
		}
		if !s.out.FinishedAt.IsZero() {
			finished[i] = &s.out.FinishedAt
		}
	}
	// The transaction runs without cancellation: once sent, it commits or
	// fails as a whole. The retries stop with ctx. The heartbeat logs the
	// outage, once.
	txCtx := context.WithoutCancel(ctx)
	return schema.Retry(ctx, quietRetry(c.retryLog, "writing results", "executions", ids), func() error {
		return pgx.BeginFunc(txCtx, c.pool, func(tx pgx.Tx) error {
			// Only this worker's current attempt is written, on its token
			// (the River job running at that attempt on this client), and an
			// attempt cancelled meanwhile ends cancelled rather than retried
			// (attune.settle, schema/migrations/009_settle.sql).
			rows, err := tx.Query(txCtx, `SELECT id, retry FROM attune.settle($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12,
				$13, $14, $15, $16)`,
				ids, jobIDs, attempts, statuses, results, exitCodes, stdouts, stderrs, outTrunc, errTrunc, errs, retries,
				started, finished, c.worker, c.riverID)
			if err != nil {
				return fmt.Errorf("error writing %d execution(s): %w", n, err)
			}
			mine := map[int64]bool{} // id → went back to requested
			var id int64
			var retry bool
			if _, err := pgx.ForEachRow(rows, []any{&id, &retry}, func() error { mine[id] = retry; return nil }); err != nil {
				return fmt.Errorf("error writing %d execution(s): %w", n, err)
			}
			var final []*river.Job[jobs.ExecutionArgs]
			for _, s := range batch {
				retry, ok := mine[s.id]
				s.retried = s.out.retry
				if !ok {
					c.log.Warn("late result refused: this attempt is no longer this replica's (another replica settled or retried it after this one was fenced or reaped)",
						"id", s.id, "attempt", s.job.Attempt, "job", s.job.ID, "status", s.out.Status)
					continue
				}
				if s.retried = retry; retry {
					continue // River records the attempt's error and runs it again
				}
				final = append(final, s.job)
			}
			return c.completeJobs(txCtx, tx, final)
		})
	})
}

// completeJobs completes River jobs in tx, all in one statement: what
// river.JobCompleteTx does for one job (job_complete_tx.go of River
// v0.51.2: JobSetStateIfRunningMany with JobSetStateCompleted's parameters,
// an error when a job is not found), without a round trip per job. River's
// own completion after Work returns nil then finds each job finished and
// leaves it be, as it does after JobCompleteTx.
//
// JobCompleteTx also merges the metadata a worker recorded in its context
// (river.RecordOutput); attune records output in its own row and calls
// neither RecordOutput nor anything that records metadata, so there is
// none to merge. This is River's driver interface, not its stable API:
// check it against JobCompleteTx when River is upgraded.
func (c *completer) completeJobs(ctx context.Context, tx pgx.Tx, batch []*river.Job[jobs.ExecutionArgs]) error {
	if len(batch) == 0 {
		return nil
	}
	n := len(batch)
	p := &riverdriver.JobSetStateIfRunningManyParams{
		ID: make([]int64, n), Attempt: make([]*int, n), ErrData: make([][]byte, n),
		FinalizedAt: make([]*time.Time, n), MetadataDoMerge: make([]bool, n), MetadataUpdates: make([][]byte, n),
		ScheduledAt: make([]*time.Time, n), State: make([]rivertype.JobState, n),
		Schema: schema.Name, // the River client's (NewServer)
	}
	now := time.Now()
	for i, job := range batch {
		if job.State != rivertype.JobStateRunning {
			return fmt.Errorf("error completing River job %d: job must be running, is %s", job.ID, job.State)
		}
		one := riverdriver.JobSetStateCompleted(job.ID, now, nil)
		p.ID[i], p.Attempt[i], p.ErrData[i], p.FinalizedAt[i] = one.ID, one.Attempt, one.ErrData, one.FinalizedAt
		p.MetadataDoMerge[i], p.MetadataUpdates[i] = one.MetadataDoMerge, one.MetadataUpdates
		p.ScheduledAt[i], p.State[i] = one.ScheduledAt, one.State
	}
	rows, err := c.driver.UnwrapExecutor(tx).JobSetStateIfRunningMany(ctx, p)
	if err != nil {
		return fmt.Errorf("error completing %d River job(s): %w", n, err)
	}
	found := make(map[int64]bool, len(rows))
	for _, r := range rows {
		found[r.ID] = true
	}
	for _, job := range batch {
		if !found[job.ID] {
			return fmt.Errorf("error completing River job %d: %w", job.ID, rivertype.ErrNotFound)
		}
	}
	return nil
}
