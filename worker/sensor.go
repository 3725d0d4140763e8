package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/attune-system/attune/packs"
	"github.com/attune-system/attune/schema"
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
	failing := false // the last session failed at once: this is one outage
	for {
		began := time.Now()
		err := s.session(ctx)
		if ctx.Err() != nil {
			return
		}
		if time.Since(began) > time.Minute {
			delay = time.Second
		}
		if time.Since(began) > 5*time.Second {
			failing = false
		}
		// Once per outage: the heartbeat says when the database returns.
		level := slog.LevelWarn
		if failing {
			level = slog.LevelDebug
		}
		failing = true
		s.log.Log(ctx, level, "sensor lock connection failed; this replica runs no sensors until it reconnects",
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
	if _, err := conn.Exec(ctx, fmt.Sprintf("SET idle_session_timeout = %d", idle.Milliseconds())); err != nil && schema.Transient(err) {
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

// secretsKey is the decoded ATTUNE_SECRETS_KEY (nil without one), which
// seals the secret parameters of the executions events fire.
func (s *sensorSupervisor) secretsKey() []byte {
	if s.cfg.SecretsKey == "" {
		return nil
	}
	key, _ := DecodeSecretsKey(s.cfg.SecretsKey) // validated with the configuration
	return key
}
