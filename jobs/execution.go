package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"

	"github.com/attune-system/attune/schema"
)

// Execution statuses (Attune's).
const (
	StatusRequested = "requested"
	StatusScheduled = "scheduled"
	StatusRunning   = "running"
	StatusCompleted = "completed"
	StatusFailed    = "failed"
	StatusTimeout   = "timeout"
	StatusCanceling = "canceling"
	StatusCancelled = "cancelled"
	StatusAbandoned = "abandoned"
)

// Statuses lists every status in the order of an execution's life: queued,
// running, then the final ones. The API's enum and the console's filters
// use it.
var Statuses = []string{StatusRequested, StatusScheduled, StatusRunning, StatusCanceling,
	StatusCompleted, StatusFailed, StatusTimeout, StatusCancelled, StatusAbandoned}

// Finished reports whether status is final.
func Finished(status string) bool {
	switch status {
	case StatusCompleted, StatusFailed, StatusTimeout, StatusCancelled, StatusAbandoned:
		return true
	}
	return false
}

// Execution is one row of attune.execution.
type Execution struct {
	ID              int64           `json:"id"`
	ActionRef       string          `json:"action_ref"`
	Status          string          `json:"status"`
	Parameters      json.RawMessage `json:"parameters"`
	Result          json.RawMessage `json:"result"`
	ExitCode        *int            `json:"exit_code"`
	Stdout          *string         `json:"stdout"`
	Stderr          *string         `json:"stderr"`
	StdoutTruncated bool            `json:"stdout_truncated"`
	StderrTruncated bool            `json:"stderr_truncated"`
	Error           *string         `json:"error"`
	Worker          *string         `json:"worker"`
	Attempt         int             `json:"attempt"`
	MaxAttempts     int             `json:"max_attempts"`
	Priority        int             `json:"priority"`
	TimeoutSeconds  *int            `json:"timeout_seconds"`
	RuleRef         *string         `json:"rule_ref"`
	EventID         *int64          `json:"event_id"`
	CreatedAt       time.Time       `json:"created_at"`
	ScheduledAt     time.Time       `json:"scheduled_at"`
	StartedAt       *time.Time      `json:"started_at"`
	FinishedAt      *time.Time      `json:"finished_at"`
	// WaitingReason says why a queued execution has not started (a
	// concurrency or rate limit); NextAttemptAt is when River runs its
	// next attempt, for a queued execution scheduled for later.
	WaitingReason *string    `json:"waiting_reason"`
	NextAttemptAt *time.Time `json:"next_attempt_at"`
}

const executionColumns = `id, action_ref, status, parameters, result, exit_code, stdout, stderr,
	stdout_truncated, stderr_truncated, error, worker, attempt, max_attempts, priority, timeout_seconds,
	rule_ref, event_id, created_at, scheduled_at, started_at, finished_at,
	waiting_reason, (SELECT p.next_attempt_at FROM attune.execution_policy(id) p)`

func scanExecution(row pgx.Row) (*Execution, error) {
	var e Execution
	var params, result []byte // raw: a row Go cannot decode must still list
	err := row.Scan(&e.ID, &e.ActionRef, &e.Status, &params, &result, &e.ExitCode, &e.Stdout,
		&e.Stderr, &e.StdoutTruncated, &e.StderrTruncated, &e.Error, &e.Worker, &e.Attempt,
		&e.MaxAttempts, &e.Priority, &e.TimeoutSeconds, &e.RuleRef, &e.EventID, &e.CreatedAt, &e.ScheduledAt,
		&e.StartedAt, &e.FinishedAt, &e.WaitingReason, &e.NextAttemptAt)
	e.Parameters, e.Result = readableJSON(params), readableJSON(result)
	return &e, err
}

// readableJSON is b, or, when encoding/json cannot read it (nested past its
// depth limit: enqueueing refuses such parameters, but an older row or a
// hand-written one may hold them), a JSON string saying so.
func readableJSON(b []byte) json.RawMessage {
	if b == nil || json.Valid(b) {
		return b
	}
	return json.RawMessage(`"(not shown: nested too deeply to decode)"`)
}

// ErrNotFound is returned for an execution id that does not exist.
var ErrNotFound = errors.New("execution not found")

// Querier is what reads need: a pool, a connection or a transaction.
type Querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// Get reads one execution.
func Get(ctx context.Context, db Querier, id int64) (*Execution, error) {
	return get(ctx, db, id, executionColumns)
}

// GetFacts reads one execution without its stdout and stderr (Stdout and
// Stderr nil), which may hold 10 MiB each: for a page that refreshes the
// rest while the output comes by its stream.
func GetFacts(ctx context.Context, db Querier, id int64) (*Execution, error) {
	return get(ctx, db, id, listColumns)
}

func get(ctx context.Context, db Querier, id int64, columns string) (*Execution, error) {
	e, err := scanExecution(db.QueryRow(ctx, "SELECT "+columns+" FROM attune.execution WHERE id = $1", id))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("%w: %d (attune execution list shows recent ones)", ErrNotFound, id)
	}
	if err != nil {
		return nil, fmt.Errorf("error reading execution %d: %w", id, err)
	}
	return e, nil
}

// Cancel cancels an execution: a queued one becomes cancelled at once; a
// running one becomes canceling, and the replica running it gets River's
// remote cancel, kills the process group and records cancelled. It returns
// the status after the call; cancelling a finished execution changes nothing.
func Cancel(ctx context.Context, pool *pgxpool.Pool, id int64) (string, error) {
	client, err := inserter()
	if err != nil {
		return "", err
	}
	var status string
	// The cancel may meet an admission or River's write of a snooze on the
	// same rows, through the policies' triggers, and be the one PostgreSQL
	// picks to break a deadlock: the whole transaction runs again.
	err = schema.Retry(ctx, schema.RetryPolicy{GiveUpAfter: 10 * time.Second}, func() error {
		return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			return cancelTx(ctx, tx, client, id, &status)
		})
	})
	return status, err
}

// cancelTx is one try of Cancel.
func cancelTx(ctx context.Context, tx pgx.Tx, client *river.Client[pgx.Tx], id int64, status *string) error {
	// attune.cancel_execution (schema/migrations/005_state_machine.sql)
	// locks the row and moves it; River's cancel, in the same transaction,
	// reaches the replica running it.
	var jobID *int64
	var changed bool
	err := tx.QueryRow(ctx, "SELECT status, job_id, changed FROM attune.cancel_execution($1)", id).Scan(status, &jobID, &changed)
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("%w: %d (attune execution list shows recent ones)", ErrNotFound, id)
	}
	if err != nil {
		return fmt.Errorf("error cancelling execution %d: %w", id, err)
	}
	if changed && jobID != nil {
		if _, err := client.JobCancelTx(ctx, tx, *jobID); err != nil {
			return fmt.Errorf("error cancelling River job %d: %w", *jobID, err)
		}
	}
	return nil
}
