package extauthz

import (
	"context"
	"net/http"

	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/tokengate/tokengate/internal/tracing"
)

// Span names and attributes (docs/operations.md, Tracing). No attribute
// ever holds a token, a claim value or a header value: only the decision,
// the reason, the app's name and whether the cache answered.
const (
	spanCheck           = "extauthz.Check"
	spanVerify          = "extauthz.VerifySignature"
	spanFetchJWKS       = "extauthz.FetchJWKS"
	spanFetchDiscovery  = "extauthz.FetchDiscovery"
	spanPollRevocations = "extauthz.PollRevocations"

	attrDecision = "tokengate.decision"
	attrReason   = "tokengate.reason"
	attrApp      = "tokengate.app"
	attrCache    = "tokengate.cache" // hit or miss; absent when no token was verified
	attrProvider = "tokengate.provider"
	attrEntries  = "tokengate.revocations.entries"
	attrStatus   = "http.response.status_code"
)

// instrumentationName names this package's tracer.
const instrumentationName = "github.com/tokengate/tokengate/extauthz"

// cacheUse says whether a check's token was answered from the cache.
type cacheUse uint8

const (
	cacheNotUsed cacheUse = iota
	cacheHit
	cacheMiss
)

// startCheckSpan continues the trace of the request's traceparent (and
// tracestate): the CheckRequest's headers, or the forward-auth request's.
// Called only when tracing is on: the headers are not touched otherwise.
func (s *Server) startCheckSpan(ctx context.Context, headers propagation.TextMapCarrier) (context.Context, trace.Span) {
	ctx = tracing.Propagator.Extract(ctx, headers)
	return s.tracer.Start(ctx, spanCheck, trace.WithSpanKind(trace.SpanKindServer))
}

// endCheckSpan records the decision on the check's span and ends it.
func endCheckSpan(span trace.Span, in *request, o *outcome) {
	attrs := make([]attribute.KeyValue, 0, 4)
	attrs = append(attrs, attribute.String(attrDecision, o.decision()), attribute.String(attrReason, string(o.reason)))
	if in.app != nil {
		attrs = append(attrs, attribute.String(attrApp, in.app.name))
	}
	switch in.cache {
	case cacheHit:
		attrs = append(attrs, attribute.String(attrCache, "hit"))
	case cacheMiss:
		attrs = append(attrs, attribute.String(attrCache, "miss"))
	}
	span.SetAttributes(attrs...)
	if o.unavailable != nil {
		span.SetStatus(otelcodes.Error, string(o.reason))
	}
	span.End()
}

// startSpan starts a child span when t is set; otherwise it returns ctx and
// a nil span (endSpan accepts it).
func startSpan(ctx context.Context, t trace.Tracer, name string, kind trace.SpanKind, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	if t == nil {
		return ctx, nil
	}
	return t.Start(ctx, name, trace.WithSpanKind(kind), trace.WithAttributes(attrs...))
}

// endSpan marks a failure (by its kind only: error texts may quote a URL)
// and ends the span.
func endSpan(span trace.Span, failed bool, why string) {
	if span == nil {
		return
	}
	if failed {
		span.SetStatus(otelcodes.Error, why)
	}
	span.End()
}

// tracedDo runs an outgoing fetch in a client span, carrying the trace
// context to the server, and records the HTTP status.
func tracedDo(t trace.Tracer, name, provider string, inner *http.Client, req *http.Request) (*http.Response, error) {
	if t == nil {
		return inner.Do(req)
	}
	var attrs []attribute.KeyValue
	if provider != "" {
		attrs = append(attrs, attribute.String(attrProvider, provider))
	}
	ctx, span := startSpan(req.Context(), t, name, trace.SpanKindClient, attrs...)
	req = req.WithContext(ctx)
	req.Header = req.Header.Clone()
	tracing.Inject(ctx, propagation.HeaderCarrier(req.Header))
	resp, err := inner.Do(req)
	if err != nil {
		endSpan(span, true, "unreachable")
		return resp, err
	}
	span.SetAttributes(attribute.Int(attrStatus, resp.StatusCode))
	endSpan(span, resp.StatusCode != http.StatusOK, "status")
	return resp, nil
}
