package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivertype"

	"github.com/attune-system/attune/schema"
)

// Options are the enqueue options of SPEC §4. Zero values mean "use the
// action's or the worker's default".
type Options struct {
	// TimeoutSeconds overrides the action's timeout_seconds.
	TimeoutSeconds int `json:"timeout_seconds,omitempty"`
	// Priority is 1 (first) to 4 (last); 0 means 1.
	Priority int `json:"priority,omitempty"`
	// ScheduledAt delays the execution until then.
	ScheduledAt time.Time `json:"scheduled_at,omitzero"`
	// MaxAttempts overrides the action's max_retries + 1.
	MaxAttempts int `json:"max_attempts,omitempty"`
	// SecretsKey, when set, seals the values of secret parameters
	// (AES-256-GCM, as the secret store) before attune.execution_secret
	// holds them until the execution ends; it must be the installation's
	// key (CheckSecretsKey). Without it they wait there in clear, as they
	// do when enqueued from SQL. Pass ATTUNE_SECRETS_KEY decoded.
	SecretsKey []byte `json:"-"`
}

// Request is one execution to enqueue.
type Request struct {
	ActionRef  string
	Parameters map[string]any
	Options    Options

	// fired is the rule firing that enqueues, set only by EnqueueForRule:
	// no caller can make a child's ATTUNE_RULE say what did not happen.
	fired *firing
}

type firing struct {
	rule  string
	event int64
}

// EnqueueForRule creates inside tx the execution that rule ruleRef fires
// for event eventID, with its action and rendered parameters; the database
// checks that the rule names that action and the event is of its trigger.
// secretsKey seals its secret parameters, as Options.SecretsKey does.
func EnqueueForRule(ctx context.Context, tx pgx.Tx, ruleRef string, eventID int64, actionRef string, params map[string]any, secretsKey []byte) (int64, error) {
	ids, err := EnqueueMany(ctx, tx, []Request{{ActionRef: actionRef, Parameters: params, Options: Options{SecretsKey: secretsKey},
		fired: &firing{ruleRef, eventID}}})
	if err != nil {
		return 0, err
	}
	return ids[0], nil
}

// Error is an enqueue rejected for its input: an unknown or disabled action,
// a bad parameter or option. Error() is one line a user can act on.
type Error struct {
	Code    string // SQLSTATE: 42704 unknown action, 55000 disabled, 22023 bad parameter or option
	Message string
	Hint    string
}

func (e *Error) Error() string {
	if e.Hint == "" {
		return e.Message
	}
	return e.Message + ". " + e.Hint
}

// AsError turns a PostgreSQL error raised by attune's enqueue checks into an
// *Error; other errors come back unchanged.
func AsError(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "42704", "55000", "22023":
			return &Error{Code: pgErr.Code, Message: pgErr.Message, Hint: pgErr.Hint}
		}
	}
	return err
}

// inserter is an insert-only River client: no queues, no pool, just the
// job-row logic River applies inside a caller's transaction.
var inserter = sync.OnceValues(func() (*river.Client[pgx.Tx], error) {
	return river.NewClient(riverpgxv5.New(nil), &river.Config{Schema: schema.Name, Middleware: []rivertype.Middleware{&traceInsert{}}})
})

// Enqueue creates one execution of actionRef inside tx and returns its id.
// Nothing runs unless tx commits. Validation is the same as SQL's
// attune.enqueue; a rejected input returns an *Error and writes nothing.
func Enqueue(ctx context.Context, tx pgx.Tx, actionRef string, params map[string]any, opts *Options) (int64, error) {
	req := Request{ActionRef: actionRef, Parameters: params}
	if opts != nil {
		req.Options = *opts
	}
	ids, err := EnqueueMany(ctx, tx, []Request{req})
	if err != nil {
		return 0, err
	}
	return ids[0], nil
}

// EnqueueMany creates several executions inside tx with one River
// InsertManyTx, returning their ids in order. One bad request rejects all.
func EnqueueMany(ctx context.Context, tx pgx.Tx, reqs []Request) ([]int64, error) {
	if len(reqs) == 0 {
		return []int64{}, nil // River refuses an empty insert
	}
	client, err := inserter()
	if err != nil {
		return nil, fmt.Errorf("error creating River inserter: %w", err)
	}
	// A savepoint keeps a rejected request from aborting the caller's
	// transaction: the caller may still commit its other work.
	sp, err := tx.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("error starting enqueue: %w", err)
	}
	defer sp.Rollback(ctx) //nolint:errcheck

	preps := make([]prepared, len(reqs))
	params := make([]river.InsertManyParams, len(reqs))
	for i, req := range reqs {
		p, err := prepare(ctx, sp, req)
		if err != nil {
			return nil, err
		}
		if err := sealFor(req.Options.SecretsKey, &p); err != nil {
			return nil, err
		}
		preps[i] = p
		opts := &river.InsertOpts{Queue: p.Queue, Priority: p.Priority, MaxAttempts: p.MaxAttempts}
		// River makes any job with ScheduledAt "scheduled", to be promoted
		// by its scheduler seconds later; only a delay into the future (by
		// the database's clock, as attune.enqueue decides) sets it.
		if p.Future {
			opts.ScheduledAt = p.ScheduledAt
		}
		params[i] = river.InsertManyParams{Args: ExecutionArgs{ExecutionID: p.ExecutionID}, InsertOpts: opts}
	}
	results, err := client.InsertManyTx(ctx, sp, params)
	if err != nil {
		return nil, fmt.Errorf("error inserting River jobs: %w", err)
	}
	ids := make([]int64, len(reqs))
	var due []string            // queues of jobs runnable now, to wake
	keys := map[string][]byte{} // keys that sealed something, by fingerprint
	for i, p := range preps {
		secret := p.Secret
		if p.Sealed != nil {
			secret = []byte("{}") // enqueue_record writes no clear row
		}
		_, err := sp.Exec(ctx, "SELECT attune.enqueue_record($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
			p.ExecutionID, reqs[i].ActionRef, p.Public, secret, p.Priority, p.MaxAttempts, p.ScheduledAt,
			p.TimeoutSeconds, p.RuleRef, p.EventID, results[i].Job.ID)
		if err != nil {
			return nil, fmt.Errorf("error recording execution: %w", err)
		}
		if p.Sealed != nil {
			_, err := sp.Exec(ctx, "INSERT INTO attune.execution_secret (execution_id, parameters) VALUES ($1, $2)", p.ExecutionID, p.Sealed)
			if err != nil {
				return nil, fmt.Errorf("error recording secret parameters: %w", err)
			}
			key := reqs[i].Options.SecretsKey
			keys[KeyID(key)] = key
		}
		ids[i] = p.ExecutionID
		if !p.Future {
			due = append(due, p.Queue)
		}
	}
	// The key is checked after the rows are written: a key rotation that
	// committed while they waited on its lock shows here.
	for _, key := range keys {
		if err := requireKey(ctx, sp, key); err != nil {
			return nil, err
		}
	}
	// Wake listening workers as attune.enqueue does. River's own insert
	// notification is rate limited per process and spent even when the
	// transaction rolls back, which would leave the next enqueue waiting
	// for River's poll.
	if len(due) > 0 {
		if _, err := sp.Exec(ctx, "SELECT attune.wake_workers($1)", due); err != nil {
			return nil, fmt.Errorf("error notifying workers: %w", err)
		}
	}
	if err := sp.Commit(ctx); err != nil {
		return nil, fmt.Errorf("error finishing enqueue: %w", err)
	}
	return ids, nil
}

type prepared struct {
	ExecutionID    int64
	Queue          string
	Public, Secret []byte
	Sealed         []byte // Secret sealed (sealFor), nil when in clear
	Priority       int
	MaxAttempts    int
	ScheduledAt    time.Time
	Future         bool // ScheduledAt is after now()
	TimeoutSeconds *int32
	RuleRef        *string
	EventID        *int64
}

func prepare(ctx context.Context, tx pgx.Tx, req Request) (prepared, error) {
	params := req.Parameters
	if params == nil {
		params = map[string]any{}
	}
	pj, err := json.Marshal(params)
	if err != nil {
		return prepared{}, &Error{Code: "22023", Message: fmt.Sprintf("parameters cannot be encoded as JSON: %v", err)}
	}
	oj, err := json.Marshal(req.Options)
	if err != nil {
		return prepared{}, fmt.Errorf("error encoding options: %w", err)
	}
	var p prepared
	// attune.enqueue_prepare refuses rule_ref and event_id as options; a
	// rule firing goes through attune.enqueue_prepare_rule, which checks
	// both against their rows (schema/migrations/009_settle.sql).
	var row pgx.Row
	if req.fired == nil {
		row = tx.QueryRow(ctx, `SELECT execution_id, queue, public_parameters, secret_parameters, priority,
				max_attempts, scheduled_at, scheduled_at > now(), timeout_seconds, rule_ref, event_id
			FROM attune.enqueue_prepare($1, $2, $3)`, req.ActionRef, pj, oj)
	} else {
		row = tx.QueryRow(ctx, `SELECT execution_id, queue, public_parameters, secret_parameters, priority,
				max_attempts, scheduled_at, scheduled_at > now(), timeout_seconds, rule_ref_out, event_id_out
			FROM attune.enqueue_prepare_rule($1, $2, $3, $4)`, req.ActionRef, pj, req.fired.rule, req.fired.event)
	}
	err = row.Scan(&p.ExecutionID, &p.Queue, &p.Public, &p.Secret, &p.Priority, &p.MaxAttempts, &p.ScheduledAt,
		&p.Future, &p.TimeoutSeconds, &p.RuleRef, &p.EventID)
	if err != nil {
		return prepared{}, AsError(err)
	}
	return p, nil
}
