package main

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// pickupResult is the latency from an enqueue's commit to its process
// start, and the steps it splits into.
type pickupResult struct {
	Samples int     `json:"samples"`
	P50Ms   float64 `json:"p50_ms"`
	P99Ms   float64 `json:"p99_ms"`
	// Notify is commit → River's insert notification received by a
	// listener of bench's own, as River's notifier would receive it.
	NotifyP50Ms float64 `json:"notify_p50_ms"`
	NotifyP99Ms float64 `json:"notify_p99_ms"`
	// Fetch is commit → River's fetch (the job's attempted_at, the fetch
	// transaction's start on the server's clock).
	FetchP50Ms float64 `json:"fetch_p50_ms"`
	FetchP99Ms float64 `json:"fetch_p99_ms"`
	// Claim is River's fetch → attune's claim (the execution's started_at,
	// the claim transaction's start): the fetch query, its reply and the
	// hand-off to a worker goroutine.
	ClaimP50Ms float64 `json:"claim_p50_ms"`
	ClaimP99Ms float64 `json:"claim_p99_ms"`
	// Start is the claim → the process started: the claim query and its
	// reply, building the process's spec, its work directory and the fork.
	StartP50Ms float64 `json:"start_p50_ms"`
	StartP99Ms float64 `json:"start_p99_ms"`
}

// measurePickup enqueues n executions one at a time as an application would
// (SQL attune.enqueue over a pool of its own, autocommit), waiting for each
// to finish before the next; startedAt reports when the worker started an
// execution's process and finished waits until it is settled.
func measurePickup(ctx context.Context, url string, n int, startedAt func(id int64) (time.Time, bool),
	finished func(ctx context.Context, id int64) error, report func(i int)) (*pickupResult, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, err
	}
	cfg.MaxConns = 2
	app, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer app.Close()
	notes, stopListening, err := listenInserts(ctx, url)
	if err != nil {
		return nil, err
	}
	defer stopListening()

	var total, notify, fetch, claim, start []float64
	for i := range n {
		report(i)
		for len(notes) > 0 { // an earlier enqueue's, late
			<-notes
		}
		var id int64
		if err := app.QueryRow(ctx, "SELECT attune.enqueue('bench.noop')").Scan(&id); err != nil {
			return nil, fmt.Errorf("error enqueueing: %w", err)
		}
		committed := time.Now()
		if err := finished(ctx, id); err != nil {
			return nil, err
		}
		at, ok := startedAt(id)
		if !ok {
			continue
		}
		total = append(total, msSince(committed, at))
		select {
		case heard := <-notes:
			notify = append(notify, msSince(committed, heard))
		default:
		}
		var attempted, claimed time.Time
		err := app.QueryRow(ctx, `SELECT j.attempted_at, e.started_at FROM attune.execution e
			JOIN attune.river_job j ON j.id = e.job_id WHERE e.id = $1`, id).Scan(&attempted, &claimed)
		if err != nil {
			return nil, fmt.Errorf("error reading the River job of execution %d: %w", id, err)
		}
		fetch = append(fetch, msSince(committed, attempted))
		claim = append(claim, msSince(attempted, claimed))
		start = append(start, msSince(claimed, at))
	}
	r := &pickupResult{Samples: len(total)}
	r.P50Ms, r.P99Ms = percentiles(total)
	r.NotifyP50Ms, r.NotifyP99Ms = percentiles(notify)
	r.FetchP50Ms, r.FetchP99Ms = percentiles(fetch)
	r.ClaimP50Ms, r.ClaimP99Ms = percentiles(claim)
	r.StartP50Ms, r.StartP99Ms = percentiles(start)
	return r, nil
}

// listenInserts LISTENs on a connection of its own to the channel River's
// producers in schema attune listen to, and reports when each notification
// arrives.
func listenInserts(ctx context.Context, url string) (<-chan time.Time, func(), error) {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return nil, nil, err
	}
	if _, err := conn.Exec(ctx, `LISTEN "attune.river_insert"`); err != nil {
		conn.Close(ctx)
		return nil, nil, err
	}
	lctx, cancel := context.WithCancel(ctx)
	notes := make(chan time.Time, 16)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			if _, err := conn.WaitForNotification(lctx); err != nil {
				return
			}
			select {
			case notes <- time.Now():
			default:
			}
		}
	}()
	return notes, func() {
		cancel()
		<-done
		conn.Close(context.WithoutCancel(ctx))
	}, nil
}

func msSince(from, to time.Time) float64 { return float64(to.Sub(from).Microseconds()) / 1000 }

// percentiles returns the p50 and p99 of samples (nearest rank), sorting
// them.
func percentiles(samples []float64) (p50, p99 float64) {
	if len(samples) == 0 {
		return 0, 0
	}
	slices.Sort(samples)
	at := func(p int) float64 { return samples[min(len(samples)-1, (len(samples)*p+99)/100-1)] }
	return at(50), at(99)
}
