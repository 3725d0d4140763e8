// Package jobs is attune's executions as data: the River job that carries an
// execution, enqueueing from Go inside the caller's transaction, reading,
// listing, waiting for and cancelling executions, and the encrypted secret
// store.
//
// Enqueueing validates in the database (attune.enqueue_prepare), once for
// every path, so SQL, Go and CLI callers get the same checks and rows.
//
// # Execution states
//
// An execution's status (attune.execution.status) changes only in the SQL
// functions of schema/migrations/005_state_machine.sql, as amended by
// 009_settle.sql (and 017_claim_many.sql, whose claim_many admits and
// claims many executions in one statement, each with claim); Go calls
// them. The state machine's files are also the only place attune reads or
// writes River's tables. Where River's job moves with the execution, the caller uses
// River's API in the same transaction: InsertManyTx to enqueue,
// JobCompleteTx (the worker: the same statement for a batch) when a
// result is final, JobCancelTx to cancel.
//
//	status     meaning                                 moved by (SQL function, Go caller) → to
//	---------  --------------------------------------  --------------------------------------------------
//	requested  queued: waiting for a worker, or for    enqueue_record (Enqueue, attune.enqueue) → here
//	           its next attempt after a retry          claim (worker) → running
//	                                                   cancel_execution (Cancel) → cancelled
//	                                                   fail_unrunnable (worker: action gone) → failed
//	                                                   settle (its claim lost to a crash) → as running
//	                                                   reconcile (River job gone) → abandoned | cancelled
//	scheduled  queued with a scheduled_at in the       enqueue_record → here; then as requested (River
//	           future                                  makes the job available at scheduled_at; the
//	                                                   status stays scheduled until claim)
//	running    a worker's process runs the attempt     settle (worker) → completed | failed | timeout |
//	           (worker, attempt say whose)               cancelled | abandoned, or requested to retry
//	                                                   cancel_execution (Cancel) → canceling
//	                                                   reap_worker (dead worker) → requested to retry
//	                                                     (on a new River job), else abandoned
//	                                                   claim (River delivers the job again, or the same
//	                                                     worker retries a claim whose reply was lost) → running
//	                                                   settle (decode failure after claim) → failed
//	                                                   reconcile (River job gone) → abandoned | cancelled
//	canceling  cancel asked while running: the worker  settle (worker) → cancelled, or the attempt's
//	           kills the process group                   own outcome if it ended first (never retried)
//	                                                   reap_worker (dead worker) → cancelled
//	completed  exited 0 (result valid)                 final
//	failed     exited non-zero, killed by a signal,    final
//	           could not start, or its action is gone
//	timeout    killed at its timeout                   final
//	cancelled  cancelled queued, or killed by cancel   final
//	abandoned  its worker died or stopped mid-run and  final
//	           no retry was left
//
// Policies (schema/migrations/011_policy.sql) hold a queued execution
// before claim (claim_many asks policy_admit first): policy_admit keeps it
// requested or scheduled, with
// attune.execution.waiting_reason saying why, while its concurrency or rate
// limit is reached, or moves it requested → cancelled under on_limit:
// cancel. A trigger frees its concurrency slot on any move out of running;
// the worker gives it back earlier, when the process ends (claim_many).
//
// Finished tells the final statuses. Retries are River's: settle sends a
// retryable outcome back to requested only while attempt < max_attempts,
// and the worker's error makes River schedule the job again; reap_worker
// gives the execution a new job, so that the dead worker's old one can
// neither claim nor settle. Only the worker's own current attempt is settled:
// settle checks the attempt's token (the execution's River job running at
// that attempt on that worker's River client) and record_output the worker
// and attempt, so a replica wrongly declared dead writes nothing over what
// the reaper decided. claim refuses a worker marked inactive, and
// reap_worker a worker whose heartbeat is fresh.
//
// Beside the statuses, record_output stores a running attempt's output so
// far (live output), lost_fetches and requeue_lost_fetches return to the
// queue jobs River fetched for a replica that never received them (or whose
// retry River's completer gave up writing), and
// gone_workers names the workers whose executions nobody will settle.
//
// Wait blocks until executions finish, reading them every
// DefaultWaitInterval.
package jobs
