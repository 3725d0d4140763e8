package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

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

// sensorProcess is one started sensor process and its pipes.
type sensorProcess struct {
	group

	stdoutR, stderrR, stdinW *os.File
	readers                  sync.WaitGroup
	lines                    chan []byte // rule-change lines for stdin
	writerDone               chan struct{}

	mu         sync.Mutex
	lastStderr string
}

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
	if len(triggers)+len("ATTUNE_SENSOR_TRIGGERS=")+1 > maxArgStrlen {
		return fmt.Errorf("ATTUNE_SENSOR_TRIGGERS is %d bytes with %d rules, over the %d bytes an environment variable may hold; disable some rules",
			len(triggers), len(rules), maxArgStrlen-1)
	}
	dir, err := os.MkdirTemp("", "attune-sensor-")
	if err != nil {
		return fmt.Errorf("error creating work directory: %w", err)
	}
	defer func() {
		if err := removeWorkDir(dir); err != nil {
			in.log.Warn("error removing work directory", "dir", dir, "err", err)
		}
	}()
	env := baseEnv(in.sup.cfg.Environ, in.sup.cfg.PassthroughEnv)
	env = append(env, "TMPDIR="+dir, "ATTUNE_SENSOR_REF="+def.Ref, "ATTUNE_SENSOR_TRIGGERS="+string(triggers))

	p, err := startSensor(prog, args, env, dir)
	if err != nil {
		return err
	}
	in.log.Info("sensor started", "pid", p.pid, "rules", len(rules), "restarts", restarts)
	in.setState("running", &p.pid, restarts, lastErr)

	// Events are handled with a context that outlives a stop by the drain
	// below, so an event read before the stop is stored, not lost.
	evCtx, evCancel := context.WithCancel(context.Background())
	defer evCancel()
	p.readers.Add(2)
	go func() {
		defer p.readers.Done()
		in.readEvents(evCtx, p.stdoutR, def)
	}()
	go func() {
		defer p.readers.Done()
		in.readLogs(p)
	}()
	go p.writeStdin(in.log)

	known := map[int64]sensorRule{}
	announced := map[int64]bool{}
	for _, r := range def.Rules {
		known[r.ID], announced[r.ID] = r, true
	}
	var stopped error // nil when the process exited by itself
loop:
	for {
		select {
		case <-p.exited:
			break loop
		case <-in.ctx.Done():
			stopped = in.ctx.Err()
			p.terminate(in.sup.cfg.KillGrace)
			break loop
		case <-in.changed:
			next := in.latest()
			if !def.sameProgram(next) {
				in.log.Info("sensor definition changed; restarting it")
				stopped = errSensorRestart
				p.terminate(in.sup.cfg.KillGrace)
				break loop
			}
			if !p.queue(ruleChanges(known, announced, def.ReadAt, next)) {
				in.log.Warn("sensor does not read its stdin; restarting it so it gets the current rules", "queued", stdinQueue)
				stopped = errSensorRestart
				p.terminate(in.sup.cfg.KillGrace)
				break loop
			}
		}
	}

	state := p.reap()
	close(p.lines)
	// Read what it wrote before it ended; a process that escaped the group
	// and holds the pipes is not waited for long.
	drained := make(chan struct{})
	go func() { p.readers.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(2 * time.Second):
		_ = p.stdoutR.SetReadDeadline(time.Now())
		_ = p.stderrR.SetReadDeadline(time.Now())
		evCancel()
		<-drained
	}
	_ = p.stdinW.SetWriteDeadline(time.Now())
	<-p.writerDone
	p.stdoutR.Close()
	p.stderrR.Close()
	p.stdinW.Close()

	if stopped != nil {
		return stopped
	}
	code, sig := exitStatus(state)
	msg := fmt.Sprintf("exited with code %d", code)
	if sig != "" {
		msg = fmt.Sprintf("killed by signal %s (exit code %d)", sig, code)
	}
	p.mu.Lock()
	if p.lastStderr != "" {
		msg += ": " + p.lastStderr
	}
	p.mu.Unlock()
	return errors.New(msg)
}

// startSensor starts the process in a process group of its own, with pipes
// of ours on all three streams (see startProcess).
func startSensor(prog string, args, env []string, dir string) (_ *sensorProcess, err error) {
	p := &sensorProcess{group: group{exited: make(chan struct{})}, lines: make(chan []byte, stdinQueue), writerDone: make(chan struct{})}
	var ours, theirs []*os.File
	defer func() {
		closeAll(theirs)
		if err != nil {
			closeAll(ours)
		}
	}()
	var stdinR, stdoutW, stderrW *os.File
	if stdinR, p.stdinW, err = os.Pipe(); err != nil {
		return nil, fmt.Errorf("error creating pipe: %w", err)
	}
	ours, theirs = append(ours, p.stdinW), append(theirs, stdinR)
	if p.stdoutR, stdoutW, err = os.Pipe(); err != nil {
		return nil, fmt.Errorf("error creating pipe: %w", err)
	}
	ours, theirs = append(ours, p.stdoutR), append(theirs, stdoutW)
	if p.stderrR, stderrW, err = os.Pipe(); err != nil {
		return nil, fmt.Errorf("error creating pipe: %w", err)
	}
	ours, theirs = append(ours, p.stderrR), append(theirs, stderrW)

	for attempt := 1; ; attempt++ {
		p.cmd = exec.Command(prog, args...)
		p.cmd.Env, p.cmd.Dir = env, dir
		p.cmd.Stdin, p.cmd.Stdout, p.cmd.Stderr = stdinR, stdoutW, stderrW
		p.cmd.SysProcAttr = sysProcAttr()
		err = p.cmd.Start()
		// ETXTBSY: another goroutine forked while the file was open for
		// writing (golang.org/issue/22315); the window is short.
		if err == nil || !errors.Is(err, syscall.ETXTBSY) || attempt == 5 {
			break
		}
		time.Sleep(time.Duration(attempt) * 10 * time.Millisecond)
	}
	if err != nil {
		if uerr := explainStartError(prog, err); uerr != nil {
			return nil, uerr
		}
		return nil, fmt.Errorf("error starting %s: %w", prog, err)
	}
	p.pid = p.cmd.Process.Pid
	go func() {
		_ = waitExited(p.pid)
		close(p.exited)
	}()
	return p, nil
}
