package jobs

import (
	"context"
	"encoding/json"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// TracerName names attune's OpenTelemetry tracer.
const TracerName = "github.com/attune-system/attune"

// MetadataTraceKey holds the W3C trace context of the enqueue in a River
// job's metadata, so whichever replica works the job continues the trace.
const MetadataTraceKey = "attune_trace"

// traceInsert records the enqueue as a span and stores its trace context
// in each job's metadata. With no tracer provider or propagator installed
// (the default, and attune's without OTEL_EXPORTER_OTLP_ENDPOINT) it only
// costs a no-op span: the propagator writes nothing.
type traceInsert struct{ river.MiddlewareDefaults }

func (*traceInsert) InsertMany(ctx context.Context, params []*rivertype.JobInsertParams, doInner func(context.Context) ([]*rivertype.JobInsertResult, error)) ([]*rivertype.JobInsertResult, error) {
	ctx, span := otel.Tracer(TracerName).Start(ctx, "attune.enqueue", trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(attribute.Int("attune.executions", len(params))))
	defer span.End()
	carrier := propagation.MapCarrier{}
	otel.GetTextMapPropagator().Inject(ctx, carrier)
	if len(carrier) > 0 {
		for _, p := range params {
			meta := map[string]any{}
			if len(p.Metadata) > 0 {
				_ = json.Unmarshal(p.Metadata, &meta)
			}
			meta[MetadataTraceKey] = map[string]string(carrier)
			if b, err := json.Marshal(meta); err == nil {
				p.Metadata = b
			}
		}
	}
	res, err := doInner(ctx)
	if err != nil {
		span.RecordError(err)
	}
	return res, err
}
