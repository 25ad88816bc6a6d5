// Package tracing sets up OpenTelemetry tracing from the standard OTEL_*
// environment variables: when an OTLP endpoint is set, spans are exported
// over OTLP/HTTP (protobuf) by a batching SDK provider; otherwise nothing is
// set up at all and the services start no spans (no cost on the request
// path). Trace context travels in W3C traceparent/tracestate headers.
package tracing

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// The environment variables Setup reads itself; the SDK reads the others
// (OTEL_EXPORTER_OTLP_HEADERS, _TIMEOUT, _COMPRESSION, _CERTIFICATE,
// OTEL_TRACES_SAMPLER, OTEL_TRACES_SAMPLER_ARG, OTEL_RESOURCE_ATTRIBUTES,
// OTEL_BSP_*) from the process environment.
const (
	EnvEndpoint       = "OTEL_EXPORTER_OTLP_ENDPOINT"
	EnvTracesEndpoint = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
	EnvServiceName    = "OTEL_SERVICE_NAME"
	EnvSDKDisabled    = "OTEL_SDK_DISABLED"
	EnvTracesExporter = "OTEL_TRACES_EXPORTER"
	EnvProtocol       = "OTEL_EXPORTER_OTLP_PROTOCOL"
	EnvTracesProtocol = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
)

// Propagator is W3C trace context (traceparent, tracestate), the one Envoy
// and most proxies speak.
var Propagator propagation.TextMapPropagator = propagation.TraceContext{}

// Provider exports the spans of one service. A nil *Provider is tracing
// off: Tracer returns nil and ForceFlush and Shutdown do nothing.
type Provider struct {
	tp *sdktrace.TracerProvider
}

// Setup reads the OTEL_* variables through getenv. Without an endpoint
// (or with OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none) it returns
// a nil Provider: tracing off. serviceName is the default service.name;
// OTEL_SERVICE_NAME overrides it. Export failures are logged to log
// ("tracing export failed"); they never fail a request.
func Setup(ctx context.Context, serviceName string, getenv func(string) string, log *slog.Logger) (*Provider, error) {
	if getenv == nil {
		return nil, nil
	}
	if strings.EqualFold(strings.TrimSpace(getenv(EnvSDKDisabled)), "true") {
		return nil, nil
	}
	var errs []error
	switch exp := strings.TrimSpace(getenv(EnvTracesExporter)); exp {
	case "", "otlp":
	case "none":
		return nil, nil
	default:
		errs = append(errs, fmt.Errorf("%s=%q: only otlp or none is supported", EnvTracesExporter, exp))
	}
	for _, name := range []string{EnvTracesProtocol, EnvProtocol} {
		if p := strings.TrimSpace(getenv(name)); p != "" && p != "http/protobuf" {
			errs = append(errs, fmt.Errorf("%s=%q: only http/protobuf is supported", name, p))
		}
	}
	endpoint, err := tracesEndpoint(getenv)
	if err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("tracing: %w", err)
	}
	if endpoint == "" {
		return nil, nil
	}
	exp, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(endpoint))
	if err != nil {
		return nil, fmt.Errorf("tracing: OTLP exporter: %w", err)
	}
	if n := strings.TrimSpace(getenv(EnvServiceName)); n != "" {
		serviceName = n
	}
	res, err := resource.New(ctx, resource.WithFromEnv(), resource.WithTelemetrySDK(),
		resource.WithAttributes(attribute.String("service.name", serviceName)))
	if err != nil {
		return nil, fmt.Errorf("tracing: resource: %w", err)
	}
	if log != nil {
		otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
			log.Warn("tracing export failed", "error", err.Error())
		}))
	}
	// The sampler is the SDK's: OTEL_TRACES_SAMPLER, by default
	// parentbased_always_on (a sampled traceparent is recorded).
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	return &Provider{tp: tp}, nil
}

// tracesEndpoint is OTEL_EXPORTER_OTLP_TRACES_ENDPOINT as given, else
// OTEL_EXPORTER_OTLP_ENDPOINT with /v1/traces appended (the OTLP rule);
// "" when neither is set.
func tracesEndpoint(getenv func(string) string) (string, error) {
	name, raw := EnvTracesEndpoint, strings.TrimSpace(getenv(EnvTracesEndpoint))
	if raw == "" {
		name, raw = EnvEndpoint, strings.TrimSpace(getenv(EnvEndpoint))
		if raw == "" {
			return "", nil
		}
		raw = strings.TrimRight(raw, "/") + "/v1/traces"
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("%s: must be an absolute http or https URL", name)
	}
	return u.String(), nil
}

// Tracer returns a tracer of the given instrumentation name, or nil when
// tracing is off.
func (p *Provider) Tracer(name string) trace.Tracer {
	if p == nil {
		return nil
	}
	return p.tp.Tracer(name)
}

// ForceFlush exports every span ended so far.
func (p *Provider) ForceFlush(ctx context.Context) error {
	if p == nil {
		return nil
	}
	return p.tp.ForceFlush(ctx)
}

// Shutdown flushes and stops the exporter.
func (p *Provider) Shutdown(ctx context.Context) error {
	if p == nil {
		return nil
	}
	return p.tp.Shutdown(ctx)
}

// Close exports the spans still buffered and stops, waiting at most 5
// seconds: a collector that is down must not hold a shutdown.
func (p *Provider) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = p.Shutdown(ctx)
}

// ExtractHTTP continues the trace of an HTTP request's headers.
func ExtractHTTP(ctx context.Context, h propagation.HeaderCarrier) context.Context {
	return Propagator.Extract(ctx, h)
}

// Inject writes the trace context of ctx into an outgoing request's
// headers, so the next service's spans join the trace.
func Inject(ctx context.Context, h propagation.HeaderCarrier) {
	Propagator.Inject(ctx, h)
}
