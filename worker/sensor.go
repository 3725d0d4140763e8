package worker

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/attune-system/attune/packs"
)

// The sensor supervisor runs, on one replica at a time, each enabled sensor
// that has an enabled rule on one of its trigger types (SPEC §7).
//
// Exactly one instance across replicas: a replica runs a sensor only while
// it holds the sensor's PostgreSQL session advisory lock, taken on a
// connection of its own (not the pool, whose connections come and go).
// Replicas that should run a sensor but do not hold it try the lock every
// LockRetry, so when the holder dies its connection closes, the lock goes
// with it, and another replica takes over within seconds. A replica whose
// lock connection fails stops its sensors at once: it may no longer own
// them. The same connection LISTENs on packs.RuleChannel; a notification, or
// Resync passing without one, re-reads the sensors and rules.
//
// Choices where the contract is silent:
//   - A replica that takes a sensor over waits, up to ATTUNE_KILL_GRACE + 1s,
//     for attune.sensor_state to say the previous holder's process stopped,
//     since a holder that lost its connection only then learns it lost the
//     lock and needs up to the grace to stop its process.
//   - A sensor whose runner_type, entry point or trigger_types change is
//     restarted; a rule whose trigger_params change reaches it as
//     rule.disabled (old) then rule.enabled (new).
//   - A newly active rule is rule.created when its row was created after the
//     running process started, else rule.enabled; a rule that leaves is
//     rule.deleted when its row is gone, else rule.disabled.
//   - Every exit, code 0 included, is followed by a restart after the
//     backoff; a run of HealthyAfter resets the backoff.
//   - A sensor that leaves 256 rule-change lines unread on stdin is
//     restarted, so it learns the rules from ATTUNE_SENSOR_TRIGGERS instead.

// sensorLockKey is the SQL of a sensor's advisory lock key; %s is the
// expression of its ref.
const sensorLockKey = `hashtextextended('attune.sensor:' || %s, 0)`

// Bounds on what a sensor writes.
const (
	// maxEventLine bounds one stdout line; a longer one is skipped whole.
	maxEventLine = 1 << 20
	// maxLogLine bounds one stderr line in the log; the rest is cut.
	maxLogLine = 4 << 10
	// stdinQueue is how many rule-change lines may wait for the sensor to
	// read them.
	stdinQueue = 256
)

// sensorTiming holds the sensor supervisor's intervals; tests shorten them.
type sensorTiming struct {
	// LockRetry is how often a replica tries the locks of sensors it should
	// run but does not hold, and checks its lock connection. Defaults to 2s.
	LockRetry time.Duration
	// Resync is how often sensors and rules are re-read without a
	// notification. Defaults to 10s.
	Resync time.Duration
	// MinBackoff and MaxBackoff bound the delay before restarting a sensor
	// that exited; it doubles from one to the other. Default to 1s and 60s.
	MinBackoff, MaxBackoff time.Duration
	// HealthyAfter is how long a run must last for the backoff to start
	// again from MinBackoff. Defaults to 60s.
	HealthyAfter time.Duration
}

// defaultSensorTiming is the timing of `attune serve`.
var defaultSensorTiming = sensorTiming{
	LockRetry:    2 * time.Second,
	Resync:       10 * time.Second,
	MinBackoff:   time.Second,
	MaxBackoff:   time.Minute,
	HealthyAfter: time.Minute,
}

// dbTimeout bounds each database operation of the supervisor.
const dbTimeout = 5 * time.Second

// sensorRule is one active rule as a sensor sees it (SPEC §7).
type sensorRule struct {
	ID         int64           `json:"id"`
	Ref        string          `json:"ref"`
	TriggerRef string          `json:"trigger_ref"`
	Config     json.RawMessage `json:"config"`

	created time.Time
}

func (r sensorRule) same(o sensorRule) bool {
	return r.Ref == o.Ref && r.TriggerRef == o.TriggerRef && bytes.Equal(r.Config, o.Config)
}

// sensorDef is a sensor to run, as read from the database.
type sensorDef struct {
	Ref, RunnerType, Path string
	TriggerTypes          []string
	// Rules are the enabled rules on its trigger types, by id.
	Rules []sensorRule
	// Existing holds the id of every rule row at ReadAt (shared, read-only).
	Existing map[int64]bool
	// ReadAt is the database's clock when this was read.
	ReadAt time.Time
}

// sameProgram reports whether a running process of d may go on serving e.
func (d sensorDef) sameProgram(e sensorDef) bool {
	return d.RunnerType == e.RunnerType && d.Path == e.Path && slices.Equal(d.TriggerTypes, e.TriggerTypes)
}

// sensorSupervisor runs this replica's share of the sensors.
type sensorSupervisor struct {
	cfg      Config
	pool     *pgxpool.Pool
	log      *slog.Logger
	runtimes Runtimes
	timing   sensorTiming
	onEvent  func(trigger string, executions, skipped int) // see Server.OnEvent

	cancel context.CancelFunc
	done   chan struct{}
}

func newSensorSupervisor(cfg Config, pool *pgxpool.Pool, log *slog.Logger, runtimes Runtimes) *sensorSupervisor {
	return &sensorSupervisor{cfg: cfg, pool: pool, log: log.With("component", "sensors"), runtimes: runtimes, timing: defaultSensorTiming}
}

// start runs the supervisor until stop.
func (s *sensorSupervisor) start(ctx context.Context) {
	ctx, s.cancel = context.WithCancel(context.WithoutCancel(ctx))
	s.done = make(chan struct{})
	go s.run(ctx)
}

// stop stops every sensor this replica runs (SIGTERM, SIGKILL after the
// grace) and releases their locks.
func (s *sensorSupervisor) stop() {
	if s.cancel == nil {
		return
	}
	s.cancel()
	<-s.done
}

// run keeps a lock session going, reconnecting after failures.
func (s *sensorSupervisor) run(ctx context.Context) {
	defer close(s.done)
	delay := time.Second
	for {
		began := time.Now()
		err := s.session(ctx)
		if ctx.Err() != nil {
			return
		}
		if time.Since(began) > time.Minute {
			delay = time.Second
		}
		s.log.Warn("sensor lock connection failed; this replica runs no sensors until it reconnects",
			"err", err, "retry_in", delay)
		if !sleepCtx(ctx, delay) {
			return
		}
		delay = min(delay*2, 30*time.Second)
	}
}

// session holds one lock connection: it takes, runs and releases sensors
// until ctx ends or the connection fails. Either way every sensor it started
// is stopped before it returns.
func (s *sensorSupervisor) session(ctx context.Context) (err error) {
	cc := s.pool.Config().ConnConfig.Copy()
	cc.RuntimeParams["application_name"] = truncate("attune sensors "+s.cfg.WorkerName, 60)
	cctx, cancel := context.WithTimeout(ctx, dbTimeout)
	conn, err := pgx.ConnectConfig(cctx, cc)
	cancel()
	if err != nil {
		return fmt.Errorf("error connecting: %w", err)
	}
	held := map[string]*sensorInstance{}     // locked, running or in backoff
	stopping := map[string]*sensorInstance{} // locked, being stopped
	defer func() {
		for _, in := range held {
			in.stop()
		}
		for _, in := range held {
			<-in.done
		}
		for _, in := range stopping {
			<-in.done
		}
		// Closing the connection releases every lock it holds.
		cctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = conn.Close(cctx)
	}()

	// A replica that goes silent (partitioned, frozen) loses its session,
	// and so its locks, instead of holding them until TCP gives up. It runs
	// a query every LockRetry. The timeout leaves the replica time to notice
	// the failed query and stop its sensors before the server frees the
	// locks. Older servers lack the setting.
	idle := max(15*time.Second, s.timing.LockRetry+dbTimeout+s.cfg.KillGrace+3*time.Second)
	if _, err := conn.Exec(ctx, fmt.Sprintf("SET idle_session_timeout = %d", idle.Milliseconds())); err != nil && isConnError(err) {
		return err
	}
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{packs.RuleChannel}.Sanitize()); err != nil {
		return fmt.Errorf("error listening for rule changes: %w", err)
	}
	s.log.Debug("sensor supervisor connected", "worker", s.cfg.WorkerName)

	var (
		defs     map[string]sensorDef
		loadedAt time.Time
		dirty    = true
		warned   = map[string]bool{} // sensors whose runtime this replica lacks
	)
	for {
		if dirty || time.Since(loadedAt) >= s.timing.Resync {
			d, err := s.load(ctx)
			switch {
			case err == nil:
				defs, loadedAt, dirty = d, time.Now(), false
			case ctx.Err() != nil:
				return nil
			default:
				s.log.Warn("error reading sensors and rules; retrying", "err", err)
			}
		}

		// Sensors stopped since the last round give their locks back.
		for ref, in := range stopping {
			if !in.finished() {
				continue
			}
			if err := s.unlock(ctx, conn, ref); err != nil {
				return err
			}
			delete(stopping, ref)
		}

		if defs != nil {
			for ref, in := range held {
				if def, ok := defs[ref]; ok && s.runnable(def) {
					in.update(def)
					continue
				}
				s.log.Info("stopping sensor: no enabled rule on its triggers, or the sensor is disabled", "sensor", ref)
				in.stop()
				stopping[ref] = in
				delete(held, ref)
			}
		}

		var want []string
		for ref, def := range defs {
			switch {
			case !s.runnable(def):
				if !warned[ref] {
					warned[ref] = true
					s.log.Warn("sensor needs a runtime this replica lacks; another replica must run it",
						"sensor", ref, "runner_type", def.RunnerType, "runtimes", s.runtimes.Names())
				}
			case held[ref] == nil && stopping[ref] == nil:
				want = append(want, ref)
			}
		}
		slices.Sort(want)
		// Also the liveness check of the connection when want is empty.
		got, err := s.tryLocks(ctx, conn, want)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		for _, ref := range got {
			in := newSensorInstance(s, defs[ref])
			held[ref] = in
			go in.run()
		}

		wait := s.timing.LockRetry
		if len(stopping) > 0 {
			wait = min(wait, 50*time.Millisecond)
		}
		notified, err := waitNotification(ctx, conn, wait)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			return err
		case notified:
			dirty = true
		}
	}
}

// runnable reports whether this replica can run def at all.
func (s *sensorSupervisor) runnable(def sensorDef) bool {
	_, ok := s.runtimes[def.RunnerType]
	return ok
}

// load reads the sensors to run and the ids of all rules, in one snapshot.
func (s *sensorSupervisor) load(ctx context.Context) (map[string]sensorDef, error) {
	ctx, cancel := context.WithTimeout(ctx, dbTimeout)
	defer cancel()
	defs := map[string]sensorDef{}
	existing := map[int64]bool{}
	err := pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		var ids []int64
		var now time.Time
		if err := tx.QueryRow(ctx, "SELECT coalesce(array_agg(id), '{}'), now() FROM attune.rule").Scan(&ids, &now); err != nil {
			return err
		}
		for _, id := range ids {
			existing[id] = true
		}
		rows, err := tx.Query(ctx, `SELECT s.ref, s.runner_type, s.path, s.trigger_types,
				array_agg(r.id ORDER BY r.id), array_agg(r.ref ORDER BY r.id), array_agg(r.trigger_ref ORDER BY r.id),
				array_agg(r.trigger_params::text ORDER BY r.id), array_agg(r.created ORDER BY r.id)
			FROM attune.sensor s JOIN attune.rule r ON r.enabled AND r.trigger_ref = ANY (s.trigger_types)
			WHERE s.enabled
			GROUP BY s.ref`)
		if err != nil {
			return err
		}
		var (
			def              sensorDef
			ids2             []int64
			refs, trigs, cfg []string
			created          []time.Time
		)
		_, err = pgx.ForEachRow(rows, []any{&def.Ref, &def.RunnerType, &def.Path, &def.TriggerTypes, &ids2, &refs, &trigs, &cfg, &created}, func() error {
			d := def
			d.TriggerTypes = slices.Clone(def.TriggerTypes)
			d.Existing, d.ReadAt = existing, now
			for i, id := range ids2 {
				d.Rules = append(d.Rules, sensorRule{ID: id, Ref: refs[i], TriggerRef: trigs[i], Config: json.RawMessage(cfg[i]), created: created[i]})
			}
			defs[d.Ref] = d
			return nil
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("error reading sensors: %w", err)
	}
	return defs, nil
}

// tryLocks takes the locks of refs that are free and returns those it got.
func (s *sensorSupervisor) tryLocks(ctx context.Context, conn *pgx.Conn, refs []string) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, dbTimeout)
	defer cancel()
	if refs == nil {
		refs = []string{}
	}
	rows, err := conn.Query(ctx, "SELECT ref FROM unnest($1::text[]) AS ref WHERE pg_try_advisory_lock("+fmt.Sprintf(sensorLockKey, "ref")+")", refs)
	if err != nil {
		return nil, fmt.Errorf("error taking sensor locks: %w", err)
	}
	got, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("error taking sensor locks: %w", err)
	}
	return got, nil
}

func (s *sensorSupervisor) unlock(ctx context.Context, conn *pgx.Conn, ref string) error {
	ctx, cancel := context.WithTimeout(ctx, dbTimeout)
	defer cancel()
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_unlock("+fmt.Sprintf(sensorLockKey, "$1::text")+")", ref); err != nil {
		return fmt.Errorf("error releasing the lock of sensor %s: %w", ref, err)
	}
	return nil
}

// waitNotification waits up to d for a notification on conn. A timeout is
// not an error; a failed connection is.
func waitNotification(ctx context.Context, conn *pgx.Conn, d time.Duration) (bool, error) {
	wctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	_, err := conn.WaitForNotification(wctx)
	switch {
	case err == nil:
		return true, nil
	case ctx.Err() != nil:
		return false, ctx.Err()
	case pgconn.Timeout(err) && !conn.IsClosed():
		return false, nil
	}
	return false, fmt.Errorf("error waiting for rule changes: %w", err)
}

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

// queue queues rule-change lines for stdin; false when the queue is full.
func (p *sensorProcess) queue(lines [][]byte) bool {
	for _, l := range lines {
		select {
		case p.lines <- l:
		default:
			return false
		}
	}
	return true
}

// ruleChanges returns the stdin lines that turn the rules a process knows
// into next.Rules, and updates known. announced holds every rule id the
// process was ever told of; started is the database time of the rules it
// started with.
func ruleChanges(known map[int64]sensorRule, announced map[int64]bool, started time.Time, next sensorDef) [][]byte {
	var out [][]byte
	add := func(typ string, r sensorRule) {
		b, _ := json.Marshal(map[string]any{"event_type": typ, "rule": r})
		out = append(out, append(b, '\n'))
	}
	active := map[int64]bool{}
	for _, r := range next.Rules {
		active[r.ID] = true
		old, ok := known[r.ID]
		switch {
		case !ok && !announced[r.ID] && r.created.After(started):
			add("rule.created", r)
		case !ok:
			add("rule.enabled", r)
		case !old.same(r):
			add("rule.disabled", old)
			add("rule.enabled", r)
		default:
			continue
		}
		known[r.ID], announced[r.ID] = r, true
	}
	for _, id := range slices.Sorted(maps.Keys(known)) {
		if active[id] {
			continue
		}
		if next.Existing[id] {
			add("rule.disabled", known[id])
		} else {
			add("rule.deleted", known[id])
		}
		delete(known, id)
	}
	return out
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

// writeStdin writes the queued rule-change lines until the queue closes. A
// sensor that closed its stdin does not get them; that is its choice.
func (p *sensorProcess) writeStdin(log *slog.Logger) {
	defer close(p.writerDone)
	broken := false
	for line := range p.lines {
		if broken {
			continue
		}
		if _, err := p.stdinW.Write(line); err != nil {
			broken = true
			log.Debug("sensor stdin closed; rule changes are not delivered", "err", err)
		}
	}
}

// readEvents handles each stdout line as an event until EOF.
func (in *sensorInstance) readEvents(ctx context.Context, r io.Reader, def sensorDef) {
	limit := newLogLimiter(10, 50)
	complain := func(msg string, args ...any) {
		if ok, dropped := limit.allow(); ok {
			if dropped > 0 {
				args = append(args, "suppressed", dropped)
			}
			in.log.Warn(msg, args...)
		}
	}
	_ = scanLines(r, maxEventLine, func(line []byte, over bool) {
		if over {
			complain("skipping sensor output line over the size limit", "limit_bytes", maxEventLine, "start", truncate(string(line), 100))
			return
		}
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			return
		}
		_, err := in.handleEvent(ctx, line, def)
		switch {
		case errors.Is(err, errBadEvent):
			complain("skipping sensor output line", "err", err, "line", truncate(string(line), 200))
		case err != nil:
			in.log.Error("error handling event; it is lost", "err", err, "line", truncate(string(line), 200))
		}
	})
	if n := limit.dropped(); n > 0 {
		in.log.Warn("sensor output lines skipped without a log line", "suppressed", n)
	}
}

// handleEvent parses and dispatches one event line. A panic is turned into
// an error: no line a sensor writes may bring the replica down.
func (in *sensorInstance) handleEvent(ctx context.Context, line []byte, def sensorDef) (d dispatched, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic handling event: %v", r)
		}
	}()
	ev, err := parseEvent(line, def.Ref, def.TriggerTypes)
	if err != nil {
		return dispatched{}, err
	}
	d, err = dispatchEventRetrying(ctx, in.sup.pool, in.sup.log, def.Ref, ev)
	if err == nil && in.sup.onEvent != nil {
		in.sup.onEvent(ev.TriggerRef, len(d.Executions), len(d.Skipped))
	}
	return d, err
}

// readLogs copies stderr lines to the log, each cut at maxLogLine, at a
// bounded rate.
func (in *sensorInstance) readLogs(p *sensorProcess) {
	limit := newLogLimiter(20, 100)
	_ = scanLines(p.stderrR, maxLogLine, func(line []byte, over bool) {
		text := string(bytes.ToValidUTF8(bytes.TrimRight(line, "\r\n"), []byte("\uFFFD")))
		if text == "" {
			return
		}
		if !over {
			p.mu.Lock()
			p.lastStderr = truncate(text, 500)
			p.mu.Unlock()
		}
		ok, dropped := limit.allow()
		if !ok {
			return
		}
		args := []any{"line", text}
		if over {
			args = append(args, "cut_at_bytes", maxLogLine)
		}
		if dropped > 0 {
			args = append(args, "suppressed", dropped)
		}
		in.log.Info("sensor stderr", args...)
	})
	if n := limit.dropped(); n > 0 {
		in.log.Warn("sensor stderr lines not logged (rate limit)", "suppressed", n)
	}
}

// scanLines calls fn with each line of r, without its line ending, until
// EOF or a read error. A line longer than size is reported once with
// over set and its first size bytes, and the rest of it is skipped; memory
// stays bounded by size. line is valid only during the call.
func scanLines(r io.Reader, size int, fn func(line []byte, over bool)) error {
	br := bufio.NewReaderSize(r, size)
	over := false
	for {
		chunk, err := br.ReadSlice('\n')
		switch {
		case errors.Is(err, bufio.ErrBufferFull):
			if !over {
				fn(chunk, true)
			}
			over = true
			continue
		case over:
			over = false // the end of a long line
		case len(chunk) > 0:
			fn(bytes.TrimRight(chunk, "\r\n"), false)
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

// logLimiter is a token bucket for the log lines one sensor causes, so a
// sensor flooding stderr or garbage cannot flood attune's log.
type logLimiter struct {
	mu      sync.Mutex
	rate    float64 // tokens per second
	burst   float64
	tokens  float64
	last    time.Time
	skipped int
}

func newLogLimiter(rate, burst float64) *logLimiter {
	return &logLimiter{rate: rate, burst: burst, tokens: burst, last: time.Now()}
}

// allow reports whether a line may be logged and, when it may, how many
// were suppressed since the last one that was.
func (l *logLimiter) allow() (bool, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	l.tokens = min(l.burst, l.tokens+now.Sub(l.last).Seconds()*l.rate)
	l.last = now
	if l.tokens < 1 {
		l.skipped++
		return false, 0
	}
	l.tokens--
	n := l.skipped
	l.skipped = 0
	return true, n
}

func (l *logLimiter) dropped() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.skipped
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
