package api

import (
	"context"
	"net/http"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/attune-system/attune/jobs"
)

// startSpan starts a server span for a routed request, continuing the
// caller's trace (its traceparent header), so an enqueue over HTTP joins
// the caller's trace. With no tracer provider installed it is a no-op.
func startSpan(r *http.Request, pattern string) (context.Context, func()) {
	switch pattern {
	case "GET /healthz", "GET /readyz", "GET /metrics":
		return r.Context(), func() {} // probes and scrapes would drown the traces
	}
	ctx := otel.GetTextMapPropagator().Extract(r.Context(), propagation.HeaderCarrier(r.Header))
	ctx, span := otel.Tracer(jobs.TracerName).Start(ctx, pattern, trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(attribute.String("http.request.method", r.Method), attribute.String("http.route", pattern)))
	return ctx, func() { span.End() }
}
