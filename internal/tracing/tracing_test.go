package tracing_test

import (
	"strings"
	"testing"

	"github.com/tokengate/tokengate/internal/tracing"
	"github.com/tokengate/tokengate/internal/tracing/otlptest"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

// Without an endpoint (or when disabled) tracing is off: no provider, no
// tracer, and the nil Provider's methods are safe to call.
func TestSetupOff(t *testing.T) {
	t.Parallel()
	for name, vars := range map[string]map[string]string{
		"no endpoint":   {tracing.EnvServiceName: "x"},
		"sdk disabled":  {tracing.EnvEndpoint: "http://127.0.0.1:1", tracing.EnvSDKDisabled: "true"},
		"exporter none": {tracing.EnvEndpoint: "http://127.0.0.1:1", tracing.EnvTracesExporter: "none"},
	} {
		p, err := tracing.Setup(t.Context(), "svc", env(vars), nil)
		if err != nil || p != nil {
			t.Errorf("%s: %v %v, want nil provider", name, p, err)
		}
		if p.Tracer("x") != nil || p.ForceFlush(t.Context()) != nil || p.Shutdown(t.Context()) != nil {
			t.Errorf("%s: the nil provider is not inert", name)
		}
	}
	if p, err := tracing.Setup(t.Context(), "svc", nil, nil); p != nil || err != nil {
		t.Errorf("nil getenv: %v %v", p, err)
	}
}

// Bad settings are refused naming every variable at fault.
func TestSetupRefusesBadSettings(t *testing.T) {
	t.Parallel()
	_, err := tracing.Setup(t.Context(), "svc", env(map[string]string{
		tracing.EnvEndpoint: "collector:4318", tracing.EnvProtocol: "grpc", tracing.EnvTracesExporter: "zipkin",
	}), nil)
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{tracing.EnvEndpoint, tracing.EnvProtocol, tracing.EnvTracesExporter} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
}

// OTEL_EXPORTER_OTLP_ENDPOINT gets /v1/traces appended; the spans arrive
// at the receiver with the service name, on ForceFlush.
func TestSetupExports(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, variable, suffix, service string }{
		{"base endpoint", tracing.EnvEndpoint, "/", ""},
		{"traces endpoint", tracing.EnvTracesEndpoint, "/v1/traces", "custom"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rcv := otlptest.New(t)
			p, err := tracing.Setup(t.Context(), "default-name", env(map[string]string{tc.variable: rcv.URL + tc.suffix, tracing.EnvServiceName: tc.service}), nil)
			if err != nil || p == nil {
				t.Fatalf("setup: %v %v", p, err)
			}
			defer p.Shutdown(t.Context())
			_, span := p.Tracer("test").Start(t.Context(), "op")
			span.End()
			if err := p.ForceFlush(t.Context()); err != nil {
				t.Fatal(err)
			}
			spans := rcv.Named("op")
			want := tc.service
			if want == "" {
				want = "default-name"
			}
			if len(spans) != 1 || spans[0].Service != want {
				t.Fatalf("spans %+v, want one op of service %s", spans, want)
			}
		})
	}
}
