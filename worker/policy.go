package worker

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"

	"github.com/attune-system/attune/jobs"
)

// admission is attune.policy_admit's answer for one job, as claim_many
// returns it (schema/migrations/018_policy_seats.sql, 019_policy_handover.sql)
// when it refuses.
type admission struct {
	Cancelled bool
	RetryAt   *time.Time
	Reason    *string
	Error     string // policy_admit failed
}

// maxPolicyWait is how long a fetched job refused by a concurrency limit
// waits in this replica to be woken before it goes back to River (parked
// until a slot frees), as maxSlotWait bounds the wait for a process slot.
const maxPolicyWait = maxSlotWait

// slowKeyBackoff is how long a concurrency wait that ran out stops further
// executions refused with the same reason from waiting in process: their
// key is held by long executions, and waiting fetched jobs would only keep
// River's workers from other actions' jobs.
const slowKeyBackoff = 30 * time.Second

// expectWake registers the channel on which wakeListener tells Work that a
// release woke its execution. It is registered before the claim, whose
// refusal a release may answer before the claim's reply arrives.
func (w *executor) expectWake(job *river.Job[jobs.ExecutionArgs]) chan struct{} {
	woken := make(chan struct{}, 1)
	w.wakes.Store(job.Args.ExecutionID, woken)
	return woken
}

// waitAdmitted handles a claim that admission refused (a), with a process
// slot held. When the execution is admitted after all, it returns it
// claimed, done false and the slot still held. Otherwise done is true, the
// slot is released, and err is what Work returns: a snooze until it may
// (a concurrency waiter is woken earlier, by the release of a slot), or
// the completion of the job of an execution the limit cancelled. Waiting
// costs no attempt: River does not count a snooze.
//
// A job refused by a concurrency limit first waits here, for up to
// maxPolicyWait, for the release that hands it the slot and wakes it
// (NOTIFY attune_policy_woken), and is then claimed again at once: handing
// it back to River and fetching it again would cost as much as the
// execution itself when executions are short. The process slot is given
// up while it waits.
func (w *executor) waitAdmitted(ctx context.Context, job *river.Job[jobs.ExecutionArgs], a admission, woken chan struct{}) (c *claimed, done bool, err error) {
	deadline := time.Now().Add(maxPolicyWait)
	for {
		if a.Error != "" {
			// Neither run it past its limits nor spend an attempt (with the
			// last one River would discard the job, the execution left queued
			// for ever): look again later.
			w.log.Error("checking an execution's policies failed; trying again in a minute",
				"id", job.Args.ExecutionID, "err", a.Error)
			<-w.slots
			w.giveBackSeats(ctx, job.Args.ExecutionID)
			return nil, true, river.JobSnooze(time.Minute)
		}
		if a.Cancelled {
			<-w.slots
			return nil, true, w.notRunnable(ctx, job)
		}
		<-w.slots
		if concurrencyWait(a) && w.waitWoken(ctx, job, woken, deadline, *a.Reason) {
			// Woken, the slot taken again: claim again.
			c, refused, err := w.claim(ctx, job)
			if err != nil || refused == nil {
				return c, false, err
			}
			a = *refused
			continue
		}
		switch {
		case ctx.Err() != nil:
			return nil, true, w.abort(ctx, job, context.Cause(ctx))
		case w.isStopping():
			w.handedBack.Add(1)
			return nil, true, river.JobSnooze(0)
		}
		wait := time.Minute
		if a.RetryAt != nil {
			wait = time.Until(*a.RetryAt)
		}
		w.log.Debug("execution waits for its policy", "id", job.Args.ExecutionID, "reason", a.Reason, "until", a.RetryAt)
		return nil, true, river.JobSnooze(max(wait, 0))
	}
}

// giveBackSeats frees the concurrency seats a release handed to an
// execution whose policy can no longer be read
// (schema/migrations/019_policy_handover.sql): held while its job waits a
// minute, a seat would keep the key's next waiter out and make the job
// available again at once, a claim failing over and over. A failure here
// leaves that to the next try, a minute on.
func (w *executor) giveBackSeats(ctx context.Context, id int64) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if _, err := w.pool.Exec(ctx, "SELECT attune.policy_give_back($1)", id); err != nil {
		w.log.Warn("giving back the concurrency slots of an execution whose policy cannot be read failed",
			"id", id, "err", err)
	}
}

// concurrencyWait reports whether a refusal queued the execution behind a
// concurrency limit (policy_admit's reason says which limit; a rate limit
// gives a time instead, and its job is scheduled for it).
func concurrencyWait(a admission) bool {
	return a.Reason != nil && strings.HasPrefix(*a.Reason, "waiting: concurrency limit")
}

// isStopping reports whether the replica has begun to stop.
func (w *executor) isStopping() bool {
	select {
	case <-w.stopping:
		return true
	default:
		return false
	}
}

// waitWoken waits, without a process slot, until the execution is woken
// (a release handed it its concurrency slot) and a process slot is free
// again; it returns true holding the slot. It returns false, holding none,
// when the wait ran out at deadline, or the replica stops or is fenced, or
// ctx ends: the caller hands the job back to River, and _policy_snoozed
// makes it available at once if it was handed a slot meanwhile.
func (w *executor) waitWoken(ctx context.Context, job *river.Job[jobs.ExecutionArgs], woken chan struct{}, deadline time.Time, reason string) bool {
	if t, ok := w.slowKeys.Load(reason); ok && time.Since(t.(time.Time)) < slowKeyBackoff {
		return false
	}
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	select {
	case <-woken:
	case <-timer.C:
		w.markSlow(reason)
		return false
	case <-ctx.Done():
		return false
	case <-w.stopping:
		return false
	case <-w.fencedWait():
		return false
	}
	select {
	case w.slots <- struct{}{}:
	case <-timer.C:
		return false
	case <-ctx.Done():
		return false
	case <-w.stopping:
		return false
	}
	if w.fenced.Load() || w.isStopping() {
		<-w.slots
		return false
	}
	return true
}

// markSlow records that a wait refused with reason ran out. Reasons name
// rendered keys, so the map drops the entries past slowKeyBackoff as it
// goes, to stay as small as the keys recently slow.
func (w *executor) markSlow(reason string) {
	now := time.Now()
	w.slowKeys.Store(reason, now)
	if w.slowMarks.Add(1)%64 == 0 {
		w.slowKeys.Range(func(k, v any) bool {
			if now.Sub(v.(time.Time)) >= slowKeyBackoff {
				w.slowKeys.CompareAndDelete(k, v)
			}
			return true
		})
	}
}

// wakeListener delivers NOTIFY attune_policy_woken (the id of an execution
// a release woke while its job was in a worker's hands) to the admit
// waiting for it, on a connection of its own. Without it (the database
// unreachable) waits run out and the jobs go back to River, which the
// wake reaches as before.
type wakeListener struct {
	exec   *executor
	pool   *pgxpool.Pool
	log    *slog.Logger
	cancel context.CancelFunc
	done   chan struct{}
}

// policyWokenChannel is the channel _policy_wake notifies.
const policyWokenChannel = "attune_policy_woken"

func (l *wakeListener) start(ctx context.Context) {
	ctx, l.cancel = context.WithCancel(context.WithoutCancel(ctx))
	l.done = make(chan struct{})
	go func() {
		defer close(l.done)
		delay := time.Second
		for {
			began := time.Now()
			err := l.listen(ctx)
			if ctx.Err() != nil {
				return
			}
			if time.Since(began) > time.Minute {
				delay = time.Second
			}
			l.log.Debug("policy wake-up connection failed; reconnecting", "err", err, "retry_in", delay)
			if !sleepCtx(ctx, delay) {
				return
			}
			delay = min(delay*2, 30*time.Second)
		}
	}()
}

func (l *wakeListener) listen(ctx context.Context) error {
	cc := l.pool.Config().ConnConfig.Copy()
	cc.RuntimeParams["application_name"] = truncate("attune policy "+l.exec.cfg.WorkerName, 60)
	cctx, cancel := context.WithTimeout(ctx, dbTimeout)
	conn, err := pgx.ConnectConfig(cctx, cc)
	cancel()
	if err != nil {
		return fmt.Errorf("error connecting: %w", err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = conn.Close(cctx)
	}()
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{policyWokenChannel}.Sanitize()); err != nil {
		return fmt.Errorf("error listening for policy wake-ups: %w", err)
	}
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return fmt.Errorf("error waiting for policy wake-ups: %w", err)
		}
		id, err := strconv.ParseInt(n.Payload, 10, 64)
		if err != nil {
			continue
		}
		if ch, ok := l.exec.wakes.Load(id); ok {
			select {
			case ch.(chan struct{}) <- struct{}{}:
			default: // already told
			}
		}
	}
}

func (l *wakeListener) stop() {
	if l.cancel != nil {
		l.cancel()
		<-l.done
	}
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
