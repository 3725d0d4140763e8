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
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

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

	hostname string

	stopHeartbeat context.CancelFunc
	heartbeatDone chan struct{}
	stopCompleter context.CancelFunc
	completerDone chan struct{}
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
	exec := &executor{
		cfg: cfg, pool: pool, runtimes: runtimes, key: key, log: log,
		slots:     make(chan struct{}, cfg.MaxConcurrentExecutions),
		completer: newCompleter(cfg.WorkerName, pool, log),
		stopping:  make(chan struct{}),
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
	client, err := river.NewClient(riverpgxv5.New(pool), &river.Config{
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
		Logger:               riverLogger(log),
	})
	if err != nil {
		return nil, fmt.Errorf("error creating River client: %w", err)
	}
	host, _ := os.Hostname()
	return &Server{cfg: cfg, pool: pool, log: log, client: client, exec: exec, hostname: host,
		sensors: newSensorSupervisor(cfg, pool, log, runtimes), pruner: &pruner{pool: pool, retention: cfg.Retention, log: log}}, nil
}

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
	caps, _ := json.Marshal(map[string]any{
		"runtimes":                  s.exec.runtimes.Names(),
		"max_concurrent_executions": s.cfg.MaxConcurrentExecutions,
	})
	if err := s.pool.QueryRow(ctx, "SELECT current_database()").Scan(&s.exec.database); err != nil {
		return fmt.Errorf("error reading the database name: %w", err)
	}
	_, err := s.pool.Exec(ctx, `INSERT INTO attune.worker (name, hostname, pid, capabilities, status, started_at, heartbeat_at)
		VALUES ($1, $2, $3, $4, 'active', now(), now())
		ON CONFLICT (name) DO UPDATE SET hostname = EXCLUDED.hostname, pid = EXCLUDED.pid,
			capabilities = EXCLUDED.capabilities, status = 'active', started_at = now(), heartbeat_at = now()`,
		s.cfg.WorkerName, s.hostname, os.Getpid(), caps)
	if err != nil {
		return fmt.Errorf("error registering worker %s: %w", s.cfg.WorkerName, err)
	}
	// Executions this name left running in an earlier life are not running.
	if err := s.reap(ctx, s.cfg.WorkerName); err != nil {
		return err
	}
	cctx, cancelCompleter := context.WithCancel(context.WithoutCancel(ctx))
	s.stopCompleter = cancelCompleter
	s.completerDone = make(chan struct{})
	go func() {
		defer close(s.completerDone)
		s.exec.completer.run(cctx)
	}()
	// River hard-stops (cancels running work) when its Start context ends;
	// ctx ends at the first SIGTERM, and Stop decides when to cancel.
	if err := s.client.Start(context.WithoutCancel(ctx)); err != nil {
		cancelCompleter()
		<-s.completerDone
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
	// Every Work call has returned, so no result is waiting to be written.
	if s.stopCompleter != nil {
		s.stopCompleter()
		<-s.completerDone
	}
	if s.stopHeartbeat != nil {
		s.stopHeartbeat()
		<-s.heartbeatDone
	}
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	// Whatever is still marked running here lost its result (the database
	// stayed away past the retries): settle it like a dead worker's.
	if rerr := s.reap(wctx, s.cfg.WorkerName); rerr != nil {
		err = errors.Join(err, fmt.Errorf("error settling unfinished executions: %w", rerr))
	}
	if _, uerr := s.pool.Exec(wctx, "UPDATE attune.worker SET status = 'inactive', heartbeat_at = now() WHERE name = $1", s.cfg.WorkerName); uerr != nil {
		err = errors.Join(err, fmt.Errorf("error marking worker inactive: %w", uerr))
	}
	return err
}

// heartbeat reports this worker alive and reaps workers that stopped
// reporting.
func (s *Server) heartbeat(ctx context.Context) {
	defer close(s.heartbeatDone)
	t := time.NewTicker(s.cfg.HeartbeatInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		_, err := s.pool.Exec(ctx, "UPDATE attune.worker SET heartbeat_at = now(), status = 'active' WHERE name = $1", s.cfg.WorkerName)
		if err != nil && ctx.Err() == nil {
			s.log.Warn("heartbeat failed", "err", err)
			continue
		}
		if err := s.reapStale(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("reaping dead workers failed", "err", err)
		}
		if err := s.recoverLostJobs(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("recovering lost jobs failed", "err", err)
		}
	}
}

// lostJobAge is how long a job River marked as fetched by this replica may
// stay unseen by its workers before it counts as lost.
const lostJobAge = time.Minute

// recoverLostJobs returns to the queue jobs that River's fetch marked as
// running on this replica but that never reached a worker: when the
// connection drops after the fetch commits and before its reply arrives,
// River's producer never sees them, and River's rescuer would wait past the
// longest timeout (days). Their executions never started, so the attempt
// is not counted.
func (s *Server) recoverLostJobs(ctx context.Context) error {
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
		if _, held := s.exec.inflight.Load(id); !held {
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
		if err := s.reap(ctx, n); err != nil {
			return err
		}
	}
	return nil
}

// reap settles the running executions of a dead worker: abandoned, or back
// to requested when max_retries allows (its River job made available again).
// Jobs it had fetched but not started (their executions still requested)
// go back to the queue untouched.
func (s *Server) reap(ctx context.Context, worker string) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		// Kill what the dead worker's executions left on this host before
		// settling them: once settled, a retry may start with the same id.
		rows, err := tx.Query(ctx, `SELECT e.id, e.action_ref FROM attune.execution e
			JOIN attune.worker w ON w.name = e.worker
			WHERE e.worker = $1 AND e.status IN ('running', 'canceling') AND w.hostname = $2
			FOR UPDATE OF e`, worker, s.hostname)
		if err != nil {
			return fmt.Errorf("error locking the executions of worker %s: %w", worker, err)
		}
		execs := map[string]string{} // ATTUNE_EXEC_ID → ATTUNE_ACTION, as children see them
		var ids []int64
		var id int64
		var ref string
		if _, err := pgx.ForEachRow(rows, []any{&id, &ref}, func() error {
			execs[strconv.FormatInt(id, 10)] = ref
			ids = append(ids, id)
			return nil
		}); err != nil {
			return err
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
		// schema/migrations/005_state_machine.sql: abandoned, cancelled or
		// back to requested, and the River jobs with them.
		if _, err := tx.Exec(ctx, "SELECT attune.reap_worker($1, $2)", worker, riverID(worker)); err != nil {
			return fmt.Errorf("error settling the executions of worker %s: %w", worker, err)
		}
		return nil
	})
}

// riverID turns a worker name into an ID River accepts.
func riverID(name string) string {
	id := regexp.MustCompile(`[^A-Za-z0-9_.-]`).ReplaceAllString(name, "_")
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
func riverLogger(log *slog.Logger) *slog.Logger {
	if log.Enabled(context.Background(), slog.LevelDebug) {
		return log.With("component", "river")
	}
	return slog.New(levelFilter{log.Handler(), slog.LevelWarn}).With("component", "river")
}

type levelFilter struct {
	slog.Handler
	min slog.Level
}

func (f levelFilter) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= f.min && f.Handler.Enabled(ctx, l)
}

func (f levelFilter) WithAttrs(as []slog.Attr) slog.Handler {
	return levelFilter{f.Handler.WithAttrs(as), f.min}
}

func (f levelFilter) WithGroup(name string) slog.Handler {
	return levelFilter{f.Handler.WithGroup(name), f.min}
}
