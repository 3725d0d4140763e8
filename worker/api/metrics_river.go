package api

import (
	"context"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/riverqueue/river"
)

// riverMetrics are River's own view of this replica's jobs, from its event
// subscription: what River did, beside attune's view of the executions.
type riverMetrics struct {
	jobs      *prometheus.CounterVec
	queueWait *prometheus.HistogramVec
	run       *prometheus.HistogramVec
}

var riverEventKinds = []river.EventKind{river.EventKindJobCompleted, river.EventKindJobFailed,
	river.EventKindJobCancelled, river.EventKindJobSnoozed}

func newRiverMetrics(reg *prometheus.Registry) *riverMetrics {
	buckets := []float64{.001, .005, .01, .05, .1, .5, 1, 5, 10, 60, 300, 3600}
	m := &riverMetrics{
		jobs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "attune_river_jobs_total",
			Help: "River jobs this replica's client finished working, by queue and River event (job_completed, job_failed, job_cancelled, job_snoozed)."},
			[]string{"queue", "event"}),
		queueWait: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "attune_river_job_queue_wait_seconds",
			Help: "Time River jobs waited available before this replica started them, by queue.", Buckets: buckets}, []string{"queue"}),
		run: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "attune_river_job_run_seconds",
			Help: "Time River's worker ran jobs on this replica, by queue.", Buckets: buckets}, []string{"queue"}),
	}
	reg.MustRegister(m.jobs, m.queueWait, m.run)
	return m
}

// WatchRiver counts River's job events of client until ctx ends or the
// client stops. Subscribe before the client starts so no event is missed.
func (m *Metrics) WatchRiver(client *river.Client[pgx.Tx]) (run func(ctx context.Context)) {
	events, cancel := client.Subscribe(riverEventKinds...)
	return func(ctx context.Context) {
		defer cancel()
		for {
			select {
			case <-ctx.Done():
				return
			case ev, ok := <-events:
				if !ok {
					return
				}
				if ev.Job == nil {
					continue
				}
				m.river.jobs.WithLabelValues(ev.Job.Queue, string(ev.Kind)).Inc()
				if ev.JobStats != nil {
					m.river.queueWait.WithLabelValues(ev.Job.Queue).Observe(ev.JobStats.QueueWaitDuration.Seconds())
					m.river.run.WithLabelValues(ev.Job.Queue).Observe(ev.JobStats.RunDuration.Seconds())
				}
			}
		}
	}
}
