package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"

	"github.com/attune-system/attune/worker/process"
)

// The peer is the River worker a Go user would write instead of attune: it
// runs the same binary through the same process layer, INSERTs its result
// into a table of its own and completes the River job in that transaction.
// It lives in a schema of its own, so its River tables and notifications
// never meet attune's.

// peerSchema holds the peer's River tables and its results table.
const peerSchema = "attune_bench_peer"

type peerArgs struct{}

func (peerArgs) Kind() string { return "bench_peer" }

type peerWorker struct {
	river.WorkerDefaults[peerArgs]
	bin  string
	pool *pgxpool.Pool
	done chan<- struct{}
}

func (w *peerWorker) Work(ctx context.Context, job *river.Job[peerArgs]) error {
	res := process.Run(ctx, process.Spec{Path: w.bin})
	if err := res.Err(); err != nil {
		return err
	}
	err := pgx.BeginFunc(ctx, w.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "INSERT INTO "+peerSchema+".result (job_id, exit_code, stdout, stderr) VALUES ($1, $2, $3, $4)",
			job.ID, res.ExitCode, res.Stdout, res.Stderr); err != nil {
			return err
		}
		_, err := river.JobCompleteTx[*riverpgxv5.Driver](ctx, tx, job)
		return err
	})
	if err == nil {
		w.done <- struct{}{}
	}
	return err
}

// peer is a running peer worker.
type peer struct {
	pool   *pgxpool.Pool
	client *river.Client[pgx.Tx]
	done   chan struct{}
}

// startPeer resets the peer's schema on the database at url and starts its
// River client with conc workers.
func startPeer(ctx context.Context, url, bin string, conc, capacity int) (*peer, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, err
	}
	cfg.MaxConns = int32(conc + 4)
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	p := &peer{pool: pool, done: make(chan struct{}, capacity)}
	if err := p.reset(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	workers := river.NewWorkers()
	river.AddWorker(workers, &peerWorker{bin: bin, pool: pool, done: p.done})
	p.client, err = river.NewClient(riverpgxv5.New(pool), &river.Config{
		Schema:        peerSchema,
		Queues:        map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: conc}},
		FetchCooldown: 2 * time.Millisecond,
		Workers:       workers,
		Logger:        slog.New(slog.DiscardHandler),
	})
	if err == nil {
		err = p.client.Start(ctx)
	}
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("error starting the peer River worker: %w", err)
	}
	return p, nil
}

func (p *peer) reset(ctx context.Context) error {
	if _, err := p.pool.Exec(ctx, "DROP SCHEMA IF EXISTS "+peerSchema+" CASCADE; CREATE SCHEMA "+peerSchema); err != nil {
		return fmt.Errorf("error creating schema %s for the peer: %w", peerSchema, err)
	}
	m, err := rivermigrate.New(riverpgxv5.New(p.pool), &rivermigrate.Config{Schema: peerSchema, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return err
	}
	if _, err := m.Migrate(ctx, rivermigrate.DirectionUp, nil); err != nil {
		return fmt.Errorf("error migrating River in schema %s: %w", peerSchema, err)
	}
	_, err = p.pool.Exec(ctx, "CREATE TABLE "+peerSchema+`.result (
		job_id bigint PRIMARY KEY, exit_code int NOT NULL, stdout text NOT NULL, stderr text NOT NULL,
		finished_at timestamptz NOT NULL DEFAULT now())`)
	return err
}

// run inserts n jobs in one batch and waits until n have committed.
func (p *peer) run(ctx context.Context, n int, report func(done int)) error {
	params := make([]river.InsertManyParams, n)
	for i := range params {
		params[i] = river.InsertManyParams{Args: peerArgs{}}
	}
	if _, err := p.client.InsertManyFast(ctx, params); err != nil {
		return fmt.Errorf("error inserting peer jobs: %w", err)
	}
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for done := 0; done < n; {
		select {
		case <-p.done:
			done++
		case <-tick.C:
			if report != nil {
				report(done)
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// results is how many results the peer has committed.
func (p *peer) results(ctx context.Context) (int, error) {
	var n int
	err := p.pool.QueryRow(ctx, "SELECT count(*) FROM "+peerSchema+".result").Scan(&n)
	return n, err
}

// stop stops the peer and drops its schema.
func (p *peer) stop(ctx context.Context) error {
	err := p.client.Stop(ctx)
	if _, derr := p.pool.Exec(ctx, "DROP SCHEMA IF EXISTS "+peerSchema+" CASCADE"); err == nil {
		err = derr
	}
	p.pool.Close()
	return err
}
