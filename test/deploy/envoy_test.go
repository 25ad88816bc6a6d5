package deploy

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"sigs.k8s.io/yaml"

	// Every extension the examples name, so their Any payloads resolve.
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
)

// extAuthzPort is where tokengate extauthz serves gRPC (the agreed default).
const extAuthzPort = 9001

// envoyConfig is one decoded example.
type envoyConfig struct {
	path      string
	bootstrap *bootstrapv3.Bootstrap
	anys      []proto.Message // every unpacked typed_config, in walk order
}

// envoyYAMLs finds every Envoy bootstrap under examples/: YAML files whose
// top level has static_resources or dynamic_resources.
func envoyYAMLs(t *testing.T) []string {
	t.Helper()
	var paths []string
	root := filepath.Join(repoRoot(t), "examples")
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && d.Name() == "node_modules" {
			return filepath.SkipDir
		}
		if d.IsDir() || (!strings.HasSuffix(path, ".yaml") && !strings.HasSuffix(path, ".yml")) {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		var top map[string]any
		if err := yaml.Unmarshal(data, &top); err != nil {
			// Multi-document Kubernetes YAML; not an Envoy bootstrap.
			return nil
		}
		if _, ok := top["static_resources"]; ok {
			paths = append(paths, path)
		} else if _, ok := top["dynamic_resources"]; ok {
			paths = append(paths, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return paths
}

// decodeEnvoy decodes strictly (unknown fields, unknown Any types and bad
// enum names fail), runs ValidateAll on the bootstrap, and unpacks and
// validates every Any at any depth, since ValidateAll stops at Any.
func decodeEnvoy(t *testing.T, path string) *envoyConfig {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		t.Fatalf("%s: YAML: %v", path, err)
	}
	bs := &bootstrapv3.Bootstrap{}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: false}).Unmarshal(js, bs); err != nil {
		t.Fatalf("%s: strict decode into envoy.config.bootstrap.v3.Bootstrap: %v", path, err)
	}
	if err := bs.ValidateAll(); err != nil {
		t.Fatalf("%s: ValidateAll: %v", path, err)
	}
	cfg := &envoyConfig{path: path, bootstrap: bs}
	if err := walkAnys(bs, "", &cfg.anys); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return cfg
}

func TestEnvoyExamplesDecodeStrictly(t *testing.T) {
	t.Parallel()
	paths := envoyYAMLs(t)
	var rel []string
	for _, p := range paths {
		r, _ := filepath.Rel(repoRoot(t), p)
		rel = append(rel, r)
	}
	for _, want := range []string{"examples/envoy/front-proxy.yaml", "examples/envoy/sidecar.yaml"} {
		if !slices.Contains(rel, want) {
			t.Errorf("%s was not found among the Envoy configs %v", want, rel)
		}
	}
	for _, path := range paths {
		t.Run(filepath.Base(path), func(t *testing.T) {
			t.Parallel()
			cfg := decodeEnvoy(t, path)
			if len(cfg.anys) == 0 {
				t.Fatal("no typed_config found; the walk is broken")
			}
			checkWiring(t, cfg)
		})
	}
}

// checkWiring holds for every example: each route names a defined cluster,
// each ext_authz filter talks gRPC to a cluster on port 9001 over HTTP/2, and
// never fails open.
func checkWiring(t *testing.T, cfg *envoyConfig) {
	t.Helper()
	clusters := map[string]*clusterv3.Cluster{}
	for _, c := range cfg.bootstrap.GetStaticResources().GetClusters() {
		clusters[c.GetName()] = c
	}
	hcms := httpConnectionManagers(cfg)
	if len(hcms) == 0 {
		t.Fatal("no http_connection_manager")
	}
	extAuthzSeen := 0
	for _, hcm := range hcms {
		// Headers with underscores are refused or dropped: an x_user_id
		// from the client would pass ext_authz's headers_to_remove (which
		// names x-user-id) and reach an app that maps "_" and "-" alike.
		switch a := hcm.GetCommonHttpProtocolOptions().GetHeadersWithUnderscoresAction(); a {
		case corev3.HttpProtocolOptions_REJECT_REQUEST, corev3.HttpProtocolOptions_DROP_HEADER:
		default:
			t.Errorf("http_connection_manager %s: common_http_protocol_options.headers_with_underscores_action is %v, want REJECT_REQUEST (or DROP_HEADER)", hcm.GetStatPrefix(), a)
		}
		for _, vh := range hcm.GetRouteConfig().GetVirtualHosts() {
			for _, r := range vh.GetRoutes() {
				if c := r.GetRoute().GetCluster(); c != "" && clusters[c] == nil {
					t.Errorf("route %q sends to undefined cluster %q", r.GetName(), c)
				}
			}
		}
		for _, f := range hcm.GetHttpFilters() {
			ea := &extauthzv3.ExtAuthz{}
			if f.GetTypedConfig().MessageIs(ea) {
				extAuthzSeen++
				if err := f.GetTypedConfig().UnmarshalTo(ea); err != nil {
					t.Fatal(err)
				}
				checkExtAuthz(t, ea, clusters)
			}
		}
	}
	if extAuthzSeen == 0 {
		t.Error("no ext_authz filter")
	}
}

func checkExtAuthz(t *testing.T, ea *extauthzv3.ExtAuthz, clusters map[string]*clusterv3.Cluster) {
	t.Helper()
	if ea.GetFailureModeAllow() {
		t.Error("ext_authz failure_mode_allow is true: requests would pass when extauthz is down")
	}
	if ea.GetStatusOnError() == nil {
		t.Error("ext_authz has no status_on_error")
	}
	gs := ea.GetGrpcService()
	if gs == nil {
		t.Fatal("ext_authz is not gRPC")
	}
	if gs.GetTimeout() == nil {
		t.Error("ext_authz gRPC service has no timeout")
	}
	name := gs.GetEnvoyGrpc().GetClusterName()
	c := clusters[name]
	if c == nil {
		t.Fatalf("ext_authz cluster %q is not defined", name)
	}
	var ports []uint32
	for _, le := range c.GetLoadAssignment().GetEndpoints() {
		for _, ep := range le.GetLbEndpoints() {
			ports = append(ports, ep.GetEndpoint().GetAddress().GetSocketAddress().GetPortValue())
		}
	}
	if len(ports) == 0 || slices.ContainsFunc(ports, func(p uint32) bool { return p != extAuthzPort }) {
		t.Errorf("ext_authz cluster %q ports = %v, want %d", name, ports, extAuthzPort)
	}
	opts := &upstreamhttpv3.HttpProtocolOptions{}
	anyOpts := c.GetTypedExtensionProtocolOptions()["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
	if anyOpts == nil || anyOpts.UnmarshalTo(opts) != nil || opts.GetExplicitHttpConfig().GetHttp2ProtocolOptions() == nil {
		t.Errorf("ext_authz cluster %q does not force HTTP/2, which gRPC needs", name)
	}
}

func httpConnectionManagers(cfg *envoyConfig) []*hcmv3.HttpConnectionManager {
	var out []*hcmv3.HttpConnectionManager
	for _, m := range cfg.anys {
		if h, ok := m.(*hcmv3.HttpConnectionManager); ok {
			out = append(out, h)
		}
	}
	return out
}

// routeSummary is what the route table means for a request path: App is
// the extauthz app the route names (check_settings.context_extensions).
type routeSummary struct {
	Cluster     string
	ExtAuthzOff bool
	App         string
}

// appKey is the context extension the examples select extauthz apps by
// (apps[].match.context_extensions in extauthz-apps.yaml).
const appKey = "app"

func summarize(t *testing.T, r *routev3.Route) routeSummary {
	t.Helper()
	s := routeSummary{Cluster: r.GetRoute().GetCluster()}
	if a := r.GetTypedPerFilterConfig()["envoy.filters.http.ext_authz"]; a != nil {
		per := &extauthzv3.ExtAuthzPerRoute{}
		if err := a.UnmarshalTo(per); err != nil {
			t.Fatalf("route %q: ext_authz per-route config: %v", r.GetName(), err)
		}
		if err := per.ValidateAll(); err != nil {
			t.Fatalf("route %q: ext_authz per-route config: %v", r.GetName(), err)
		}
		s.ExtAuthzOff = per.GetDisabled()
		for k, v := range per.GetCheckSettings().GetContextExtensions() {
			if k != appKey {
				t.Errorf("route %q: context extension %q: the examples select apps by %q only", r.GetName(), k, appKey)
			}
			s.App = v
		}
	}
	return s
}

// routeFor finds the first route matching path, as Envoy does (path or prefix
// matches only; the examples use nothing else).
func routeFor(t *testing.T, vh *routev3.VirtualHost, path string) *routev3.Route {
	t.Helper()
	for _, r := range vh.GetRoutes() {
		m := r.GetMatch()
		switch {
		case m.GetPath() != "" && m.GetPath() == path,
			m.GetPrefix() != "" && strings.HasPrefix(path, m.GetPrefix()):
			return r
		case m.GetPath() == "" && m.GetPrefix() == "":
			t.Fatalf("route %q uses a matcher this test does not model: %v", r.GetName(), m)
		}
	}
	t.Fatalf("no route for %s", path)
	return nil
}

func onlyVirtualHost(t *testing.T, cfg *envoyConfig) *routev3.VirtualHost {
	t.Helper()
	hcms := httpConnectionManagers(cfg)
	if len(hcms) != 1 || len(hcms[0].GetRouteConfig().GetVirtualHosts()) != 1 {
		t.Fatalf("want one http_connection_manager with one virtual host")
	}
	return hcms[0].GetRouteConfig().GetVirtualHosts()[0]
}

func filterNames(cfg *envoyConfig) []string {
	var names []string
	for _, f := range httpConnectionManagers(cfg)[0].GetHttpFilters() {
		names = append(names, f.GetName())
	}
	return names
}

func clusterPort(t *testing.T, cfg *envoyConfig, name string) uint32 {
	t.Helper()
	for _, c := range cfg.bootstrap.GetStaticResources().GetClusters() {
		if c.GetName() == name {
			return c.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress().GetPortValue()
		}
	}
	t.Fatalf("no cluster %q", name)
	return 0
}

func TestEnvoyFrontProxy(t *testing.T) {
	t.Parallel()
	cfg := decodeEnvoy(t, filepath.Join(repoRoot(t), "examples/envoy/front-proxy.yaml"))
	if diff := cmp.Diff([]string{"envoy.filters.http.cors", "envoy.filters.http.ext_authz", "envoy.filters.http.router"}, filterNames(cfg)); diff != "" {
		t.Errorf("http filter order (-want +got):\n%s", diff)
	}
	vh := onlyVirtualHost(t, cfg)
	got := map[string]routeSummary{}
	for _, path := range []string{"/v1/token", "/v1/revoke", "/v1/token/revoke", "/.well-known/jwks.json", "/", "/api/orders", "/admin/users", "/admin", "/v1/sessions", "/v1/revocations", "/v1/tokens"} {
		got[path] = summarize(t, routeFor(t, vh, path))
	}
	want := map[string]routeSummary{
		"/v1/token":              {Cluster: "refresher", ExtAuthzOff: true},
		"/v1/revoke":             {Cluster: "refresher", ExtAuthzOff: true},
		"/v1/token/revoke":       {Cluster: "refresher", ExtAuthzOff: true},
		"/.well-known/jwks.json": {Cluster: "refresher", ExtAuthzOff: true},
		"/":                      {Cluster: "app", App: "web"},
		"/api/orders":            {Cluster: "app", App: "web"},
		// The second app: its own rules in the same extauthz.
		"/admin/users": {Cluster: "app", App: "admin"},
		"/admin":       {Cluster: "app", App: "web"}, // not under /admin/: web's rules (its default: required)
		// The admin API is not exposed: these fall through to the app, behind ext_authz.
		"/v1/sessions":    {Cluster: "app", App: "web"},
		"/v1/revocations": {Cluster: "app", App: "web"},
		// Exact matches: a look-alike path is not public.
		"/v1/tokens": {Cluster: "app", App: "web"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("routes (-want +got):\n%s", diff)
	}
	if p := clusterPort(t, cfg, "refresher"); p != 8080 {
		t.Errorf("refresher cluster port = %d, want 8080", p)
	}
	// CORS on the host, so the cors filter (before ext_authz) decorates denials.
	policy := &corsv3.CorsPolicy{}
	if err := vh.GetTypedPerFilterConfig()["envoy.filters.http.cors"].UnmarshalTo(policy); err != nil {
		t.Fatalf("virtual host CORS policy: %v", err)
	}
	for _, h := range []string{"www-authenticate", "x-token-expires-in", "dpop-nonce"} {
		if !strings.Contains(policy.GetExposeHeaders(), h) {
			t.Errorf("CORS expose_headers %q lacks %s", policy.GetExposeHeaders(), h)
		}
	}
	for _, h := range []string{"authorization", "dpop"} {
		if !strings.Contains(policy.GetAllowHeaders(), h) {
			t.Errorf("CORS allow_headers %q lacks %s", policy.GetAllowHeaders(), h)
		}
	}
	if !policy.GetAllowCredentials().GetValue() {
		t.Error("CORS allow_credentials is off; cookie-mode refresh needs it")
	}
}

func TestEnvoySidecar(t *testing.T) {
	t.Parallel()
	cfg := decodeEnvoy(t, filepath.Join(repoRoot(t), "examples/envoy/sidecar.yaml"))
	if diff := cmp.Diff([]string{"envoy.filters.http.ext_authz", "envoy.filters.http.router"}, filterNames(cfg)); diff != "" {
		t.Errorf("http filter order (-want +got):\n%s", diff)
	}
	vh := onlyVirtualHost(t, cfg)
	got := map[string]routeSummary{}
	for _, path := range []string{"/healthz", "/", "/api", "/admin/users"} {
		got[path] = summarize(t, routeFor(t, vh, path))
	}
	want := map[string]routeSummary{
		"/healthz": {Cluster: "local_app", ExtAuthzOff: true},
		// Two apps with different rules in one extauthz.
		"/":            {Cluster: "local_app", App: "web"},
		"/api":         {Cluster: "local_app", App: "web"},
		"/admin/users": {Cluster: "local_app", App: "admin"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("routes (-want +got):\n%s", diff)
	}
	addr := cfg.bootstrap.GetStaticResources().GetClusters()[0].GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress().GetAddress()
	if addr != "127.0.0.1" {
		t.Errorf("local_app address = %s; the app must be reached on loopback only", addr)
	}
}

// TestEnvoyAppsAreConfigured: every app an Envoy example's route names in
// check_settings.context_extensions is an app of extauthz-apps.yaml (a
// value no app has would be denied unknown_app), and each example uses
// every app there, each with its own rules.
func TestEnvoyAppsAreConfigured(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile(filepath.Join(repoRoot(t), "examples/envoy/extauthz-apps.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Apps []struct {
			Name  string `json:"name"`
			Match struct {
				ContextExtensions map[string]string `json:"context_extensions"`
			} `json:"match"`
			Routes []map[string]any `json:"routes"`
		} `json:"apps"`
	}
	if err := yaml.Unmarshal(data, &cfg); err != nil {
		t.Fatal(err)
	}
	apps := map[string]bool{}
	for _, a := range cfg.Apps {
		v, ok := a.Match.ContextExtensions[appKey]
		if len(a.Match.ContextExtensions) != 1 || !ok || len(a.Routes) == 0 {
			t.Fatalf("extauthz-apps.yaml app %s: match %v, %d routes", a.Name, a.Match.ContextExtensions, len(a.Routes))
		}
		apps[v] = true
	}
	if len(apps) < 2 {
		t.Fatalf("extauthz-apps.yaml has %d apps, want two or more", len(apps))
	}
	for _, file := range []string{"front-proxy.yaml", "sidecar.yaml"} {
		cfg := decodeEnvoy(t, filepath.Join(repoRoot(t), "examples/envoy", file))
		used := map[string]bool{}
		for _, r := range onlyVirtualHost(t, cfg).GetRoutes() {
			s := summarize(t, r)
			switch {
			case s.ExtAuthzOff:
			case s.App == "":
				t.Errorf("%s: route %q is checked without naming an app", file, r.GetName())
			case !apps[s.App]:
				t.Errorf("%s: route %q names app %q, which extauthz-apps.yaml lacks (unknown_app)", file, r.GetName(), s.App)
			default:
				used[s.App] = true
			}
		}
		if len(used) != len(apps) {
			t.Errorf("%s uses apps %v of %v", file, used, apps)
		}
	}
}

// TestEnvoyStrictDecodeCatchesMistakes proves the checks can fail: each
// broken variant of front-proxy.yaml must be refused.
func TestEnvoyStrictDecodeCatchesMistakes(t *testing.T) {
	t.Parallel()
	orig, err := os.ReadFile(filepath.Join(repoRoot(t), "examples/envoy/front-proxy.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, old, new, wantErr string
	}{
		{"unknown field at top level", "static_resources:", "statik: {}\nstatic_resources:", "unknown field"},
		{"unknown field inside a typed_config", "failure_mode_allow: false", "failure_mode_allow: false\n              failure_mode_alow: true", "unknown field"},
		{"unknown Any type", "cors.v3.Cors\n", "cors.v3.Korz\n", "unable to resolve"},
		{"invalid value inside an Any (only the Any walk sees it)", "stat_prefix: ingress_http", "stat_prefix: \"\"", "StatPrefix"},
		{"invalid value inside a per-route Any, two Anys deep", "- exact: http://localhost:3000", "- ignore_case: true", "MatchPattern"},
		{"invalid bootstrap value", "port_value: 10000", "port_value: 70000", "PortValue"},
		{"misspelt field inside a per-route ExtAuthzPerRoute", "context_extensions: { app: admin }", "context_extension: { app: admin }", "unknown field"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if !bytes.Contains(orig, []byte(tc.old)) {
				t.Fatalf("front-proxy.yaml no longer contains %q; update this test", tc.old)
			}
			broken := bytes.Replace(orig, []byte(tc.old), []byte(tc.new), 1)
			err := decodeEnvoyBytes(broken)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error = %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}

// decodeEnvoyBytes is decodeEnvoy returning the first failure.
func decodeEnvoyBytes(data []byte) error {
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		return err
	}
	bs := &bootstrapv3.Bootstrap{}
	if err := protojson.Unmarshal(js, bs); err != nil {
		return err
	}
	if err := bs.ValidateAll(); err != nil {
		return err
	}
	var anys []proto.Message
	return walkAnys(bs, "", &anys)
}
