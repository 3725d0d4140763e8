package worker

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// pruneLockKey is the advisory lock that lets one replica at a time prune.
const pruneLockKey = 0x6174746e7072 // "attnpr"

// pruneBatch is how many rows one pruning transaction deletes: small, so
// each transaction is short and holds few locks.
const pruneBatch = 1000

// pruneEvery is how often a replica tries to prune.
const pruneEvery = 10 * time.Minute

// PruneResult counts what a prune removed (or, dry, would remove).
type PruneResult struct {
	Executions int `json:"executions"`
	Events     int `json:"events"`
}

// PruneCandidate is a finished execution past its retention.
type PruneCandidate struct {
	ID         int64     `json:"id"`
	ActionRef  string    `json:"action_ref"`
	Status     string    `json:"status"`
	FinishedAt time.Time `json:"finished_at"`
}

// interval renders d for PostgreSQL's interval input.
func interval(d time.Duration) string {
	return strconv.FormatInt(d.Microseconds(), 10) + " microseconds"
}

// Prune deletes finished executions past their retention (their action's
// retention:, else retention, ATTUNE_RETENTION), each event with the last
// of the executions it led to, and events past retention that no execution
// names, in batches of pruneBatch rows, each its own transaction
// (schema/migrations/011_policy.sql, 016_policy_fixes.sql), and the seats
// of idle concurrency keys (018_policy_seats.sql). Running and queued
// executions are never candidates. It holds the prune advisory lock while
// it runs; ok is false when another session holds it.
func Prune(ctx context.Context, pool *pgxpool.Pool, retention time.Duration, log *slog.Logger) (res PruneResult, ok bool, err error) {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return res, false, fmt.Errorf("error acquiring a connection to prune: %w", err)
	}
	defer conn.Release()
	if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1)", int64(pruneLockKey)).Scan(&ok); err != nil {
		return res, false, fmt.Errorf("error taking the prune lock: %w", err)
	}
	if !ok {
		return res, false, nil
	}
	defer func() {
		// A session lock outlives the call unless released; a broken
		// connection releases it anyway.
		_, _ = conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", int64(pruneLockKey))
	}()
	start := time.Now()
	// Executions first, each batch taking along the events whose last
	// execution it deleted; then the events that led to no execution.
	for {
		var execs, events int
		if err := conn.QueryRow(ctx, "SELECT executions, events FROM attune.prune_executions($1::interval, $2)",
			interval(retention), pruneBatch).Scan(&execs, &events); err != nil {
			return res, true, fmt.Errorf("error pruning executions: %w", err)
		}
		res.Executions += execs
		res.Events += events
		if execs < pruneBatch {
			break
		}
	}
	for {
		var n int
		if err := conn.QueryRow(ctx, "SELECT attune.prune_events($1::interval, $2, false)", interval(retention), pruneBatch).Scan(&n); err != nil {
			return res, true, fmt.Errorf("error pruning events: %w", err)
		}
		res.Events += n
		if n < pruneBatch {
			break
		}
	}
	// The seats of concurrency keys nobody holds or waits for
	// (018_policy_seats.sql): bookkeeping, not history, so they go
	// whatever the retention, and are not counted in the result.
	var keys int
	for {
		var n int
		if err := conn.QueryRow(ctx, "SELECT attune.prune_seats($1)", pruneBatch).Scan(&n); err != nil {
			return res, true, fmt.Errorf("error pruning idle concurrency keys: %w", err)
		}
		keys += n
		if n < pruneBatch {
			break
		}
	}
	if res.Executions > 0 || res.Events > 0 || keys > 0 {
		log.Info("pruned finished executions and old events", "executions", res.Executions, "events", res.Events,
			"idle_concurrency_keys", keys, "retention", retention, "took", time.Since(start).Round(time.Millisecond))
	}
	return res, true, nil
}

// PruneDry lists up to limit executions Prune would delete now, and counts
// the executions and events it would.
func PruneDry(ctx context.Context, pool *pgxpool.Pool, retention time.Duration, limit int) ([]PruneCandidate, PruneResult, error) {
	var res PruneResult
	rows, err := pool.Query(ctx, "SELECT id, action_ref, status, finished_at FROM attune.prune_candidates($1::interval, $2)",
		interval(retention), limit)
	if err != nil {
		return nil, res, fmt.Errorf("error listing what would be pruned: %w", err)
	}
	cands, err := pgx.CollectRows(rows, pgx.RowToStructByPos[PruneCandidate])
	if err != nil {
		return nil, res, fmt.Errorf("error listing what would be pruned: %w", err)
	}
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM attune.prune_candidates($1::interval, 2147483647)",
		interval(retention)).Scan(&res.Executions); err != nil {
		return nil, res, fmt.Errorf("error counting what would be pruned: %w", err)
	}
	if err := pool.QueryRow(ctx, "SELECT attune.prune_events($1::interval, 0, true)", interval(retention)).Scan(&res.Events); err != nil {
		return nil, res, fmt.Errorf("error counting the events that would be pruned: %w", err)
	}
	return cands, res, nil
}

// pruner prunes every pruneEvery while the replica runs; one replica at a
// time does (the advisory lock), the others skip that round.
type pruner struct {
	pool      *pgxpool.Pool
	retention time.Duration
	log       *slog.Logger
	cancel    context.CancelFunc
	done      chan struct{}
}

func (p *pruner) start(ctx context.Context) {
	ctx, p.cancel = context.WithCancel(context.WithoutCancel(ctx))
	p.done = make(chan struct{})
	go func() {
		defer close(p.done)
		t := time.NewTimer(time.Minute) // not at the very start: let a restart settle first
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			if _, _, err := Prune(ctx, p.pool, p.retention, p.log); err != nil && ctx.Err() == nil {
				p.log.Warn("pruning failed", "err", err)
			}
			t.Reset(pruneEvery)
		}
	}()
}

func (p *pruner) stop() {
	if p.cancel != nil {
		p.cancel()
		<-p.done
	}
}
