package deploy

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	egv1a1 "github.com/envoyproxy/gateway/api/v1alpha1"
	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/runtime/schema"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwapiv1b1 "sigs.k8s.io/gateway-api/apis/v1beta1"
	"sigs.k8s.io/yaml"
)

// k8sDoc is one decoded document of an examples/ Kubernetes YAML file.
type k8sDoc struct {
	gvk schema.GroupVersionKind
	obj any
}

// decodeK8sExamples strictly decodes every document of every YAML file in
// examples/<dir>, each into its project's Go type, and checks required fields.
func decodeK8sExamples(t *testing.T, dir string) []k8sDoc {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(repoRoot(t), "examples", dir, "*.yaml"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no YAML in examples/%s (%v)", dir, err)
	}
	var docs []k8sDoc
	for _, path := range paths {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		raw, err := splitManifests(string(data))
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		for i, doc := range raw {
			d, err := decodeK8sDoc(doc)
			if err != nil {
				t.Errorf("%s document %d: %v", filepath.Base(path), i, err)
				continue
			}
			docs = append(docs, d)
		}
	}
	return docs
}

func decodeK8sDoc(doc []byte) (k8sDoc, error) {
	js, err := yaml.YAMLToJSON(doc)
	if err != nil {
		return k8sDoc{}, err
	}
	var head struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
	}
	if err := yaml.Unmarshal(js, &head); err != nil {
		return k8sDoc{}, err
	}
	gvk := schema.FromAPIVersionAndKind(head.APIVersion, head.Kind)
	var obj any
	var validate func() error
	switch gvk {
	case schema.GroupVersionKind{Group: "install.istio.io", Version: "v1alpha1", Kind: "IstioOperator"}:
		v := &IstioOperator{}
		obj, validate = v, v.validate
	case schema.GroupVersionKind{Group: "security.istio.io", Version: "v1", Kind: "AuthorizationPolicy"}:
		v := &AuthorizationPolicy{}
		obj, validate = v, v.validate
	case egv1a1.GroupVersion.WithKind(egv1a1.KindSecurityPolicy):
		v := &egv1a1.SecurityPolicy{}
		obj, validate = v, func() error { return validateSecurityPolicy(v) }
	case schema.GroupVersion{Group: gwapiv1.GroupVersion.Group, Version: gwapiv1.GroupVersion.Version}.WithKind("HTTPRoute"):
		v := &gwapiv1.HTTPRoute{}
		obj, validate = v, func() error { return validateHTTPRoute(v) }
	case schema.GroupVersion{Group: gwapiv1b1.GroupVersion.Group, Version: gwapiv1b1.GroupVersion.Version}.WithKind("ReferenceGrant"):
		v := &gwapiv1b1.ReferenceGrant{}
		obj, validate = v, func() error { return validateReferenceGrant(v) }
	default:
		return k8sDoc{}, fmt.Errorf("%s: no strict decoder for this kind in test/deploy", gvk)
	}
	if err := strictJSON(js, obj); err != nil {
		return k8sDoc{}, fmt.Errorf("%s: strict decode: %w", gvk.Kind, err)
	}
	if err := validate(); err != nil {
		return k8sDoc{}, fmt.Errorf("%s: %w", gvk.Kind, err)
	}
	return k8sDoc{gvk: gvk, obj: obj}, nil
}

func docsOf[T any](docs []k8sDoc) []T {
	var out []T
	for _, d := range docs {
		if v, ok := d.obj.(T); ok {
			out = append(out, v)
		}
	}
	return out
}

// chartServices renders the chart as the examples assume (release
// "tokengate" in namespace "tokengate") and returns "name:port" of every
// Service port, so the examples are checked against real Service names.
func chartServices(t *testing.T) map[string]bool {
	t.Helper()
	out, err := helm(t, "template", "tokengate", chartDir(t), "--namespace", "tokengate", "--kube-version", kubeVersion)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := decodeRendered(out)
	if err != nil {
		t.Fatal(err)
	}
	svcs := map[string]bool{}
	for _, o := range objs {
		if o.gvk.Kind != "Service" {
			continue
		}
		var s struct {
			Spec struct {
				Ports []struct {
					Port int `json:"port"`
				} `json:"ports"`
			} `json:"spec"`
		}
		yaml.Unmarshal(o.json, &s)
		for _, p := range s.Spec.Ports {
			svcs[fmt.Sprintf("%s.%s:%d", o.name, o.ns, p.Port)] = true
		}
	}
	return svcs
}

func TestIstioExamples(t *testing.T) {
	t.Parallel()
	docs := decodeK8sExamples(t, "istio")
	ops := docsOf[*IstioOperator](docs)
	aps := docsOf[*AuthorizationPolicy](docs)
	if len(ops) != 1 || len(aps) != 1 {
		t.Fatalf("want one IstioOperator and one AuthorizationPolicy, got %d and %d", len(ops), len(aps))
	}
	providers := ops[0].mesh.GetExtensionProviders()
	if len(providers) != 1 {
		t.Fatalf("extensionProviders = %v", providers)
	}
	p := providers[0]
	g := p.GetEnvoyExtAuthzGrpc()
	if g == nil {
		t.Fatalf("provider %q is not envoyExtAuthzGrpc", p.GetName())
	}
	if g.GetFailOpen() || g.GetTimeout() == nil || g.GetStatusOnError() == "" {
		t.Errorf("provider: failOpen=%v timeout=%v statusOnError=%q; want fail closed with a timeout and status", g.GetFailOpen(), g.GetTimeout(), g.GetStatusOnError())
	}
	svc := strings.TrimSuffix(g.GetService(), ".svc.cluster.local")
	if !chartServices(t)[fmt.Sprintf("%s:%d", svc, g.GetPort())] || g.GetPort() != extAuthzPort {
		t.Errorf("provider points at %s:%d, which is not the chart's extauthz gRPC Service port", g.GetService(), g.GetPort())
	}
	ap := aps[0].spec
	if ap.GetAction().String() != "CUSTOM" || ap.GetProvider().GetName() != p.GetName() {
		t.Errorf("AuthorizationPolicy action %s provider %q; want CUSTOM with provider %q", ap.GetAction(), ap.GetProvider().GetName(), p.GetName())
	}
	if ap.GetSelector() == nil || len(ap.GetSelector().GetMatchLabels()) == 0 {
		t.Error("AuthorizationPolicy selects no workloads")
	}
	var notPaths []string
	for _, r := range ap.GetRules() {
		for _, to := range r.GetTo() {
			notPaths = append(notPaths, to.GetOperation().GetNotPaths()...)
		}
	}
	for _, path := range []string{"/v1/token", "/v1/revoke", "/v1/token/revoke", "/.well-known/jwks.json"} {
		if !slices.Contains(notPaths, path) {
			t.Errorf("AuthorizationPolicy sends %s to extauthz (notPaths %v)", path, notPaths)
		}
	}
}

func TestEnvoyGatewayExample(t *testing.T) {
	t.Parallel()
	docs := decodeK8sExamples(t, "envoy-gateway")
	routes := map[string]*gwapiv1.HTTPRoute{}
	for _, r := range docsOf[*gwapiv1.HTTPRoute](docs) {
		routes[r.Name] = r
	}
	services := chartServices(t)
	var extAuth *egv1a1.SecurityPolicy
	for _, sp := range docsOf[*egv1a1.SecurityPolicy](docs) {
		for _, ref := range sp.Spec.TargetRefs {
			if routes[string(ref.Name)] == nil || string(ref.Kind) != "HTTPRoute" {
				t.Errorf("SecurityPolicy %s targets %s %s, which the example does not define", sp.Name, ref.Kind, ref.Name)
			}
		}
		if sp.Spec.ExtAuth != nil {
			if extAuth != nil {
				t.Fatal("more than one SecurityPolicy with extAuth")
			}
			extAuth = sp
		}
		if sp.Spec.CORS == nil {
			t.Errorf("SecurityPolicy %s has no CORS: the browser could not read a denial or call /v1/token", sp.Name)
		}
	}
	if extAuth == nil {
		t.Fatal("no SecurityPolicy with extAuth")
	}
	ea := extAuth.Spec.ExtAuth
	if ea.GRPC == nil {
		t.Fatal("extAuth is not gRPC")
	}
	if ea.FailOpen == nil || *ea.FailOpen {
		t.Error("extAuth.failOpen must be set to false")
	}
	for _, br := range ea.GRPC.BackendRefs {
		key := fmt.Sprintf("%s.%s:%d", br.Name, deref(br.Namespace), deref(br.Port))
		if !services[key] || deref(br.Port) != extAuthzPort {
			t.Errorf("extAuth backend %s is not the chart's extauthz gRPC Service", key)
		}
	}
	if !slices.Contains(extAuth.Spec.CORS.ExposeHeaders, "x-token-expires-in") {
		t.Errorf("CORS exposeHeaders %v lacks x-token-expires-in", extAuth.Spec.CORS.ExposeHeaders)
	}
	// The refresher's public endpoints: a route of their own, with no extAuth.
	var refresherPaths []string
	for name, r := range routes {
		for _, rule := range r.Spec.Rules {
			for _, br := range rule.BackendRefs {
				key := fmt.Sprintf("%s.%s:%d", br.Name, deref(br.Namespace), deref(br.Port))
				if strings.Contains(string(br.Name), "tokengate") && !services[key] {
					t.Errorf("route %s sends to %s, which the chart does not create", name, key)
				}
				if br.Name != "tokengate-refresher" {
					continue
				}
				for _, ref := range extAuth.Spec.TargetRefs {
					if string(ref.Name) == name {
						t.Errorf("route %s to the refresher is behind extAuth; refresh must work with an expired token", name)
					}
				}
				for _, m := range rule.Matches {
					refresherPaths = append(refresherPaths, deref(m.Path.Value))
				}
			}
		}
	}
	slices.Sort(refresherPaths)
	if diff := cmp.Diff([]string{"/.well-known/jwks.json", "/v1/revoke", "/v1/token", "/v1/token/revoke"}, refresherPaths); diff != "" {
		t.Errorf("refresher paths (-want +got):\n%s", diff)
	}
	// Cross-namespace references need a ReferenceGrant in the target namespace.
	grants := docsOf[*gwapiv1b1.ReferenceGrant](docs)
	if len(grants) != 1 {
		t.Fatalf("want one ReferenceGrant, got %d", len(grants))
	}
	var from []string
	for _, f := range grants[0].Spec.From {
		from = append(from, string(f.Kind)+"/"+string(f.Namespace))
	}
	slices.Sort(from)
	if diff := cmp.Diff([]string{"HTTPRoute/shop", "SecurityPolicy/shop"}, from); diff != "" {
		t.Errorf("ReferenceGrant from (-want +got):\n%s", diff)
	}
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

// TestK8sStrictDecodeCatchesMistakes proves the decoders refuse what an API
// server would: each broken variant must fail.
func TestK8sStrictDecodeCatchesMistakes(t *testing.T) {
	t.Parallel()
	read := func(p string) string {
		data, err := os.ReadFile(filepath.Join(repoRoot(t), "examples", p))
		if err != nil {
			t.Fatal(err)
		}
		return string(data)
	}
	tests := []struct {
		name, file, old, new, wantErr string
	}{
		{"SecurityPolicy unknown field", "envoy-gateway/security-policy.yaml", "    failOpen: false", "    failOpn: false", "unknown field"},
		{"SecurityPolicy grpc without backend", "envoy-gateway/security-policy.yaml", "      backendRefs:\n        - name: tokengate-extauthz\n          namespace: tokengate\n          port: 9001", "      {}", "backendRef or backendRefs"},
		{"HTTPRoute unknown field", "envoy-gateway/security-policy.yaml", "  hostnames: [shop.example.com]", "  hostname: [shop.example.com]", "unknown field"},
		{"AuthorizationPolicy unknown field in the spec proto", "istio/authorization-policy.yaml", "  action: CUSTOM", "  action: CUSTOM\n  providers: {}", "unknown field"},
		{"AuthorizationPolicy bad action", "istio/authorization-policy.yaml", "  action: CUSTOM", "  action: CUSTUM", "invalid value"},
		{"AuthorizationPolicy CUSTOM without provider", "istio/authorization-policy.yaml", "  provider:\n    name: tokengate\n", "", "spec.provider.name is required"},
		{"mesh config unknown provider field", "istio/mesh-config.yaml", "          failOpen: false", "          failOpen: false\n          fail_closed: true", "unknown field"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			orig := read(tc.file)
			if !strings.Contains(orig, tc.old) {
				t.Fatalf("%s no longer contains %q; update this test", tc.file, tc.old)
			}
			docs, err := splitManifests(strings.Replace(orig, tc.old, tc.new, 1))
			if err != nil {
				t.Fatal(err)
			}
			var errs []string
			for _, d := range docs {
				if _, err := decodeK8sDoc(d); err != nil {
					errs = append(errs, err.Error())
				}
			}
			if len(errs) != 1 || !strings.Contains(errs[0], tc.wantErr) {
				t.Fatalf("errors = %q, want exactly one containing %q", errs, tc.wantErr)
			}
		})
	}
}
