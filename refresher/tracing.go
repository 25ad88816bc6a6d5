package refresher

import (
	"context"
	"net/http"

	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/tokengate/tokengate/internal/tracing"
)

// instrumentationName names this package's tracer.
const instrumentationName = "github.com/tokengate/tokengate/refresher"

// Span attributes (docs/operations.md, Tracing). None holds a token, a
// claim, a subject or a session id: the route, the status, the rotation
// outcome and the error reason only.
const (
	attrMethod   = "http.request.method"
	attrRoute    = "http.route"
	attrStatus   = "http.response.status_code"
	attrOutcome  = "tokengate.rotation.outcome"
	attrReason   = "tokengate.reason"
	attrStoreOp  = "tokengate.store.operation"
	spanStorePfx = "store."
)

// traced records a server span per request, continuing the trace of its
// traceparent. The span is named after the route pattern ("POST
// /v1/token"), never the path: a path may hold a session id or subject.
func (s *Server) traced(next *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/healthz", "/readyz", "/metrics": // probes and scrapes: noise, not requests
			next.ServeHTTP(w, r)
			return
		}
		ctx := tracing.ExtractHTTP(r.Context(), propagation.HeaderCarrier(r.Header))
		ctx, span := s.tracer.Start(ctx, r.Method, trace.WithSpanKind(trace.SpanKindServer),
			trace.WithAttributes(attribute.String(attrMethod, r.Method)))
		defer span.End()
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		r = r.WithContext(ctx)
		next.ServeHTTP(rec, r)
		if r.Pattern != "" {
			span.SetName(r.Pattern)
			span.SetAttributes(attribute.String(attrRoute, r.Pattern))
		}
		span.SetAttributes(attribute.Int(attrStatus, rec.status))
		if rec.status >= 500 {
			span.SetStatus(otelcodes.Error, http.StatusText(rec.status))
		}
	})
}

// statusRecorder keeps the status a handler wrote; Unwrap lets
// http.ResponseController reach the connection's own writer.
type statusRecorder struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (w *statusRecorder) WriteHeader(code int) {
	if !w.wrote {
		w.status, w.wrote = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusRecorder) Write(p []byte) (int, error) {
	w.wrote = true
	return w.ResponseWriter.Write(p)
}

func (w *statusRecorder) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// traceAttr sets an attribute on the request's span, when tracing is on.
func traceAttr(ctx context.Context, on bool, key, value string) {
	if on {
		trace.SpanFromContext(ctx).SetAttributes(attribute.String(key, value))
	}
}

func (i *Issuer) startStoreSpan(ctx context.Context, op string) (context.Context, trace.Span) {
	return i.tracer.Start(ctx, spanStorePfx+op, trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(attribute.String(attrStoreOp, op)))
}

// endStoreSpan marks a failed store call (not found is an answer, not a
// failure) without its text, which may name a key.
func endStoreSpan(span trace.Span, err error) {
	if err != nil {
		span.SetStatus(otelcodes.Error, "store error")
	}
	span.End()
}
