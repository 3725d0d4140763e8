package jobs_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/attune-system/attune/jobs"
)

// Enqueue an execution from Go in the same transaction as the caller's own
// writes: the execution exists, and a listening worker wakes, only if the
// transaction commits. Errors for bad input are *jobs.Error with the
// SQLSTATE that SQL's attune.enqueue raises, and leave the transaction
// usable.
func ExampleEnqueue() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("ATTUNE_DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()

	var id int64
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "INSERT INTO orders (id, status) VALUES (42, 'paid')"); err != nil {
			return err
		}
		id, err = jobs.Enqueue(ctx, tx, "shop.ship_order",
			map[string]any{"order_id": 42, "carrier": "ups"},
			&jobs.Options{TimeoutSeconds: 120, Priority: 2})
		var bad *jobs.Error
		if errors.As(err, &bad) {
			// e.g. 42704 unknown action, 55000 disabled, 22023 bad parameter.
			return fmt.Errorf("cannot ship order 42 (%s): %w", bad.Code, err)
		}
		return err
	})
	if err != nil {
		log.Fatal(err)
	}

	// Wait for the outcome; a worker (attune serve) runs it.
	for {
		e, err := jobs.Get(ctx, pool, id)
		if err != nil {
			log.Fatal(err)
		}
		if jobs.Finished(e.Status) {
			fmt.Println(e.Status, string(e.Result))
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Enqueue several executions with one River insert.
func ExampleEnqueueMany() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("ATTUNE_DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()

	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		ids, err := jobs.EnqueueMany(ctx, tx, []jobs.Request{
			{ActionRef: "examples.echo", Parameters: map[string]any{"message": "now"}},
			{ActionRef: "examples.echo", Parameters: map[string]any{"message": "in an hour"},
				Options: jobs.Options{ScheduledAt: time.Now().Add(time.Hour)}},
		})
		fmt.Println(len(ids), "executions")
		return err
	})
	if err != nil {
		log.Fatal(err)
	}
}
