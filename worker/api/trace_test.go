package api_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/attune-system/attune/jobs"
)

var (
	spansOnce sync.Once
	spans     *tracetest.SpanRecorder
	provider  *sdktrace.TracerProvider
)

// recordSpans installs an in-memory span recorder as the global tracer
// provider, once for the test binary; tests pick their spans by trace id.
func recordSpans() (*tracetest.SpanRecorder, trace.Tracer) {
	spansOnce.Do(func() {
		spans = tracetest.NewSpanRecorder()
		provider = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
		otel.SetTracerProvider(provider)
		otel.SetTextMapPropagator(propagation.TraceContext{})
	})
	return spans, provider.Tracer("test")
}

// spanNames are the names of the ended spans of trace id.
func spanNames(rec *tracetest.SpanRecorder, id trace.TraceID) map[string]sdktrace.ReadOnlySpan {
	out := map[string]sdktrace.ReadOnlySpan{}
	for _, s := range rec.Ended() {
		if s.SpanContext().TraceID() == id {
			out[s.Name()] = s
		}
	}
	return out
}

// TestTraces follows one trace from an HTTP client through the enqueue,
// the replica's execution, process and completion, into the child's
// TRACEPARENT; and the same for an enqueue from Go.
func TestTraces(t *testing.T) {
	t.Parallel()
	rec, tr := recordSpans()
	b := setup(t)
	b.startWorker(t)

	t.Run("HTTP", func(t *testing.T) {
		ctx, root := tr.Start(b.ctx, "client")
		req, err := http.NewRequestWithContext(ctx, "POST", b.base+"/api/v1/executions", strings.NewReader(`{"action": "t.traceparent"}`))
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+testToken)
		req.Header.Set("Content-Type", "application/json")
		propagation.TraceContext{}.Inject(ctx, propagation.HeaderCarrier(req.Header))
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.Equal(t, 201, resp.StatusCode, "%s", body)
		root.End()
		var e jobs.Execution
		require.NoError(t, json.Unmarshal(body, &e))
		requireTraced(t, b, rec, root.SpanContext().TraceID(), e.ID, "POST /api/v1/executions")
	})

	t.Run("Go", func(t *testing.T) {
		ctx, root := tr.Start(b.ctx, "caller")
		var id int64
		require.NoError(t, pgx.BeginFunc(ctx, b.pool, func(tx pgx.Tx) error {
			var err error
			id, err = jobs.Enqueue(ctx, tx, "t.traceparent", nil, nil)
			return err
		}))
		root.End()
		requireTraced(t, b, rec, root.SpanContext().TraceID(), id)
	})

	t.Run("SQL", func(t *testing.T) {
		// attune.enqueue runs inside PostgreSQL, where no span is made:
		// the caller passes its traceparent in the options, and the
		// execution continues the caller's trace.
		_, root := tr.Start(b.ctx, "sql-caller")
		carrier := propagation.MapCarrier{}
		propagation.TraceContext{}.Inject(trace.ContextWithSpan(b.ctx, root), carrier)
		var id int64
		require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT attune.enqueue('t.traceparent', '{}', jsonb_build_object('traceparent', $1::text))",
			carrier.Get("traceparent")).Scan(&id))
		root.End()
		e := waitFinished(t, b.pool, id)
		require.Equal(t, jobs.StatusCompleted, e.Status, "error %v", e.Error)
		var res struct{ Traceparent string }
		require.NoError(t, json.Unmarshal(e.Result, &res))
		traceID := root.SpanContext().TraceID()
		require.True(t, strings.HasPrefix(res.Traceparent, "00-"+traceID.String()+"-"), "child TRACEPARENT %q is in trace %s", res.Traceparent, traceID)
		var got map[string]sdktrace.ReadOnlySpan
		require.Eventually(t, func() bool {
			got = spanNames(rec, traceID)
			_, ok := got["attune.execution"]
			return ok
		}, 10*time.Second, 20*time.Millisecond)
		require.Equal(t, root.SpanContext().SpanID(), got["attune.execution"].Parent().SpanID(), "the execution's parent is the caller's span")

		for _, bad := range []string{"not-a-traceparent", "00-00000000000000000000000000000000-00f067aa0ba902b7-01"} {
			_, err := b.pool.Exec(b.ctx, "SELECT attune.enqueue('t.traceparent', '{}', jsonb_build_object('traceparent', $1::text))", bad)
			require.ErrorContains(t, err, "option traceparent must be a W3C traceparent", bad)
		}
		_, err := b.pool.Exec(b.ctx, `SELECT attune.enqueue('t.traceparent', '{}', '{"tracestate": "k=v"}')`)
		require.ErrorContains(t, err, "option tracestate needs a traceparent beside it")
	})
	t.Run("NoTraceNoVariable", func(t *testing.T) {
		r := b.call(t, "POST", "/api/v1/executions", map[string]any{"action": "t.traceparent"})
		require.Equal(t, 201, r.status)
		e := waitFinished(t, b.pool, int64(r.json["id"].(float64)))
		// The API's own span is the root: the child still gets a fresh
		// trace, never a malformed variable.
		var res struct{ Traceparent string }
		require.NoError(t, json.Unmarshal(e.Result, &res))
		require.Regexp(t, `^(00-[0-9a-f]{32}-[0-9a-f]{16}-0[01])?$`, res.Traceparent)
	})
}

func requireTraced(t *testing.T, b *testBundle, rec *tracetest.SpanRecorder, id trace.TraceID, exec int64, extra ...string) {
	t.Helper()
	e := waitFinished(t, b.pool, exec)
	require.Equal(t, jobs.StatusCompleted, e.Status, "error %v", e.Error)
	var res struct{ Traceparent string }
	require.NoError(t, json.Unmarshal(e.Result, &res))
	require.True(t, strings.HasPrefix(res.Traceparent, "00-"+id.String()+"-"), "child TRACEPARENT %q is in trace %s", res.Traceparent, id)

	want := append([]string{"attune.enqueue", "attune.execution", "attune.process", "attune.complete"}, extra...)
	var got map[string]sdktrace.ReadOnlySpan
	require.Eventually(t, func() bool {
		got = spanNames(rec, id)
		for _, n := range want {
			if _, ok := got[n]; !ok {
				return false
			}
		}
		return true
	}, 10*time.Second, 20*time.Millisecond, "spans of trace %s: %v", id, keys(got))
	// Parents: enqueue → execution → process and complete; the child's
	// TRACEPARENT names the process span.
	require.Equal(t, got["attune.enqueue"].SpanContext().SpanID(), got["attune.execution"].Parent().SpanID())
	require.Equal(t, got["attune.execution"].SpanContext().SpanID(), got["attune.process"].Parent().SpanID())
	require.Equal(t, got["attune.execution"].SpanContext().SpanID(), got["attune.complete"].Parent().SpanID())
	require.Contains(t, res.Traceparent, got["attune.process"].SpanContext().SpanID().String())
	found := false
	for _, a := range got["attune.process"].Attributes() {
		if a.Key == "attune.execution.id" {
			found = a.Value.AsInt64() == exec
		}
	}
	require.True(t, found)
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
