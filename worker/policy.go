package worker

import (
	"context"
	"slices"
	"time"

	"github.com/riverqueue/river"

	"github.com/attune-system/attune/jobs"
	"github.com/attune-system/attune/schema"
)

// admission is attune.policy_admit's answer for one job.
type admission struct {
	Admitted  bool
	Cancelled bool
	RetryAt   *time.Time
	Reason    *string
	RetryOn   []string
}

// admit asks attune.policy_admit (schema/migrations/011_policy.sql)
// whether the job's execution may start now under its action's and pack's
// concurrency and rate limits. When it may not, done is true and err is
// what Work returns: a snooze until it may (a concurrency waiter is woken
// earlier, by the release of a slot), or the completion of the job of an
// execution the limit cancelled. Waiting costs no attempt: River does not
// count a snooze.
func (w *executor) admit(ctx context.Context, job *river.Job[jobs.ExecutionArgs]) (done bool, err error) {
	var a admission
	err = schema.Retry(ctx, quietRetry(w.log, "checking an execution's policies", "id", job.Args.ExecutionID), func() error {
		return w.pool.QueryRow(context.WithoutCancel(ctx),
			"SELECT admitted, cancelled, retry_at, reason, retry_on FROM attune.policy_admit($1, $2)",
			job.Args.ExecutionID, w.cfg.WorkerName).Scan(&a.Admitted, &a.Cancelled, &a.RetryAt, &a.Reason, &a.RetryOn)
	})
	if err != nil {
		// Neither run it past its limits nor spend an attempt (with the
		// last one River would discard the job, the execution left queued
		// for ever): look again later.
		w.log.Error("checking an execution's policies failed; trying again in a minute",
			"id", job.Args.ExecutionID, "err", err)
		return true, river.JobSnooze(time.Minute)
	}
	switch {
	case a.Admitted:
		if a.RetryOn != nil {
			w.retryOn.Store(job.ID, a.RetryOn)
		}
		return false, nil
	case a.Cancelled:
		return true, w.notRunnable(ctx, job)
	}
	wait := time.Minute
	if a.RetryAt != nil {
		wait = time.Until(*a.RetryAt)
	}
	w.log.Debug("execution waits for its policy", "id", job.Args.ExecutionID, "reason", a.Reason, "until", a.RetryAt)
	return true, river.JobSnooze(max(wait, 0))
}

// retries reports whether the action's retry policy (retry.on) retries an
// attempt that ended with status; without one every retryable outcome is.
func (w *executor) retries(job *river.Job[jobs.ExecutionArgs], status string) bool {
	on, ok := w.retryOn.Load(job.ID)
	return !ok || slices.Contains(on.([]string), status)
}

// policyRetry is when the action's retry policy (retry.delay, backoff,
// max_delay) runs the next attempt; false when it has none.
func (w *executor) policyRetry(job *river.Job[jobs.ExecutionArgs]) (time.Time, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var at *time.Time
	err := w.pool.QueryRow(ctx, "SELECT attune.policy_next_retry($1, $2)", job.Args.ExecutionID, job.Attempt).Scan(&at)
	if err != nil {
		w.log.Warn("reading the retry policy failed; retrying on the default schedule", "id", job.Args.ExecutionID, "err", err)
		return time.Time{}, false
	}
	if at == nil {
		return time.Time{}, false
	}
	return *at, true
}
