package process

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Outcome says how a process ended. Handle.Wait reports OutcomeExited or
// OutcomeSignaled; Run also knows when it stopped the process itself.
type Outcome int

const (
	// OutcomeExited: the process exited by itself; see ExitCode.
	OutcomeExited Outcome = iota
	// OutcomeSignaled: the process was killed by a signal we did not send.
	OutcomeSignaled
	// OutcomeTimedOut: Spec.Timeout expired and we killed the process group.
	OutcomeTimedOut
	// OutcomeCanceled: the context was cancelled and we killed the process
	// group (or never started it).
	OutcomeCanceled
	// OutcomeStartFailed: the process never started; see StartErr.
	OutcomeStartFailed
)

func (o Outcome) String() string {
	switch o {
	case OutcomeExited:
		return "exited"
	case OutcomeSignaled:
		return "signaled"
	case OutcomeTimedOut:
		return "timed out"
	case OutcomeCanceled:
		return "canceled"
	case OutcomeStartFailed:
		return "start failed"
	}
	return fmt.Sprintf("Outcome(%d)", int(o))
}

// Run starts the process described by spec and waits for it. On timeout or
// when ctx is cancelled it sends SIGTERM to the process group, then SIGKILL
// after spec.KillGrace; whenever the process ends, what is left of its group
// is SIGKILLed, so no descendant outlives the execution.
func Run(ctx context.Context, spec Spec) Result {
	if ctx.Err() != nil {
		return Result{Outcome: OutcomeCanceled, ExitCode: -1, Cause: context.Cause(ctx), FinishedAt: time.Now()}
	}
	h, err := Start(spec)
	if err != nil {
		return Result{Outcome: OutcomeStartFailed, ExitCode: -1, StartErr: err, FinishedAt: time.Now()}
	}

	// The timer counts from the start of the process (SPEC §6).
	var expired <-chan time.Time
	if spec.Timeout > 0 {
		timer := time.NewTimer(spec.Timeout - time.Since(h.startedAt))
		defer timer.Stop()
		expired = timer.C
	}
	if spec.OnStart != nil {
		spec.OnStart(h.pid, h.startedAt)
	}

	var progress <-chan time.Time
	if spec.OnOutput != nil && spec.OutputEvery > 0 {
		ticker := time.NewTicker(spec.OutputEvery)
		defer ticker.Stop()
		progress = ticker.C
	}
	seenOut, seenErr := int64(0), int64(0) // versions of the stored texts last handed to OnOutput

	stopped, cause := OutcomeExited, error(nil) // how Run ended it, if it did
wait:
	for {
		select {
		case <-h.exited:
		case <-expired:
			stopped = OutcomeTimedOut
			h.Terminate(spec.KillGrace)
		case <-ctx.Done():
			stopped, cause = OutcomeCanceled, context.Cause(ctx)
			h.Terminate(spec.KillGrace)
		case <-progress:
			out, vOut, outChanged := h.stdout.snapshot("stdout", seenOut)
			errText, vErr, errChanged := h.stderr.snapshot("stderr", seenErr)
			seenOut, seenErr = vOut, vErr
			switch {
			case outChanged && errChanged:
				spec.OnOutput(&out, &errText)
			case outChanged:
				spec.OnOutput(&out, nil)
			case errChanged:
				spec.OnOutput(nil, &errText)
			}
			continue
		}
		break wait
	}

	res := h.Wait()
	if stopped != OutcomeExited {
		// Killed by us: the signal is in res, but the reason is ours.
		res.Outcome, res.Cause = stopped, cause
	}
	return res
}

// Err says why the process did not succeed, or nil when it exited with
// code 0; it wraps StartErr or Cause.
func (r Result) Err() error {
	switch r.Outcome {
	case OutcomeExited:
		if r.ExitCode == 0 {
			return nil
		}
		return fmt.Errorf("exited with code %d", r.ExitCode)
	case OutcomeSignaled:
		return fmt.Errorf("killed by signal %s (exit code %d)", r.Signal, r.ExitCode)
	case OutcomeTimedOut:
		return errors.New("timed out")
	case OutcomeCanceled:
		return fmt.Errorf("canceled: %w", r.Cause)
	case OutcomeStartFailed:
		return r.StartErr
	}
	return fmt.Errorf("ended as %s", r.Outcome)
}

// Output runs spec, like Run, for a tool whose output matters when it
// fails: it returns what the tool wrote, stdout then stderr, and an error
// unless it exited with code 0. MaxStdout and MaxStderr default to 1 MiB.
func Output(ctx context.Context, spec Spec) (string, error) {
	if spec.MaxStdout == 0 {
		spec.MaxStdout = 1 << 20
	}
	if spec.MaxStderr == 0 {
		spec.MaxStderr = 1 << 20
	}
	res := Run(ctx, spec)
	return res.Stdout + res.Stderr, res.Err()
}
