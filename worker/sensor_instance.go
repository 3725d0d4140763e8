package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/attune-system/attune/worker/process"
)

// The lifecycle of one sensor this replica holds the lock of: it starts the
// process, restarts it with backoff when it exits, tells it of rule changes,
// and records each state in attune.sensor_state.

// sensorInstance is one sensor this replica holds: its process, restarted
// with backoff, until stop.
type sensorInstance struct {
	sup *sensorSupervisor
	ref string
	log *slog.Logger

	mu      sync.Mutex
	def     sensorDef     // the latest wanted
	changed chan struct{} // signalled when def changes

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
}

func newSensorInstance(s *sensorSupervisor, def sensorDef) *sensorInstance {
	ctx, cancel := context.WithCancel(context.Background())
	return &sensorInstance{
		sup: s, ref: def.Ref, log: s.log.With("sensor", def.Ref), def: def,
		changed: make(chan struct{}, 1),
		ctx:     ctx, cancel: cancel, done: make(chan struct{}),
	}
}

func (in *sensorInstance) update(def sensorDef) {
	in.mu.Lock()
	in.def = def
	in.mu.Unlock()
	select {
	case in.changed <- struct{}{}:
	default:
	}
}

func (in *sensorInstance) latest() sensorDef {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.def
}

func (in *sensorInstance) stop() { in.cancel() }

func (in *sensorInstance) finished() bool {
	select {
	case <-in.done:
		return true
	default:
		return false
	}
}

// errSensorRestart ends a run that must start again at once.
var errSensorRestart = errors.New("restart")

// run starts the process, and starts it again after it exits, with
// backoff, until stop.
func (in *sensorInstance) run() {
	defer close(in.done)
	t := in.sup.timing
	restarts := 0
	lastErr := ""
	defer func() {
		in.setState("stopped", nil, restarts, lastErr)
		in.log.Info("sensor stopped")
	}()
	in.awaitPrevious()
	delay := t.MinBackoff
	for in.ctx.Err() == nil {
		began := time.Now()
		err := in.runOnce(restarts, lastErr)
		if in.ctx.Err() != nil {
			return
		}
		if errors.Is(err, errSensorRestart) {
			continue
		}
		if time.Since(began) >= t.HealthyAfter {
			delay = t.MinBackoff
		}
		restarts++
		lastErr = err.Error()
		in.log.Warn("sensor failed; restarting after backoff", "err", lastErr, "restart_in", delay, "restarts", restarts)
		in.setState("backoff", nil, restarts, lastErr)
		if !sleepCtx(in.ctx, delay) {
			return
		}
		delay = min(delay*2, t.MaxBackoff)
	}
}

// awaitPrevious waits, up to the kill grace and a second, for a previous
// holder on another replica to report its process stopped.
func (in *sensorInstance) awaitPrevious() {
	deadline := time.Now().Add(in.sup.cfg.KillGrace + time.Second)
	for {
		var worker, status string
		ctx, cancel := context.WithTimeout(in.ctx, dbTimeout)
		err := in.sup.pool.QueryRow(ctx, "SELECT worker, status FROM attune.sensor_state WHERE sensor_ref = $1", in.ref).Scan(&worker, &status)
		cancel()
		if err != nil || worker == in.sup.cfg.WorkerName || status != "running" {
			return
		}
		if time.Now().After(deadline) {
			in.log.Warn("previous holder did not report its sensor stopped; starting anyway", "previous_worker", worker)
			return
		}
		if !sleepCtx(in.ctx, 100*time.Millisecond) {
			return
		}
	}
}

// setState records the instance in attune.sensor_state. "stopped" only
// updates a row this replica owns: another may have taken the sensor over.
func (in *sensorInstance) setState(status string, pid *int, restarts int, lastErr string) {
	ctx, cancel := context.WithTimeout(context.Background(), dbTimeout)
	defer cancel()
	var errText *string
	if lastErr != "" {
		lastErr = validText(lastErr) // a NUL from the sensor's stderr would fail the write
		errText = &lastErr
	}
	_, err := in.sup.pool.Exec(ctx, `INSERT INTO attune.sensor_state AS st (sensor_ref, worker, status, pid, restarts, last_error, updated_at)
		VALUES ($1, $2, $3, $4, $5, $6, now())
		ON CONFLICT (sensor_ref) DO UPDATE SET worker = EXCLUDED.worker, status = EXCLUDED.status, pid = EXCLUDED.pid,
			restarts = EXCLUDED.restarts, last_error = EXCLUDED.last_error, updated_at = now()
		WHERE $3 <> 'stopped' OR st.worker = EXCLUDED.worker`,
		in.ref, in.sup.cfg.WorkerName, status, pid, restarts, errText)
	if err != nil {
		in.log.Warn("error recording sensor state", "status", status, "err", err)
	}
}

// sensorDrain is how long a stopped sensor's stdout and stderr are still
// read: longer than an action's, since each event line costs a database
// transaction, and an event the sensor wrote before it stopped should be
// stored rather than lost.
const sensorDrain = 2 * time.Second

// runOnce runs the process once: it returns why it ended, errSensorRestart
// when it must start again at once, or nil after stop.
func (in *sensorInstance) runOnce(restarts int, lastErr string) error {
	def := in.latest()
	prog, args, err := in.sup.runtimes.command(def.RunnerType, def.Path)
	if err != nil {
		return err
	}
	rules := def.Rules
	if rules == nil {
		rules = []sensorRule{}
	}
	triggers, err := json.Marshal(rules)
	if err != nil {
		return fmt.Errorf("error encoding ATTUNE_SENSOR_TRIGGERS: %w", err)
	}
	// Checked here too, for a message that says what to do about it.
	if limit := process.MaxArgLen(); len(triggers)+len("ATTUNE_SENSOR_TRIGGERS=")+1 > limit {
		return fmt.Errorf("ATTUNE_SENSOR_TRIGGERS is %d bytes with %d rules, over the %d bytes an environment variable may hold; disable some rules",
			len(triggers), len(rules), limit-1)
	}
	env := baseEnv(in.sup.cfg.Environ, in.sup.cfg.PassthroughEnv)
	env = append(env, "ATTUNE_SENSOR_REF="+def.Ref, "ATTUNE_SENSOR_TRIGGERS="+string(triggers))

	// Events are handled with a context that outlives a stop by the drain,
	// so an event read before the stop is stored, not lost.
	evCtx, evCancel := context.WithCancel(context.Background())
	defer evCancel()
	var tail stderrTail
	root, err := packFolder(def.Path, "sensors")
	if err != nil {
		return err
	}
	p, err := process.Start(process.Spec{
		Path: prog, Args: args, Env: env,
		EntryPoint: def.Path, EntryRoot: root,
		Credential:    in.sup.cfg.RunAsCredential,
		WorkDirPrefix: "attune-sensor-",
		StdinPipe:     true,
		ReadStdout:    func(r io.Reader) { in.readEvents(evCtx, r, def) },
		ReadStderr:    func(r io.Reader) { in.readLogs(r, &tail) },
		KillGrace:     in.sup.cfg.KillGrace,
		DrainTimeout:  sensorDrain,
	})
	if err != nil {
		return err
	}
	pid := p.Pid()
	in.log.Info("sensor started", "pid", pid, "rules", len(rules), "restarts", restarts)
	in.setState("running", &pid, restarts, lastErr)

	lines := make(ruleQueue, stdinQueue)
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		writeStdin(p.Stdin(), lines, in.log)
	}()

	known := map[int64]sensorRule{}
	announced := map[int64]bool{}
	for _, r := range def.Rules {
		known[r.ID], announced[r.ID] = r, true
	}
	var stopped error // nil when the process exited by itself
loop:
	for {
		select {
		case <-p.Exited():
			break loop
		case <-in.ctx.Done():
			stopped = in.ctx.Err()
			p.Terminate(in.sup.cfg.KillGrace)
			break loop
		case <-in.changed:
			next := in.latest()
			if !def.sameProgram(next) {
				in.log.Info("sensor definition changed; restarting it")
				stopped = errSensorRestart
				p.Terminate(in.sup.cfg.KillGrace)
				break loop
			}
			if !lines.queue(ruleChanges(known, announced, def.ReadAt, next)) {
				in.log.Warn("sensor does not read its stdin; restarting it so it gets the current rules", "queued", stdinQueue)
				stopped = errSensorRestart
				p.Terminate(in.sup.cfg.KillGrace)
				break loop
			}
		}
	}

	close(lines)
	// Wait reads what the sensor wrote before it ended, for up to the drain;
	// an event still being dispatched then (the database is down) is given
	// up with it rather than holding the restart back.
	giveUp := time.AfterFunc(sensorDrain, evCancel)
	res := p.Wait()
	giveUp.Stop()
	<-writerDone // Wait closed stdin, so a blocked write has failed
	if res.CleanupErr != nil {
		in.log.Warn("error removing work directory", "dir", p.Dir(), "err", res.CleanupErr)
	}

	if stopped != nil {
		return stopped
	}
	msg := fmt.Sprintf("exited with code %d", res.ExitCode)
	if res.Signal != "" {
		msg = fmt.Sprintf("killed by signal %s (exit code %d)", res.Signal, res.ExitCode)
	}
	if last := tail.get(); last != "" {
		msg += ": " + last
	}
	return errors.New(msg)
}
