package main

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// pickupResult is the latency from an enqueue's commit to its process
// start, and the steps it splits into.
type pickupResult struct {
	Samples int     `json:"samples"`
	P50Ms   float64 `json:"p50_ms"`
	P99Ms   float64 `json:"p99_ms"`
	// Fetch is commit → River's fetch (the job's attempted_at, the fetch
	// transaction's start on the server's clock).
	FetchP50Ms float64 `json:"fetch_p50_ms"`
	FetchP99Ms float64 `json:"fetch_p99_ms"`
	// Claim is River's fetch → attune's claim (the execution's started_at
	// as the claim wrote it, the claim transaction's start, read while the
	// process runs: the result write replaces it with the process's own
	// start): the fetch query, its commit and reply and the hand-off to a
	// worker goroutine.
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
// execution's process, finished waits until it is settled, and steps
// reads when River fetched its job and when attune claimed it.
func measurePickup(ctx context.Context, url string, n int, startedAt func(id int64) (time.Time, bool),
	finished func(ctx context.Context, id int64) error, steps func(ctx context.Context, id int64) (fetched, claimed time.Time, err error),
	report func(i int)) (*pickupResult, error) {
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
	var total, fetch, claim, start []float64
	for i := range n {
		report(i)
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
		attempted, claimed, err := steps(ctx, id)
		if err != nil {
			return nil, err
		}
		fetch = append(fetch, msSince(committed, attempted))
		claim = append(claim, msSince(attempted, claimed))
		start = append(start, msSince(claimed, at))
	}
	r := &pickupResult{Samples: len(total)}
	r.P50Ms, r.P99Ms = percentiles(total)
	r.FetchP50Ms, r.FetchP99Ms = percentiles(fetch)
	r.ClaimP50Ms, r.ClaimP99Ms = percentiles(claim)
	r.StartP50Ms, r.StartP99Ms = percentiles(start)
	return r, nil
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
