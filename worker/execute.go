package worker

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivertype"

	"github.com/attune-system/attune/jobs"
	"github.com/attune-system/attune/packs"
	"github.com/attune-system/attune/schema"
	"github.com/attune-system/attune/worker/process"
)

// executor is the River worker of executions.
type executor struct {
	river.WorkerDefaults[jobs.ExecutionArgs]

	cfg      Config
	pool     *pgxpool.Pool
	runtimes Runtimes
	key      []byte // secrets key; nil when unset
	log      *slog.Logger
	// retryLog is log muted during an outage, for the retries' warnings.
	retryLog *slog.Logger

	// slots bounds processes across all runtime queues to
	// ATTUNE_MAX_CONCURRENT_EXECUTIONS.
	slots chan struct{}
	// slotWaiters counts the Work calls waiting for a process slot.
	slotWaiters atomic.Int64

	claimer   *claimer
	completer *completer

	// database is the name of the database this replica works on; it tells
	// this installation's work directories from others' (workDirPrefix).
	database string

	validators sync.Map // action ref + updated → *packs.Validator

	// onStart, when set, observes each process start (benchmarks).
	onStart func(id int64, at time.Time)

	// stopping is closed when the replica begins to stop: jobs fetched but
	// not started go back to the queue rather than start now only to be
	// killed at the shutdown timeout.
	stopping     chan struct{}
	stoppingOnce sync.Once

	// inflight holds the River job ids this replica is working on, so that
	// recoverLostJobs can tell a job it holds from one it never received:
	// job id → the time Work returned (zero while it runs). A returned job
	// stays for lostJobAge, while River's completer may still be writing
	// what Work returned.
	inflight sync.Map

	// riverID is this replica's River client id: the attempt token settle
	// checks names it.
	riverID string

	// fenced is set while this replica may not run work: it lost its
	// heartbeat for longer than it may (Config.fenceAfter), or the others
	// marked it inactive. Work hands jobs back meanwhile.
	fenced atomic.Bool
	// running holds a cancel for each attempt whose process may be running
	// (execution id → context.CancelCauseFunc), for the fence to kill.
	running sync.Map
	// handedBack counts the jobs given back unstarted because this replica
	// was stopping, for serve's "stopped" line.
	handedBack atomic.Int64
	// retryOn holds, per River job id, the outcomes its action's retry
	// policy retries (policy.go).
	retryOn sync.Map
	// wakes holds, per execution id whose admission is in progress, the
	// channel its wake-up notification is sent on; slowKeys, per refusal
	// reason, when a wait for it last ran out (policy.go).
	wakes     sync.Map
	slowKeys  sync.Map
	slowMarks atomic.Int64
}

// errFenced ends the processes of a fenced replica.
var errFenced = errors.New("replica fenced")

// errReconciled ends the process of an execution the reconciler settled
// (its River job was finalized or deleted outside attune).
var errReconciled = errors.New("execution settled by the reconciler")

// fence stops this replica taking work and kills every running process
// group, so that no other replica runs the next attempt while this one's
// still runs. It returns how many attempts it killed.
func (w *executor) fence() int {
	w.fenced.Store(true)
	n := 0
	w.running.Range(func(_, v any) bool {
		v.(context.CancelCauseFunc)(errFenced)
		n++
		return true
	})
	return n
}

// busy reports whether any attempt may still have a process running.
func (w *executor) busy() bool {
	busy := false
	w.running.Range(func(_, _ any) bool { busy = true; return false })
	return busy
}

// stop makes Work hand back jobs it has not started.
func (w *executor) stop() { w.stoppingOnce.Do(func() { close(w.stopping) }) }

// Timeout disables River's own deadline: the execution's timeout is
// enforced on the process, with the kill grace, which River's context
// deadline would pre-empt.
func (w *executor) Timeout(*river.Job[jobs.ExecutionArgs]) time.Duration { return -1 }

// NextRetry retries a failed attempt soon: an action's max_retries is about
// flaky work, not back-pressure.
func (w *executor) NextRetry(job *river.Job[jobs.ExecutionArgs]) time.Time {
	if at, ok := w.policyRetry(job); ok { // retry: {delay, backoff, max_delay}
		return at
	}
	return time.Now().Add(time.Duration(job.Attempt) * time.Second)
}

// claimed is what the claim returns when an execution starts (claim.go).
type claimed struct {
	ID                int64
	Attempt           int
	MaxAttempts       int
	ActionRef         string
	PackRef           string
	RunnerType        string
	Path              string
	Parameters        map[string]any
	SecretParams      map[string]any
	SealedParams      []byte // the execution_secret row when sealed: spec opens it, so a key problem fails the execution, not the claim
	Decls             packs.Params
	ResultSchema      map[string]any
	TimeoutSeconds    *int
	ActionTimeout     *int
	ParameterDelivery string
	ParameterFormat   string
	OutputFormat      string
	RuleRef           *string
	TriggerRef        *string
	Updated           time.Time
	Sealed            []jobs.SealedSecret
	// HoldsSlots is set when admission gave it concurrency slots, which
	// are given back as its process ends (claimer.release).
	HoldsSlots bool
}

// maxSlotWait is how long a fetched job waits for a free process slot
// before it goes back to the queue for other replicas.
const maxSlotWait = 2 * time.Second

// Work runs one execution. Its failure is a result written to the row, not
// a River error; River retries only when the action's max_retries allows.
func (w *executor) Work(ctx context.Context, job *river.Job[jobs.ExecutionArgs]) error {
	w.inflight.Store(job.ID, time.Time{})
	defer func() { w.inflight.Store(job.ID, time.Now()) }()
	// admit records the job's retry policy; whatever way Work returns
	// (settled, snoozed, not runnable), it is not needed after.
	defer w.retryOn.Delete(job.ID)
	// River fetches more jobs than there are slots (see NewServer), so the
	// next execution is already in hand when a process exits; the slot
	// covers only the claim and the process, not the result write.
	slotWait := time.NewTimer(maxSlotWait)
	defer slotWait.Stop()
	// Counted while it waits, so that the process ending before it knows
	// a claim follows (releaseSent).
	w.slotWaiters.Add(1)
	waiting := true
	defer func() {
		if waiting {
			w.slotWaiters.Add(-1)
		}
	}()
	select {
	case w.slots <- struct{}{}:
	case <-ctx.Done():
		return w.abort(ctx, job, context.Cause(ctx))
	case <-w.stopping:
		w.handedBack.Add(1)
		return river.JobSnooze(0)
	case <-w.fencedWait():
		return river.JobSnooze(time.Second)
	case <-slotWait.C:
		// Every slot is busy with long executions: give the job back (the
		// attempt does not count) so an idle replica can take it rather than
		// leave it waiting behind this one's work.
		return river.JobSnooze(0)
	}
	waiting = false
	w.slotWaiters.Add(-1)
	select {
	case <-w.stopping: // both were ready and select chose the slot
		<-w.slots
		w.handedBack.Add(1)
		return river.JobSnooze(0)
	default:
	}
	// A claim lost to an unreachable database would cost an attempt, and
	// with the last one River discards the job: the execution would stay
	// requested forever. Nor may a hard stop interrupt a claim half way, so
	// that it is unknown whether the row says running; once claimed, a
	// cancelled execution is settled like any other.
	if w.fenced.Load() {
		<-w.slots
		return river.JobSnooze(time.Second)
	}
	// A release may wake this execution as soon as the claim refuses it.
	woken := w.expectWake(job)
	defer w.wakes.Delete(job.Args.ExecutionID)
	c, refused, err := w.claim(ctx, job)
	if err == nil && refused != nil {
		// The action's or its pack's policy (schema/migrations/011_policy.sql,
		// 016_policy_fixes.sql, 018_policy_seats.sql, 019_policy_handover.sql)
		// holds it back.
		var done bool
		if c, done, err = w.waitAdmitted(ctx, job, *refused, woken); done { // the slot given back
			return err
		}
	}
	var derr *decodeError
	switch {
	case errors.As(err, &derr):
		// The row says running: fail it rather than leave it so.
		<-w.slots
		return w.settle(ctx, job, c, outcome{Status: jobs.StatusFailed, Error: derr.Error()})
	case err != nil:
		<-w.slots
		if errors.Is(err, pgx.ErrNoRows) {
			return w.notRunnable(ctx, job)
		}
		return fmt.Errorf("error claiming execution %d: %w", job.Args.ExecutionID, err)
	}
	w.log.Debug("execution picked up", "id", c.ID, "action", c.ActionRef, "attempt", job.Attempt,
		"waited", time.Since(job.ScheduledAt).Round(time.Millisecond))
	started := time.Now()
	out := w.runTraced(ctx, c)
	out.took = time.Since(started)
	if c.HoldsSlots {
		sent, claimFollows := w.claimer.release(c.ID, c.Attempt), w.slotWaiters.Load() > 0
		<-w.slots
		w.releaseSent(ctx, sent, claimFollows)
	} else {
		<-w.slots
	}
	return w.settleTraced(ctx, job, c, out)
}

// holds reports whether a worker of this replica runs the job, or returned
// it less than lostJobAge ago (River may still be writing its outcome).
func (w *executor) holds(jobID int64) bool {
	v, ok := w.inflight.Load(jobID)
	if !ok {
		return false
	}
	returned := v.(time.Time)
	return returned.IsZero() || time.Since(returned) < lostJobAge
}

// forgetReturned drops the jobs returned longer than lostJobAge ago.
func (w *executor) forgetReturned() {
	w.inflight.Range(func(k, v any) bool {
		if returned := v.(time.Time); !returned.IsZero() && time.Since(returned) >= lostJobAge {
			w.inflight.CompareAndDelete(k, v)
		}
		return true
	})
}

// fencedWait is a channel that is ready at once while the replica is
// fenced, else never.
func (w *executor) fencedWait() <-chan struct{} {
	if w.fenced.Load() {
		return closedChan
	}
	return nil
}

var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// decodeError is a claimed execution whose stored JSON cannot be read.
type decodeError struct{ err error }

func (e *decodeError) Error() string {
	return fmt.Sprintf("the execution's stored parameters or its action's declarations cannot be decoded: %v", e.err)
}

func (e *decodeError) Unwrap() error { return e.err }

// notRunnable completes the River job of an execution that must not run:
// cancelled while queued, already finished, carried by another job now, or
// whose action is gone. A job whose execution still waits for it (the claim
// refused this replica: the others marked it inactive) goes back.
func (w *executor) notRunnable(ctx context.Context, job *river.Job[jobs.ExecutionArgs]) error {
	ctx = context.WithoutCancel(ctx)
	var complete bool
	err := schema.Retry(ctx, quietRetry(w.retryLog, "settling an execution that cannot run", "id", job.Args.ExecutionID), func() error {
		return pgx.BeginFunc(ctx, w.pool, func(tx pgx.Tx) error {
			// schema/migrations/009_settle.sql: failed when the action is
			// gone, unchanged when cancelled or finished meanwhile.
			if err := tx.QueryRow(ctx, "SELECT attune.fail_unrunnable($1, $2, $3)", job.Args.ExecutionID, w.cfg.WorkerName, job.ID).
				Scan(&complete); err != nil {
				return fmt.Errorf("error settling execution %d: %w", job.Args.ExecutionID, err)
			}
			if !complete {
				return nil
			}
			if _, err := river.JobCompleteTx[*riverpgxv5.Driver](ctx, tx, job); err != nil {
				return fmt.Errorf("error completing River job %d: %w", job.ID, err)
			}
			return nil
		})
	})
	if err == nil && !complete {
		return river.JobSnooze(time.Second)
	}
	return err
}

// outcome is what an attempt produced, ready to be written.
type outcome struct {
	Status          string
	Result          any
	ExitCode        *int
	Stdout, Stderr  *string
	StdoutTruncated bool
	StderrTruncated bool
	Error           string
	// Retryable is true for outcomes that max_retries may retry.
	Retryable bool
	// StartedAt and FinishedAt are when the process started and ended (zero
	// when none ran).
	StartedAt, FinishedAt time.Time
	// retry is set when this attempt will be retried.
	retry bool
	// took is how long the attempt ran, for the log.
	took time.Duration
}

func failed(msg string) outcome {
	return outcome{Status: jobs.StatusFailed, Error: msg, Retryable: true}
}

// run prepares and runs the process, and turns its Result into an outcome.
func (w *executor) run(ctx context.Context, c *claimed) outcome {
	spec, mask, err := w.spec(c)
	if err != nil {
		return failed(err.Error())
	}
	spec.Env = append(spec.Env, traceEnv(ctx)...)
	if w.onStart != nil {
		spec.OnStart = func(pid int, at time.Time) { w.onStart(c.ID, at) }
	}
	live := &liveOutput{w: w, id: c.ID, attempt: c.Attempt, mask: mask}
	spec.OnOutput, spec.OutputEvery = live.publish, liveOutputEvery
	// The fence kills through this context; registered before the process
	// starts so that a fence racing the start still reaches it.
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	w.running.Store(c.ID, cancel)
	defer w.running.Delete(c.ID)
	if w.fenced.Load() {
		cancel(errFenced)
	}
	res := process.Run(ctx, spec)
	live.wg.Wait()
	// Secret values never reach what is stored: the result is parsed from
	// the text as printed and masked after, the rest masked from here on.
	rawStdout := res.Stdout
	res.Stdout, res.StdoutTruncated = mask.stream(res.Stdout, res.StdoutTruncated, false, "stdout", w.cfg.MaxStdoutBytes)
	res.Stderr, res.StderrTruncated = mask.stream(res.Stderr, res.StderrTruncated, false, "stderr", w.cfg.MaxStderrBytes)
	out := w.outcomeOf(ctx, c, spec, res, rawStdout)
	out.Result = mask.value(out.Result)
	out.Error = mask.text(out.Error)
	return out
}

// outcomeOf turns a process's Result into an outcome; rawStdout is stdout
// before masking, which the result is parsed from.
func (w *executor) outcomeOf(ctx context.Context, c *claimed, spec process.Spec, res process.Result, rawStdout string) outcome {
	out := outcome{
		Stdout: &res.Stdout, Stderr: &res.Stderr,
		StdoutTruncated: res.StdoutTruncated, StderrTruncated: res.StderrTruncated,
		StartedAt: res.StartedAt, FinishedAt: res.FinishedAt,
	}
	if res.Pid != 0 { // a process ran: it has an exit code
		code := res.ExitCode
		out.ExitCode = &code
	}
	switch res.Outcome {
	case process.OutcomeStartFailed:
		out.Status, out.Error, out.Retryable = jobs.StatusFailed, res.StartErr.Error(), true
	case process.OutcomeTimedOut:
		out.Status, out.Retryable = jobs.StatusTimeout, true
		out.Error = fmt.Sprintf("Execution timed out after %s seconds", strconv.FormatFloat(spec.Timeout.Seconds(), 'f', -1, 64))
	case process.OutcomeCanceled:
		switch {
		case errors.Is(res.Cause, rivertype.ErrJobCancelledRemotely):
			out.Status, out.Error = jobs.StatusCancelled, "Cancelled while running"
		case errors.Is(res.Cause, errReconciled):
			// The row is settled already (settle will refuse this attempt):
			// this is for the log.
			out.Status = jobs.StatusAbandoned
			out.Error = "killed: the execution was settled by the reconciler, its River job finalized outside attune"
		case errors.Is(res.Cause, errFenced):
			out.Status, out.Retryable = jobs.StatusAbandoned, true
			out.Error = fmt.Sprintf("Worker %s lost its heartbeat (the database was unreachable, or the worker froze) and killed the execution so that no other attempt could overlap it", w.cfg.WorkerName)
		default:
			out.Status, out.Error, out.Retryable = jobs.StatusAbandoned, fmt.Sprintf("Worker %s stopped while the execution ran (%v)", w.cfg.WorkerName, res.Cause), true
		}
	case process.OutcomeSignaled:
		out.Status, out.Retryable = jobs.StatusFailed, true
		out.Error = fmt.Sprintf("killed by signal %s (exit code %d)", res.Signal, res.ExitCode)
	case process.OutcomeExited:
		if res.ExitCode != 0 {
			out.Status, out.Retryable = jobs.StatusFailed, true
			out.Error = fmt.Sprintf("exited with code %d", res.ExitCode)
			if last := lastLine(res.Stderr); last != "" {
				out.Error += ": " + last
			}
			break
		}
		out.Status = jobs.StatusCompleted
		// Parsing runs on the worker's CPU: within the execution's deadline.
		pctx, cancel := context.WithDeadline(ctx, res.StartedAt.Add(spec.Timeout))
		v, ok := parseResult(pctx, rawStdout, c.OutputFormat)
		cancel()
		if ok {
			if len(c.ResultSchema) > 0 {
				if err := packs.ValidateAgainst(c.ResultSchema, v); err != nil {
					out.Status, out.Retryable = jobs.StatusFailed, true
					out.Error = fmt.Sprintf("result does not match result_schema: %v", err)
				}
			}
			out.Result = v
		}
	}
	return out
}

// spec builds the child process of SPEC §6: argv without a shell, an
// environment built from nothing, parameters delivered as the action says.
// It returns the masker of the secrets the child receives, too.
func (w *executor) spec(c *claimed) (process.Spec, *masker, error) {
	prog, args, err := w.runtimes.command(c.RunnerType, c.Path)
	if err != nil {
		return process.Spec{}, nil, err
	}
	if c.SealedParams != nil {
		plain, err := jobs.OpenParameters(w.key, c.ID, c.SealedParams)
		if err != nil {
			return process.Spec{}, nil, err
		}
		dec := json.NewDecoder(bytes.NewReader(plain))
		dec.UseNumber()
		if err := dec.Decode(&c.SecretParams); err != nil {
			return process.Spec{}, nil, fmt.Errorf("error decoding the secret parameters of execution %d: %w", c.ID, err)
		}
	}

	all := map[string]any{}
	for k, v := range c.Parameters {
		all[k] = v
	}
	for k, v := range c.SecretParams {
		all[k] = v
	}
	params, err := w.validate(c, all)
	if err != nil {
		return process.Spec{}, nil, err
	}

	secrets := map[string]any{}
	if len(c.Sealed) > 0 {
		if w.key == nil {
			return process.Spec{}, nil, fmt.Errorf("action %s needs secrets but %w", c.ActionRef, jobs.ErrNoSecretsKey)
		}
		opened, err := jobs.OpenSecrets(w.key, c.Sealed)
		if err != nil {
			return process.Spec{}, nil, err
		}
		for k, v := range opened {
			secrets[k] = v
		}
	}
	for k, d := range c.Decls {
		if v, ok := params[k]; ok && d.Secret {
			secrets[k] = v
		}
	}

	env := baseEnv(w.cfg.Environ, w.cfg.PassthroughEnv)
	env = append(env,
		"ATTUNE_EXEC_ID="+strconv.FormatInt(c.ID, 10),
		"ATTUNE_ACTION="+c.ActionRef,
		"ATTUNE_PACK_REF="+c.PackRef)
	if c.RuleRef != nil {
		env = append(env, "ATTUNE_RULE="+*c.RuleRef)
	}
	if c.TriggerRef != nil {
		env = append(env, "ATTUNE_TRIGGER="+*c.TriggerRef)
	}

	root, err := packFolder(c.Path, "actions")
	if err != nil {
		return process.Spec{}, nil, err
	}

	spec := process.Spec{
		Path: prog, Args: args,
		EntryPoint: c.Path, EntryRoot: root,
		Credential: w.cfg.RunAsCredential,
		// The execution id in the name lets a replica reaping a dead worker
		// on this host find and remove what its executions left.
		WorkDirPrefix: WorkDirPrefix(w.database, w.cfg.WorkerName, c.ID),
		MaxStdout:     w.cfg.MaxStdoutBytes, MaxStderr: w.cfg.MaxStderrBytes,
		KillGrace: w.cfg.KillGrace,
		Timeout:   w.cfg.DefaultTimeout,
	}
	switch {
	case c.TimeoutSeconds != nil:
		spec.Timeout = time.Duration(*c.TimeoutSeconds) * time.Second
	case c.ActionTimeout != nil:
		spec.Timeout = time.Duration(*c.ActionTimeout) * time.Second
	}

	switch c.ParameterDelivery {
	case packs.DeliveryStdin, packs.DeliveryFile:
		doc := map[string]any{}
		for k, v := range params {
			doc[k] = v
		}
		for k, v := range secrets {
			doc[k] = v
		}
		b, err := encodeDocument(doc, c.ParameterFormat)
		if err != nil {
			return process.Spec{}, nil, err
		}
		if c.ParameterDelivery == packs.DeliveryStdin {
			spec.Stdin = b
		} else {
			spec.ParameterFile = b
		}
	default:
		pe, err := paramEnv(params, c.Decls)
		if err != nil {
			return process.Spec{}, nil, err
		}
		env = append(env, pe...)
		b, err := json.Marshal(secrets)
		if err != nil {
			return process.Spec{}, nil, err
		}
		spec.Stdin = append(b, '\n')
	}
	spec.Env = env
	return spec, newSecretMasker(secrets), nil
}

// validate checks parameters against the action's declarations, defaults
// applied. Compiled validators are cached per action version.
func (w *executor) validate(c *claimed, params map[string]any) (map[string]any, error) {
	key := c.ActionRef + "@" + c.Updated.String()
	v, ok := w.validators.Load(key)
	if !ok {
		compiled, err := c.Decls.Compile()
		if err != nil {
			return nil, fmt.Errorf("action %s declares parameters that do not compile: %w", c.ActionRef, err)
		}
		v, _ = w.validators.LoadOrStore(key, compiled)
	}
	out, err := v.(*packs.Validator).Validate(params)
	if err != nil {
		return nil, fmt.Errorf("invalid parameters: %w", redactSecrets(err, c.Decls))
	}
	return out, nil
}

// redactSecrets drops the values of secret parameters from a validation
// error, which quotes the value it got: the error is stored in the row.
// Enqueueing checks parameters too, so this happens when the action's
// declaration changed after the enqueue.
func redactSecrets(err error, decls packs.Params) error {
	var perr *packs.ParamsError
	if !errors.As(err, &perr) {
		return err
	}
	problems := slices.Clone(perr.Problems)
	for i, p := range problems {
		for name, d := range decls {
			q := strconv.Quote(name)
			if d.Secret && (strings.HasPrefix(p, "parameter "+q+":") || strings.HasPrefix(p, "parameter "+q[:len(q)-1]+".")) {
				problems[i] = "parameter " + q + " (secret) does not match its declaration; its value is not shown"
			}
		}
	}
	return &packs.ParamsError{Problems: problems}
}

// settle writes the outcome. A final outcome and River's job completion
// share one transaction (batched with others by the completer); an outcome
// that max_retries allows to retry goes back to requested and River runs the
// job again.
func (w *executor) settle(ctx context.Context, job *river.Job[jobs.ExecutionArgs], c *claimed, out outcome) error {
	out.retry = w.retries(job, out.Status) && out.Retryable && job.Attempt < job.MaxAttempts
	s := &settlement{
		job: job,
		id:  c.ID,
		out: out,
	}
	if out.Result != nil {
		var err error
		if s.res, err = json.Marshal(out.Result); err != nil {
			return fmt.Errorf("error encoding result: %w", err)
		}
	}
	if out.retry {
		s.out.Status = jobs.StatusRequested
		s.out.Error = fmt.Sprintf("attempt %d of %d: %s: %s", job.Attempt, job.MaxAttempts, out.Status, out.Error)
	}
	if s.out.Error != "" {
		s.out.Error = validText(s.out.Error)
		s.err = &s.out.Error
	}
	if err := w.completer.submit(s); err != nil {
		return fmt.Errorf("error recording execution %d: %w", c.ID, err)
	}
	// One line per finished attempt at the default level: what an operator
	// tails serve's log for.
	args := []any{"id", c.ID, "action", c.ActionRef, "status", s.out.Status, "attempt", job.Attempt,
		"duration", s.out.took.Round(time.Millisecond)}
	if s.out.ExitCode != nil {
		args = append(args, "exit_code", *s.out.ExitCode)
	}
	if s.out.Error != "" {
		args = append(args, "error", s.out.Error)
	}
	if s.retried {
		args = append(args, "retry", true)
	}
	w.log.Info("execution finished", args...)
	if s.retried {
		return fmt.Errorf("execution %d attempt %d: %s", c.ID, job.Attempt, s.out.Error)
	}
	return nil
}

// abort handles a job River handed over while this replica was stopping:
// it goes back for another replica, untouched.
func (w *executor) abort(ctx context.Context, job *river.Job[jobs.ExecutionArgs], cause error) error {
	if errors.Is(cause, rivertype.ErrJobCancelledRemotely) {
		return w.notRunnable(ctx, job)
	}
	return river.JobSnooze(time.Second)
}

// lastLine is the last non-empty line of s, at most 500 bytes: the error
// text of a failed attempt.
func lastLine(s string) string {
	s = strings.TrimRight(s, "\n\r \t")
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	if len(s) > 500 {
		n := 500
		for n > 0 && !utf8.RuneStart(s[n]) {
			n-- // not in the middle of a rune
		}
		s = s[:n]
	}
	return strings.TrimSpace(s)
}

// validText returns s as text PostgreSQL stores: invalid UTF-8 and NUL bytes
// become U+FFFD. Error texts quote what a pack holds (a #! line, an ELF
// interpreter, a result value); a refused write would leave the execution
// running for ever.
func validText(s string) string {
	t, _ := process.Sanitize([]byte(s), 3*len(s)) // U+FFFD is 3 bytes per bad byte
	return t
}

// liveOutputEvery is how often a running execution's output so far is
// written to its row, for attune execution logs --follow and show. An
// execution shorter than this writes its output once, at the end.
const liveOutputEvery = time.Second

// liveOutput writes a running execution's output so far. process.Run hands
// it only streams whose stored text changed, so a capped stream is written
// once more (with its notice) and never again, however long the child
// floods. One write is in flight at a time; what changes meanwhile waits
// and goes in the next write, so the last stored text is never lost to a
// busy tick. The final result write replaces it all.
type liveOutput struct {
	w       *executor
	id      int64
	attempt int
	mask    *masker
	wg      sync.WaitGroup

	mu                     sync.Mutex
	busy                   bool
	pendingOut, pendingErr *string
}

func (l *liveOutput) publish(stdout, stderr *string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if stdout != nil {
		l.pendingOut = stdout
	}
	if stderr != nil {
		l.pendingErr = stderr
	}
	if l.busy {
		return // the write in flight takes the pending text when it is done
	}
	l.busy = true
	l.wg.Add(1)
	go l.write()
}

// write writes what is pending until nothing is.
func (l *liveOutput) write() {
	defer l.wg.Done()
	for {
		l.mu.Lock()
		stdout, stderr := l.pendingOut, l.pendingErr
		l.pendingOut, l.pendingErr = nil, nil
		if stdout == nil && stderr == nil {
			l.busy = false
			l.mu.Unlock()
			return
		}
		l.mu.Unlock()
		// Masked here, off Run's goroutine; a value the child is half way
		// through printing is held back until it can be masked whole.
		if stdout != nil {
			m, _ := l.mask.stream(*stdout, false, true, "stdout", l.w.cfg.MaxStdoutBytes)
			stdout = &m
		}
		if stderr != nil {
			m, _ := l.mask.stream(*stderr, false, true, "stderr", l.w.cfg.MaxStderrBytes)
			stderr = &m
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		// Only while this attempt runs here (attune.record_output); a stream
		// left NULL keeps its stored value, so an unchanged (capped) stream
		// costs no WAL.
		_, err := l.w.pool.Exec(ctx, "SELECT attune.record_output($1, $2, $3, $4, $5)",
			l.id, l.w.cfg.WorkerName, l.attempt, stdout, stderr)
		cancel()
		if err != nil {
			l.w.log.Debug("writing live output failed", "id", l.id, "err", err)
		}
	}
}

// workDirPrefix names the work directories of one execution's attempts on
// one worker. Execution ids repeat across databases (other installations,
// or tests, on the same host), so a digest of the database and worker names
// comes first: a reaper must only ever find its own dead worker's.
func WorkDirPrefix(database, worker string, id int64) string {
	sum := sha256.Sum256([]byte(database + "\x00" + worker))
	return "attune-exec-" + hex.EncodeToString(sum[:6]) + "-" + strconv.FormatInt(id, 10) + "-"
}
