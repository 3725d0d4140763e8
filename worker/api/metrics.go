package api

import (
	"context"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/attune-system/attune/jobs"
)

// maxActionLabels bounds the action label: past this many distinct actions
// (a pack generator gone wild), executions count under "other".
const maxActionLabels = 500

// Metrics are one replica's Prometheus metrics. Labels are bounded: action
// and trigger refs (registered, capped), statuses, runtime queues, sensor
// refs, webhook outcomes; never ids or parameter values.
type Metrics struct {
	reg    *prometheus.Registry
	pool   *pgxpool.Pool
	log    *slog.Logger
	worker string

	finished    *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	pickup      prometheus.Histogram
	truncations *prometheus.CounterVec
	events      *prometheus.CounterVec
	firings     *prometheus.CounterVec
	skips       *prometheus.CounterVec
	webhooks    *prometheus.CounterVec
	dropped     prometheus.Counter
	river       *riverMetrics

	mu      sync.Mutex
	actions map[string]bool

	settled chan settled
}

type settled struct {
	id     int64
	status string
}

// NewMetrics registers the metrics of replica worker.
func NewMetrics(pool *pgxpool.Pool, log *slog.Logger, worker string) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(), pool: pool, log: log, worker: worker,
		actions: map[string]bool{}, settled: make(chan settled, 4096),
		finished: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "attune_executions_finished_total",
			Help: "Executions this replica finished, by action and final status."}, []string{"action", "status"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "attune_execution_duration_seconds",
			Help:    "Run time of finished executions (started to finished), by action.",
			Buckets: []float64{.01, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600}}, []string{"action"}),
		pickup: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "attune_execution_pickup_latency_seconds",
			Help:    "Time from enqueue (or scheduled_at) to process start of executions this replica ran.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}}),
		truncations: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "attune_output_truncations_total",
			Help: "Finished executions whose stored output was truncated, by stream."}, []string{"stream"}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "attune_events_total",
			Help: "Events this replica stored (from its sensors and webhooks), by trigger."}, []string{"trigger"}),
		firings: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "attune_rule_firings_total",
			Help: "Executions rules enqueued for this replica's events, by trigger."}, []string{"trigger"}),
		skips: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "attune_rule_skips_total",
			Help: "Rules that matched an event's trigger but could not fire (bad template, rejected parameters), by trigger."}, []string{"trigger"}),
		webhooks: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "attune_webhook_requests_total",
			Help: "Requests to /webhooks/, by outcome: accepted, unknown_path, bad_signature, too_large, bad_request, error."}, []string{"outcome"}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{Name: "attune_metrics_dropped_total",
			Help: "Finished executions not counted because the metrics queue was full."}),
	}
	m.river = newRiverMetrics(m.reg)
	for _, o := range []string{webhookAccepted, webhookUnknownPath, webhookBadSignature, webhookTooLarge, webhookBadRequest, webhookError} {
		m.webhooks.WithLabelValues(o)
	}
	m.reg.MustRegister(m.finished, m.duration, m.pickup, m.truncations, m.events, m.firings, m.skips, m.webhooks, m.dropped,
		&stateCollector{m: m}, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Finished observes an execution's final status once committed
// (worker.Server.OnFinish). It never blocks the completer: the row is read
// for the rest (action, times) on Run's goroutine.
func (m *Metrics) Finished(id int64, status string) {
	select {
	case m.settled <- settled{id, status}:
	default:
		m.dropped.Inc()
	}
}

// Event observes an event stored and the rules it fired or skipped
// (worker.Server.OnEvent, and webhooks).
func (m *Metrics) Event(trigger string, fired, skipped int) {
	m.events.WithLabelValues(trigger).Inc()
	m.firings.WithLabelValues(trigger).Add(float64(fired))
	m.skips.WithLabelValues(trigger).Add(float64(skipped))
}

func (m *Metrics) event(trigger string, fired, skipped int) {
	if m != nil {
		m.Event(trigger, fired, skipped)
	}
}

func (m *Metrics) webhook(outcome string) {
	if m != nil {
		m.webhooks.WithLabelValues(outcome).Inc()
	}
}

// Run reads finished executions' rows in batches until ctx ends.
func (m *Metrics) Run(ctx context.Context) {
	for {
		var batch []settled
		select {
		case <-ctx.Done():
			return
		case s := <-m.settled:
			batch = append(batch, s)
		}
	more:
		for len(batch) < 500 {
			select {
			case s := <-m.settled:
				batch = append(batch, s)
			default:
				break more
			}
		}
		if err := m.record(ctx, batch); err != nil && ctx.Err() == nil {
			m.log.Warn("metrics: reading finished executions failed", "count", len(batch), "err", err)
		}
	}
}

func (m *Metrics) record(ctx context.Context, batch []settled) error {
	ids := make([]int64, len(batch))
	status := make(map[int64]string, len(batch))
	for i, s := range batch {
		ids[i], status[s.id] = s.id, s.status
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	// The row's status is the one that counts: the database decides it
	// (a cancel that raced the process's end, a retry).
	rows, err := m.pool.Query(ctx, `SELECT id, action_ref, status, stdout_truncated, stderr_truncated,
			extract(epoch FROM finished_at - started_at)::float8,
			extract(epoch FROM started_at - greatest(created_at, coalesce(scheduled_at, created_at)))::float8
		FROM attune.execution WHERE id = ANY($1)`, ids)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var (
			id                 int64
			action, st         string
			outTrunc, errTrunc bool
			dur, pickup        *float64
		)
		if err := rows.Scan(&id, &action, &st, &outTrunc, &errTrunc, &dur, &pickup); err != nil {
			return err
		}
		if !jobs.Finished(st) {
			st = status[id] // not final in the row: trust the hook
		}
		action = m.actionLabel(action)
		m.finished.WithLabelValues(action, st).Inc()
		if dur != nil && *dur >= 0 {
			m.duration.WithLabelValues(action).Observe(*dur)
		}
		if pickup != nil && *pickup >= 0 {
			m.pickup.Observe(*pickup)
		}
		if outTrunc {
			m.truncations.WithLabelValues("stdout").Inc()
		}
		if errTrunc {
			m.truncations.WithLabelValues("stderr").Inc()
		}
	}
	return rows.Err()
}

func (m *Metrics) actionLabel(ref string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.actions[ref] {
		if len(m.actions) >= maxActionLabels {
			return "other"
		}
		m.actions[ref] = true
	}
	return ref
}

// stateCollector reads what the database knows at scrape time: this
// replica's running executions, heartbeat age and sensors, and the queues.
type stateCollector struct{ m *Metrics }

var (
	runningDesc = prometheus.NewDesc("attune_executions_running",
		"Executions running (or canceling) on this replica.", nil, nil)
	queuedDesc = prometheus.NewDesc("attune_executions_queued",
		"Executions not yet started (requested or scheduled) in each runtime queue, across replicas.", []string{"queue"}, nil)
	heartbeatDesc = prometheus.NewDesc("attune_worker_heartbeat_age_seconds",
		"Seconds since this replica's last heartbeat in attune.worker.", nil, nil)
	sensorUpDesc = prometheus.NewDesc("attune_sensor_up",
		"1 when the sensor runs on this replica, 0 when this replica holds it but it is not running.", []string{"sensor"}, nil)
	sensorRestartsDesc = prometheus.NewDesc("attune_sensor_restarts",
		"Restarts of the sensor's process since this replica took it.", []string{"sensor"}, nil)
	scrapeErrorDesc = prometheus.NewDesc("attune_metrics_scrape_error",
		"1 when the database could not be read for this scrape's gauges.", nil, nil)
)

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{runningDesc, queuedDesc, heartbeatDesc, sensorUpDesc, sensorRestartsDesc, scrapeErrorDesc} {
		ch <- d
	}
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := c.collect(ctx, ch); err != nil {
		c.m.log.Warn("metrics: reading state failed", "err", err)
		ch <- prometheus.MustNewConstMetric(scrapeErrorDesc, prometheus.GaugeValue, 1)
		return
	}
	ch <- prometheus.MustNewConstMetric(scrapeErrorDesc, prometheus.GaugeValue, 0)
}

func (c *stateCollector) collect(ctx context.Context, ch chan<- prometheus.Metric) error {
	m := c.m
	var running int
	var age *float64
	if err := m.pool.QueryRow(ctx, `SELECT
			(SELECT count(*) FROM attune.execution WHERE worker = $1 AND status IN ('running', 'canceling'))::int,
			(SELECT extract(epoch FROM now() - heartbeat_at)::float8 FROM attune.worker WHERE name = $1)`, m.worker).
		Scan(&running, &age); err != nil {
		return err
	}
	ch <- prometheus.MustNewConstMetric(runningDesc, prometheus.GaugeValue, float64(running))
	if age != nil {
		ch <- prometheus.MustNewConstMetric(heartbeatDesc, prometheus.GaugeValue, *age)
	}
	queues, err := jobs.QueueDepths(ctx, m.pool)
	if err != nil {
		return err
	}
	for _, q := range queues {
		ch <- prometheus.MustNewConstMetric(queuedDesc, prometheus.GaugeValue, float64(q.Due+q.Scheduled), q.Queue)
	}
	rows, err := m.pool.Query(ctx, `SELECT sensor_ref, (status = 'running')::int::float8, restarts::float8
		FROM attune.sensor_state WHERE worker = $1`, m.worker)
	if err != nil {
		return err
	}
	defer rows.Close()
	var sensor string
	var up, restarts float64
	for rows.Next() {
		if err := rows.Scan(&sensor, &up, &restarts); err != nil {
			return err
		}
		ch <- prometheus.MustNewConstMetric(sensorUpDesc, prometheus.GaugeValue, up, sensor)
		ch <- prometheus.MustNewConstMetric(sensorRestartsDesc, prometheus.GaugeValue, restarts, sensor)
	}
	return rows.Err()
}

func (s *Server) serveMetrics(w http.ResponseWriter, r *http.Request) {
	if s.metrics == nil {
		writeError(w, http.StatusNotFound, "metrics are not collected by this server", "")
		return
	}
	promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn)}).ServeHTTP(w, r)
}
