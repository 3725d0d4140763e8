package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivertype"

	"github.com/attune-system/attune/jobs"
	"github.com/attune-system/attune/schema"
	"github.com/attune-system/attune/worker/process"
)

// maxExecutionTimeout is the longest timeout an enqueue may ask for
// (attune.enqueue_prepare caps timeout_seconds at 7 days). River's rescuer
// waits longer than that, so it never re-runs an execution still running;
// dead workers are found by heartbeat instead.
const maxExecutionTimeout = 7 * 24 * time.Hour

// Server is one replica's worker: a River client on one queue per runtime,
// the heartbeat in attune.worker, and the reaper of dead workers.
type Server struct {
	cfg     Config
	pool    *pgxpool.Pool
	log     *slog.Logger
	client  *river.Client[pgx.Tx]
	exec    *executor
	sensors *sensorSupervisor
	pruner  *pruner
	wakes   *wakeListener

	hostname string

	// dbDown is set while the heartbeat cannot reach the database; River's
	// own logs are quiet meanwhile, so that an outage is one line when it
	// starts and one when it ends.
	dbDown *atomic.Bool
	// lastBeat is when the last heartbeat succeeded (UnixNano), for the
	// fence.
	lastBeat atomic.Int64
	// connectedSince is when the heartbeat last came back from an outage
	// (or the replica started): only a replica that has reached the
	// database for a whole stale window may declare another dead, so that
	// after an outage the others get to heartbeat first.
	connectedSince time.Time

	stopHeartbeat context.CancelFunc
	heartbeatDone chan struct{}
	// stopBatches ends the claimer and the completer; batchesDone is closed
	// once both have returned.
	stopBatches context.CancelFunc
	batchesDone chan struct{}
}

// NewServer prepares a replica; Start runs it.
func NewServer(cfg Config, pool *pgxpool.Pool, log *slog.Logger) (*Server, error) {
	var key []byte
	if cfg.SecretsKey != "" {
		var err error
		if key, err = DecodeSecretsKey(cfg.SecretsKey); err != nil {
			return nil, fmt.Errorf("ATTUNE_SECRETS_KEY %w", err)
		}
	}
	runtimes := DetectRuntimes(envValue(cfg.Environ, "PATH"))
	dbDown := &atomic.Bool{} // set by the heartbeat while the database is unreachable
	retryLog := outageMuted(log, dbDown)
	// One driver for River's client and the completer's batched job
	// completions (completeJobs).
	driver := riverpgxv5.New(pool)
	exec := &executor{
		cfg: cfg, pool: pool, runtimes: runtimes, key: key, log: log, retryLog: retryLog,
		slots:     make(chan struct{}, cfg.MaxConcurrentExecutions),
		completer: newCompleter(cfg.WorkerName, pool, driver, log, retryLog),
		claimer:   newClaimer(cfg.WorkerName, pool),
		stopping:  make(chan struct{}),
		riverID:   riverID(cfg.WorkerName),
	}
	workers := river.NewWorkers()
	if err := river.AddWorkerSafely[jobs.ExecutionArgs](workers, exec); err != nil {
		return nil, fmt.Errorf("error registering the execution worker: %w", err)
	}
	queues := map[string]river.QueueConfig{}
	for _, name := range runtimes.Names() {
		// More River workers than process slots: while processes run, the
		// next jobs are already fetched and waiting for a slot, and finished
		// ones write their results without holding one. A job that waits
		// long for a slot goes back to the queue (executor.Work).
		queues[name] = river.QueueConfig{MaxWorkers: 2 * cfg.MaxConcurrentExecutions}
	}
	client, err := river.NewClient(driver, &river.Config{
		ID:     riverID(cfg.WorkerName),
		Schema: schema.Name,
		Queues: queues,
		// Insert notifications wake the producer; the cooldown only
		// batches bursts, so keep it short for pickup latency.
		FetchCooldown:        2 * time.Millisecond,
		FetchPollInterval:    time.Second,
		JobTimeout:           -1,
		RescueStuckJobsAfter: maxExecutionTimeout + time.Hour,
		Workers:              workers,
		Middleware:           []rivertype.Middleware{&traceWork{}},
		Logger:               riverLogger(log, dbDown),
	})
	if err != nil {
		return nil, fmt.Errorf("error creating River client: %w", err)
	}
	host, _ := os.Hostname()
	return &Server{cfg: cfg, pool: pool, log: log, client: client, exec: exec, hostname: host, dbDown: dbDown,
		sensors: newSensorSupervisor(cfg, pool, log, runtimes), pruner: &pruner{pool: pool, retention: cfg.Retention, log: log},
		wakes: &wakeListener{exec: exec, pool: pool, log: log}}, nil
}

// OutageMuted is log, silent while this replica's heartbeat finds the
// database unreachable: for what would otherwise repeat the outage every
// few seconds (River UI's refreshing queries), the heartbeat having said it.
func (s *Server) OutageMuted(log *slog.Logger) *slog.Logger { return outageMuted(log, s.dbDown) }

// Client is the replica's River client.
func (s *Server) Client() *river.Client[pgx.Tx] { return s.client }

// Runtimes are the runner types this replica advertises.
func (s *Server) Runtimes() Runtimes { return s.exec.runtimes }

// OnStart sets a hook observing each process start; call before Start.
func (s *Server) OnStart(fn func(id int64, at time.Time)) { s.exec.onStart = fn }

// OnFinish sets a hook observing each execution's final status once it is
// committed; call before Start.
func (s *Server) OnFinish(fn func(id int64, status string)) { s.exec.completer.onFinish = fn }

// Start registers the worker, starts the heartbeat and River.
func (s *Server) Start(ctx context.Context) error {
	// One key per installation: a replica with another key, or none while
	// secrets are stored, would fail every execution that needs one.
	if err := jobs.CheckSecretsKey(ctx, s.pool, s.exec.key); err != nil {
		return err
	}
	caps := map[string]any{
		"runtimes":                  s.exec.runtimes.Names(),
		"max_concurrent_executions": s.cfg.MaxConcurrentExecutions,
		// How escaped descendants are killed (process.Containment).
		"containment": process.Containment(),
	}
	if s.cfg.RunAs != "" {
		caps["run_as"] = s.cfg.RunAs
	}
	capsJSON, _ := json.Marshal(caps)
	if err := s.pool.QueryRow(ctx, "SELECT current_database()").Scan(&s.exec.database); err != nil {
		return fmt.Errorf("error reading the database name: %w", err)
	}
	// A name whose heartbeat is fresh belongs to a live replica: taking it
	// over would settle that replica's executions under it.
	tag, err := s.pool.Exec(ctx, `INSERT INTO attune.worker (name, hostname, pid, capabilities, status, started_at, heartbeat_at)
		VALUES ($1, $2, $3, $4, 'active', now(), now())
		ON CONFLICT (name) DO UPDATE SET hostname = EXCLUDED.hostname, pid = EXCLUDED.pid,
			capabilities = EXCLUDED.capabilities, status = 'active', started_at = now(), heartbeat_at = now()
		WHERE attune.worker.status <> 'active' OR attune.worker.heartbeat_at < now() - $5::interval`,
		s.cfg.WorkerName, s.hostname, os.Getpid(), capsJSON, s.cfg.WorkerStaleAfter.String())
	if err != nil {
		return fmt.Errorf("error registering worker %s: %w", s.cfg.WorkerName, err)
	}
	if tag.RowsAffected() == 0 {
		var age time.Duration
		var host string
		var pid int
		if err := s.pool.QueryRow(ctx, "SELECT now() - heartbeat_at, hostname, pid FROM attune.worker WHERE name = $1",
			s.cfg.WorkerName).Scan(&age, &host, &pid); err != nil {
			return fmt.Errorf("error registering worker %s: %w", s.cfg.WorkerName, err)
		}
		return fmt.Errorf("%w: worker %s (pid %d on %s) is active, its heartbeat %s old; give this replica another name with ATTUNE_WORKER_NAME, or leave it unset for a unique default",
			ErrWorkerNameInUse, s.cfg.WorkerName, pid, host, age.Round(100*time.Millisecond))
	}
	s.lastBeat.Store(time.Now().UnixNano())
	s.connectedSince = time.Now()
	// Executions this name left running in an earlier life are not running.
	if err := s.reap(ctx, s.cfg.WorkerName, 0); err != nil {
		s.release(ctx)
		return err
	}
	bctx, stopBatches := context.WithCancel(context.WithoutCancel(ctx))
	s.stopBatches = stopBatches
	s.batchesDone = make(chan struct{})
	go func() {
		defer close(s.batchesDone)
		var wg sync.WaitGroup
		wg.Go(func() { s.exec.claimer.run(bctx) })
		s.exec.completer.run(bctx)
		wg.Wait()
	}()
	s.wakes.start(ctx) // policy.go: concurrency waiters woken in process
	// River hard-stops (cancels running work) when its Start context ends;
	// ctx ends at the first SIGTERM, and Stop decides when to cancel.
	if err := s.client.Start(context.WithoutCancel(ctx)); err != nil {
		s.wakes.stop()
		stopBatches()
		<-s.batchesDone
		s.release(ctx)
		return fmt.Errorf("error starting River: %w", err)
	}
	hbCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.stopHeartbeat = cancel
	s.heartbeatDone = make(chan struct{})
	go s.heartbeat(hbCtx)
	s.sensors.start(ctx)
	s.pruner.start(ctx) // retention.go
	s.log.Info("worker started", "name", s.cfg.WorkerName, "runtimes", s.exec.runtimes.Names(),
		"max_concurrent_executions", s.cfg.MaxConcurrentExecutions)
	return nil
}

// HandedBack is how many fetched jobs this replica gave back unstarted
// while it stopped, for other replicas to run.
func (s *Server) HandedBack() int64 { return s.exec.handedBack.Load() }

// Stop stops taking work, lets running executions finish for up to
// ATTUNE_SHUTDOWN_TIMEOUT (or until ctx is done), then kills the rest and
// settles them, and marks the worker inactive.
func (s *Server) Stop(ctx context.Context) error {
	s.sensors.stop() // no new events while executions drain
	s.pruner.stop()
	s.exec.stop() // fetched jobs not yet started go back for other replicas
	softCtx, cancel := context.WithTimeout(ctx, s.cfg.ShutdownTimeout)
	defer cancel()
	err := s.client.Stop(softCtx)
	if err != nil {
		s.log.Warn("executions still running at shutdown timeout; killing them", "timeout", s.cfg.ShutdownTimeout)
		hardCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.KillGrace+30*time.Second)
		defer cancel()
		err = s.client.StopAndCancel(hardCtx)
	}
	// Every Work call has returned, so no claim or result is waiting and no
	// admission waits for a wake-up.
	s.wakes.stop()
	if s.stopBatches != nil {
		s.stopBatches()
		<-s.batchesDone
	}
	if s.stopHeartbeat != nil {
		s.stopHeartbeat()
		<-s.heartbeatDone
	}
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	// Whatever is still marked running here lost its result (the database
	// stayed away past the retries): settle it like a dead worker's.
	if rerr := s.reap(wctx, s.cfg.WorkerName, 0); rerr != nil {
		err = errors.Join(err, fmt.Errorf("error settling unfinished executions: %w", rerr))
	}
	if _, uerr := s.pool.Exec(wctx, "UPDATE attune.worker SET status = 'inactive', heartbeat_at = now() WHERE name = $1", s.cfg.WorkerName); uerr != nil {
		err = errors.Join(err, fmt.Errorf("error marking worker inactive: %w", uerr))
	}
	return err
}

// ErrWorkerNameInUse is returned by Start when another live replica holds
// the worker name.
var ErrWorkerNameInUse = errors.New("worker name in use")

// heartbeat reports this worker alive and, once it has reached the database
// for a whole stale window, reaps workers that stopped reporting and
// reconciles executions whose River job went away. It says once when the
// database goes and once when it returns.
func (s *Server) heartbeat(ctx context.Context) {
	defer close(s.heartbeatDone)
	fenceDone := make(chan struct{})
	go s.watchFence(ctx, fenceDone)
	defer func() { <-fenceDone }()
	t := time.NewTicker(s.cfg.HeartbeatInterval)
	defer t.Stop()
	var downSince time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		active, err := s.beat(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if downSince.IsZero() {
				downSince = time.Now()
				s.dbDown.Store(true)
				s.log.Warn("database unavailable; finished results wait for it, and running executions are killed if it stays away",
					"fence_after", s.cfg.fenceAfter(), "err", err)
			}
			continue
		}
		if !downSince.IsZero() {
			s.log.Info("database available again", "after", time.Since(downSince).Round(time.Millisecond))
			downSince = time.Time{}
			s.dbDown.Store(false)
			s.connectedSince = time.Now()
		}
		if !active {
			s.rejoin(ctx)
			continue
		}
		s.lastBeat.Store(time.Now().UnixNano())
		if s.exec.fenced.CompareAndSwap(true, false) {
			s.log.Info("heartbeat restored; taking work again")
		}
		if time.Since(s.connectedSince) >= s.cfg.WorkerStaleAfter {
			if err := s.reapStale(ctx); err != nil && ctx.Err() == nil {
				s.log.Warn("reaping dead workers failed", "err", err)
			}
			if err := s.reconcile(ctx); err != nil && ctx.Err() == nil {
				s.log.Warn("reconciling executions failed", "err", err)
			}
		}
		if err := s.recoverLostJobs(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("recovering lost jobs failed", "err", err)
		}
		// Bounded like the beat: housekeeping must never hold up the loop.
		fctx, cancel := context.WithTimeout(ctx, s.cfg.HeartbeatInterval)
		if err := s.forgetOldWorkers(fctx); err != nil && ctx.Err() == nil {
			s.log.Warn("deleting old worker rows failed", "err", err)
		}
		cancel()
	}
}

// beat writes one heartbeat, bounded by the heartbeat interval so that an
// unreachable database cannot stall the loop. It reports whether the
// worker is still active: the others mark a silent worker inactive, and
// only it may make itself active again (rejoin).
func (s *Server) beat(ctx context.Context) (active bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.HeartbeatInterval)
	defer cancel()
	tag, err := s.pool.Exec(ctx, "UPDATE attune.worker SET heartbeat_at = now() WHERE name = $1 AND status = 'active'", s.cfg.WorkerName)
	if err != nil {
		return false, err
	}
	return tag.RowsAffected() == 1, nil
}

// release marks this replica's row inactive after a failed Start, so that
// a restart under the same name is not refused as a live duplicate.
func (s *Server) release(ctx context.Context) {
	_, _ = s.pool.Exec(context.WithoutCancel(ctx), "UPDATE attune.worker SET status = 'inactive' WHERE name = $1 AND pid = $2",
		s.cfg.WorkerName, os.Getpid())
}

// watchFence fences the replica when no heartbeat has succeeded for
// Config.fenceAfter: it stops taking work and kills its running process
// groups, so that they are gone before any other replica may declare it
// dead (after ATTUNE_WORKER_STALE_AFTER) and run their next attempts.
func (s *Server) watchFence(ctx context.Context, done chan struct{}) {
	defer close(done)
	after := s.cfg.fenceAfter()
	t := time.NewTicker(max(s.cfg.HeartbeatInterval/10, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		silent := time.Since(time.Unix(0, s.lastBeat.Load()))
		if silent > after && !s.exec.fenced.Load() {
			n := s.exec.fence()
			s.log.Error("no heartbeat for too long: fenced, taking no work, running executions killed; results are refused if another replica settled them meanwhile",
				"silent_for", silent.Round(time.Millisecond), "fence_after", after, "killed", n)
		}
	}
}

// rejoin brings back a replica the others marked inactive: fenced at once,
// it becomes active again once none of its processes runs, so that the
// attempts it lost are settled by the others and never overlap its own.
func (s *Server) rejoin(ctx context.Context) {
	if !s.exec.fenced.Load() {
		n := s.exec.fence()
		s.log.Error("this worker was marked inactive by another replica (its heartbeat was stale): fenced, running executions killed",
			"killed", n)
	}
	if s.exec.busy() {
		return
	}
	tag, err := s.pool.Exec(ctx, `UPDATE attune.worker SET status = 'active', heartbeat_at = now(), pid = $2, hostname = $3
		WHERE name = $1 AND status = 'inactive'`, s.cfg.WorkerName, os.Getpid(), s.hostname)
	if err != nil || tag.RowsAffected() != 1 {
		return
	}
	s.lastBeat.Store(time.Now().UnixNano())
	s.exec.fenced.Store(false)
	s.log.Info("rejoined as an active worker; taking work again")
}

// reconcile settles executions whose River job something other than
// attune finalized or deleted, and reaps workers that executions still say
// run them although they are gone (attune.reconcile, attune.gone_workers).
func (s *Server) reconcile(ctx context.Context) error {
	rows, err := s.pool.Query(ctx, "SELECT id, status, error, ran_on FROM attune.reconcile($1, $2::interval)",
		s.cfg.WorkerName, s.cfg.WorkerStaleAfter.String())
	if err != nil {
		return fmt.Errorf("error reconciling executions: %w", err)
	}
	var id int64
	var status, why string
	var ranOn *string
	if _, err := pgx.ForEachRow(rows, []any{&id, &status, &why, &ranOn}, func() error {
		s.log.Warn("execution settled by the reconciler", "id", id, "status", status, "error", why)
		// Its result would be refused: stop the process.
		if ranOn != nil && *ranOn == s.cfg.WorkerName {
			if cancel, ok := s.exec.running.Load(id); ok {
				cancel.(context.CancelCauseFunc)(errReconciled)
			}
		}
		return nil
	}); err != nil {
		return fmt.Errorf("error reconciling executions: %w", err)
	}
	rows, err = s.pool.Query(ctx, "SELECT attune.gone_workers($1::interval)", s.cfg.WorkerStaleAfter.String())
	if err != nil {
		return fmt.Errorf("error finding gone workers: %w", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("error finding gone workers: %w", err)
	}
	for _, n := range names {
		if n == s.cfg.WorkerName {
			continue
		}
		s.log.Warn("executions still name a worker that is gone; settling them", "worker", n)
		if err := s.reap(ctx, n, s.cfg.WorkerStaleAfter); err != nil {
			return err
		}
	}
	return nil
}

// lostJobAge is how long a job River marked as fetched by this replica may
// stay unseen by its workers before it counts as lost.
const lostJobAge = time.Minute

// recoverLostJobs returns to the queue jobs that River marks as running on
// this replica but that no worker of its holds, for lostJobAge:
//   - jobs whose fetch never reached a worker (the connection dropped after
//     the fetch committed, before its reply): River's producer never sees
//     them. Their executions never started: the attempt is not counted.
//   - jobs whose attempt ran and was settled to run again, but whose retry
//     River's completer gave up writing (the database away for longer than
//     its retries): they would stay running. The attempt counts.
//
// Without this, River's rescuer would take them only after the longest
// timeout (days).
func (s *Server) recoverLostJobs(ctx context.Context) error {
	s.exec.forgetReturned()
	rows, err := s.pool.Query(ctx, "SELECT attune.lost_fetches($1, $2::interval)", riverID(s.cfg.WorkerName), lostJobAge.String())
	if err != nil {
		return fmt.Errorf("error finding lost jobs: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return fmt.Errorf("error finding lost jobs: %w", err)
	}
	var lost []int64
	for _, id := range ids {
		if !s.exec.holds(id) {
			lost = append(lost, id)
		}
	}
	if len(lost) == 0 {
		return nil
	}
	s.log.Warn("returning jobs this replica fetched but never received to the queue", "jobs", lost)
	if _, err := s.pool.Exec(ctx, "SELECT attune.requeue_lost_fetches($1)", lost); err != nil {
		return fmt.Errorf("error requeueing lost jobs: %w", err)
	}
	return nil
}

// reapStale marks workers silent for ATTUNE_WORKER_STALE_AFTER inactive and
// settles their running executions. Replicas may race here; row locks make
// each worker reaped once.
func (s *Server) reapStale(ctx context.Context) error {
	rows, err := s.pool.Query(ctx, `UPDATE attune.worker SET status = 'inactive'
		WHERE status = 'active' AND heartbeat_at < now() - $1::interval AND name <> $2
		RETURNING name`, s.cfg.WorkerStaleAfter.String(), s.cfg.WorkerName)
	if err != nil {
		return err
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return err
	}
	for _, n := range names {
		s.log.Warn("worker stopped heartbeating; settling its executions", "worker", n)
		if err := s.reap(ctx, n, s.cfg.WorkerStaleAfter); err != nil {
			return err
		}
	}
	return nil
}

// reap settles the running executions of a dead worker: abandoned, or back
// to requested when max_retries allows (on a new River job). Jobs it had
// fetched but not started (their executions still requested) go back to
// the queue untouched. A worker whose heartbeat is fresher than staleAfter
// is left alone; 0 means the caller is that worker.
func (s *Server) reap(ctx context.Context, worker string, staleAfter time.Duration) error {
	var stale *string
	if staleAfter > 0 {
		v := staleAfter.String()
		stale = &v
	}
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		// Kill what the dead worker's executions left on this host before
		// settling them: once settled, a retry may start with the same id.
		// A frozen worker (SIGSTOP) still has its children running under it.
		rows, err := tx.Query(ctx, `SELECT e.id, e.action_ref, w.pid FROM attune.execution e
			JOIN attune.worker w ON w.name = e.worker
			WHERE e.worker = $1 AND e.status IN ('running', 'canceling') AND w.hostname = $2
				AND ($3::interval IS NULL OR w.heartbeat_at < now() - $3::interval)
			FOR UPDATE OF e`, worker, s.hostname, stale)
		if err != nil {
			return fmt.Errorf("error locking the executions of worker %s: %w", worker, err)
		}
		execs := map[string]string{} // ATTUNE_EXEC_ID → ATTUNE_ACTION, as children see them
		var ids []int64
		var id int64
		var ref string
		var pid int
		if _, err := pgx.ForEachRow(rows, []any{&id, &ref, &pid}, func() error {
			execs[strconv.FormatInt(id, 10)] = ref
			ids = append(ids, id)
			return nil
		}); err != nil {
			return err
		}
		if pid != os.Getpid() {
			if n := killChildrenOf(pid, execs); n > 0 {
				s.log.Warn("killed the running processes of a worker declared dead (frozen or cut off)", "worker", worker, "pid", pid, "process_groups", n)
			}
		}
		if n := killOrphans(execs); n > 0 {
			s.log.Warn("killed processes left by a dead worker's executions", "worker", worker, "process_groups", n)
		}
		for _, id := range ids {
			dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), WorkDirPrefix(s.exec.database, worker, id)+"*"))
			for _, dir := range dirs {
				if err := process.RemoveWorkDir(dir); err != nil {
					s.log.Warn("could not remove a dead worker's work directory", "dir", dir, "err", err)
				}
			}
		}
		// schema/migrations/009_settle.sql: abandoned, cancelled or back to
		// requested on a new River job, and the old jobs with them.
		if _, err := tx.Exec(ctx, "SELECT attune.reap_worker($1, $2, $3::interval)", worker, riverID(worker), stale); err != nil {
			return fmt.Errorf("error settling the executions of worker %s: %w", worker, err)
		}
		return nil
	})
}

// notRiverIDChar is what riverID replaces.
var notRiverIDChar = regexp.MustCompile(`[^A-Za-z0-9_.-]`)

// riverID turns a worker name into an ID River accepts.
func riverID(name string) string {
	id := notRiverIDChar.ReplaceAllString(name, "_")
	if len(id) > 100 {
		id = id[:100]
	}
	return id
}

func envValue(environ []string, name string) string {
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok && k == name {
			return v
		}
	}
	return ""
}

// riverLogger quiets River's routine info logs (maintenance runs, starts and
// stops) unless attune logs at debug.
// While the database is unreachable (quiet set) River says nothing below
// debug: the heartbeat reports the outage once.
func riverLogger(log *slog.Logger, quiet *atomic.Bool) *slog.Logger {
	min := slog.LevelWarn
	if log.Enabled(context.Background(), slog.LevelDebug) {
		min = slog.LevelDebug
	}
	return slog.New(levelFilter{log.Handler(), min, quiet}).With("component", "river")
}

type levelFilter struct {
	slog.Handler
	min   slog.Level
	quiet *atomic.Bool
}

func (f levelFilter) Enabled(ctx context.Context, l slog.Level) bool {
	if f.quiet != nil && f.quiet.Load() && l > slog.LevelDebug {
		return false
	}
	return l >= f.min && f.Handler.Enabled(ctx, l)
}

func (f levelFilter) WithAttrs(as []slog.Attr) slog.Handler {
	return levelFilter{f.Handler.WithAttrs(as), f.min, f.quiet}
}

func (f levelFilter) WithGroup(name string) slog.Handler {
	return levelFilter{f.Handler.WithGroup(name), f.min, f.quiet}
}
