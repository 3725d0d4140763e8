package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/attune-system/attune/jobs"
)

// Traces (OpenTelemetry): the enqueue writes its trace context into the
// River job's metadata (jobs), the replica that works the job continues the
// trace with spans for the execution, its process and its completion, and
// the child gets TRACEPARENT. Without a tracer provider (SetupTracing with
// no OTEL_EXPORTER_OTLP_ENDPOINT) every span is a no-op.

func tracer() trace.Tracer { return otel.Tracer(jobs.TracerName) }

// SetupTracing installs an OTLP/HTTP trace exporter when environ sets
// OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT; the
// exporter reads the OTel SDK's own variables (headers, protocol, timeout,
// OTEL_SERVICE_NAME). Otherwise nothing is installed and shutdown is a
// no-op.
func SetupTracing(ctx context.Context, environ []string, workerName string, log *slog.Logger) (shutdown func(context.Context) error, err error) {
	endpoint := envValue(environ, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
	if base := strings.TrimSuffix(envValue(environ, "OTEL_EXPORTER_OTLP_ENDPOINT"), "/"); endpoint == "" && base != "" {
		endpoint = base + "/v1/traces" // the SDK's rule for the shared endpoint
	}
	if endpoint == "" {
		return func(context.Context) error { return nil }, nil
	}
	exp, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(endpoint))
	if err != nil {
		return nil, fmt.Errorf("error creating the OTLP trace exporter (OTEL_EXPORTER_OTLP_ENDPOINT): %w", err)
	}
	res, err := resource.New(ctx,
		resource.WithAttributes(attribute.String("service.name", "attune"), attribute.String("service.instance.id", workerName)),
		resource.WithFromEnv(), resource.WithTelemetrySDK())
	if err != nil && !errors.Is(err, resource.ErrPartialResource) {
		return nil, fmt.Errorf("error reading OTEL_RESOURCE_ATTRIBUTES: %w", err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) { log.Warn("OpenTelemetry", "err", err) }))
	log.Info("exporting traces over OTLP")
	return tp.Shutdown, nil
}

// traceWork continues the enqueue's trace on the replica working the job.
type traceWork struct{ river.MiddlewareDefaults }

func (*traceWork) Work(ctx context.Context, job *rivertype.JobRow, doInner func(context.Context) error) error {
	if job.Kind != jobs.Kind {
		return doInner(ctx)
	}
	if bytes.Contains(job.Metadata, []byte(jobs.MetadataTraceKey)) {
		var meta map[string]json.RawMessage
		var carrier propagation.MapCarrier
		if json.Unmarshal(job.Metadata, &meta) == nil && json.Unmarshal(meta[jobs.MetadataTraceKey], &carrier) == nil {
			// W3C trace context whatever the global propagator: a Go
			// caller's trace reaches the child even when this replica
			// exports nothing.
			ctx = propagation.TraceContext{}.Extract(ctx, carrier)
		}
	}
	var args jobs.ExecutionArgs
	_ = json.Unmarshal(job.EncodedArgs, &args)
	ctx, span := tracer().Start(ctx, "attune.execution", trace.WithSpanKind(trace.SpanKindConsumer), trace.WithAttributes(
		attribute.Int64("attune.execution.id", args.ExecutionID),
		attribute.Int64("river.job.id", job.ID),
		attribute.String("river.queue", job.Queue),
		attribute.Int("river.attempt", job.Attempt),
		attribute.Float64("attune.pickup_latency_seconds", time.Since(job.ScheduledAt).Seconds()),
	))
	defer span.End()
	err := doInner(ctx)
	var snooze *river.JobSnoozeError
	switch {
	case errors.As(err, &snooze):
		span.SetAttributes(attribute.String("river.result", "snoozed"))
	case err != nil:
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	return err
}

// runTraced is run inside a span for the process.
func (w *executor) runTraced(ctx context.Context, c *claimed) outcome {
	ctx, span := tracer().Start(ctx, "attune.process", trace.WithAttributes(
		attribute.Int64("attune.execution.id", c.ID), attribute.String("attune.action", c.ActionRef),
		attribute.Int("attune.attempt", c.Attempt), attribute.String("attune.runner_type", c.RunnerType)))
	defer span.End()
	out := w.run(ctx, c)
	span.SetAttributes(attribute.String("attune.status", out.Status))
	if out.ExitCode != nil {
		span.SetAttributes(attribute.Int("process.exit.code", *out.ExitCode))
	}
	if out.Status != jobs.StatusCompleted {
		span.SetStatus(codes.Error, out.Error)
	}
	return out
}

// settleTraced is settle inside a span for the completion write.
func (w *executor) settleTraced(ctx context.Context, job *river.Job[jobs.ExecutionArgs], c *claimed, out outcome) error {
	ctx, span := tracer().Start(ctx, "attune.complete", trace.WithAttributes(
		attribute.Int64("attune.execution.id", c.ID), attribute.String("attune.status", out.Status)))
	defer span.End()
	err := w.settle(ctx, job, c, out)
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	return err
}

// traceEnv is TRACEPARENT (and TRACESTATE) for a child, W3C trace context
// of ctx's span; none when ctx carries no trace.
func traceEnv(ctx context.Context) []string {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return nil
	}
	carrier := propagation.MapCarrier{}
	propagation.TraceContext{}.Inject(ctx, carrier)
	env := []string{"TRACEPARENT=" + carrier.Get("traceparent")}
	if ts := carrier.Get("tracestate"); ts != "" {
		env = append(env, "TRACESTATE="+ts)
	}
	return env
}
