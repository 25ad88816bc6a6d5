package deploy

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	"sigs.k8s.io/yaml"
)

// renderNotes renders NOTES.txt, which `helm template` never prints: a copy
// of the chart gets a ConfigMap template that runs NOTES.txt through tpl.
func renderNotes(t *testing.T, set ...string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "tokengate")
	if err := os.CopyFS(dir, os.DirFS(chartDir(t))); err != nil {
		t.Fatal(err)
	}
	notes, err := os.ReadFile(filepath.Join(dir, "templates", "NOTES.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "notes-under-test.txt"), notes, 0o644); err != nil {
		t.Fatal(err)
	}
	tmpl := "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: notes}\ndata:\n  notes: |\n{{ tpl (.Files.Get \"notes-under-test.txt\") . | indent 4 }}\n"
	if err := os.WriteFile(filepath.Join(dir, "templates", "zz-notes-under-test.yaml"), []byte(tmpl), 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"template", release, dir, "--namespace", namespace, "--kube-version", kubeVersion, "--show-only", "templates/zz-notes-under-test.yaml"}
	for _, s := range set {
		args = append(args, "--set", s)
	}
	out, err := helm(t, args...)
	if err != nil {
		t.Fatal(err)
	}
	var cm struct {
		Data map[string]string `json:"data"`
	}
	if err := yaml.Unmarshal([]byte(out), &cm); err != nil {
		t.Fatal(err)
	}
	return cm.Data["notes"]
}

// between returns the text between two marker lines.
func between(t *testing.T, text, from, to string) string {
	t.Helper()
	_, rest, ok := strings.Cut(text, from)
	if !ok {
		t.Fatalf("NOTES lack %q", from)
	}
	block, _, ok := strings.Cut(rest, to)
	if !ok {
		t.Fatalf("NOTES lack %q after %q", to, from)
	}
	return block
}

func indent(s, prefix string) string {
	lines := strings.Split(strings.Trim(s, "\n"), "\n")
	for i, l := range lines {
		if l != "" {
			lines[i] = prefix + l
		}
	}
	return strings.Join(lines, "\n")
}

// TestChartNotesEnvoySnippet: the ext_authz filter and clusters NOTES print
// are pasted into a bootstrap that must pass the same strict checks as the
// examples, and must name this release's Services.
func TestChartNotesEnvoySnippet(t *testing.T) {
	t.Parallel()
	notes := renderNotes(t)
	filter := between(t, notes, "before the router:\n", "\nand to clusters:")
	if !strings.Contains(notes, "headers_with_underscores_action: REJECT_REQUEST") {
		t.Error("NOTES.txt does not tell users to reject headers with underscores")
	}
	clusters := between(t, notes, "and to clusters:\n", "\nRoute /v1/token")
	bootstrap := fmt.Sprintf(`static_resources:
  listeners:
  - name: ingress
    address: { socket_address: { address: 0.0.0.0, port_value: 10000 } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          # As NOTES.txt says: a client x_user_id must not pass as x-user-id.
          common_http_protocol_options: { headers_with_underscores_action: REJECT_REQUEST }
          route_config:
            virtual_hosts:
            - name: app
              domains: ["*"]
              routes:
              - match: { prefix: / }
                route: { cluster: tokengate_refresher }
          http_filters:
%s
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
%s
`, indent(filter, "          "), strings.Trim(clusters, "\n"))
	path := filepath.Join(t.TempDir(), "notes-bootstrap.yaml")
	if err := os.WriteFile(path, []byte(bootstrap), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := decodeEnvoy(t, path)
	checkWiring(t, cfg)
	for _, c := range cfg.bootstrap.GetStaticResources().GetClusters() {
		addr := c.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
		want := map[string]string{
			"tokengate_extauthz":  fmt.Sprintf("%s-tokengate-extauthz-headless.%s.svc.cluster.local:9001", release, namespace),
			"tokengate_refresher": fmt.Sprintf("%s-tokengate-refresher.%s.svc.cluster.local:8080", release, namespace),
		}[c.GetName()]
		if got := fmt.Sprintf("%s:%d", addr.GetAddress(), addr.GetPortValue()); got != want {
			t.Errorf("NOTES cluster %s → %s, want %s", c.GetName(), got, want)
		}
	}
}

// TestChartNotesIstioSnippet: the printed extension provider decodes
// strictly into Istio's MeshConfig and names this release's Service.
func TestChartNotesIstioSnippet(t *testing.T) {
	t.Parallel()
	notes := renderNotes(t, "istio.providerName=tg-authz", "extauthz.grpcPort=9101")
	snippet := between(t, notes, "meshConfig:\n", "\n\n")
	js, err := yaml.YAMLToJSON([]byte(snippet))
	if err != nil {
		t.Fatalf("snippet %q: %v", snippet, err)
	}
	mesh := &meshv1alpha1.MeshConfig{}
	if err := protojson.Unmarshal(js, mesh); err != nil {
		t.Fatalf("strict decode into MeshConfig: %v\n%s", err, snippet)
	}
	p := mesh.GetExtensionProviders()[0]
	g := p.GetEnvoyExtAuthzGrpc()
	if p.GetName() != "tg-authz" || g.GetService() != fmt.Sprintf("%s-tokengate-extauthz.%s.svc.cluster.local", release, namespace) || g.GetPort() != 9101 || g.GetFailOpen() {
		t.Errorf("provider %v", p)
	}
	if !strings.Contains(notes, "provider: { name: tg-authz }") {
		t.Error("the AuthorizationPolicy hint does not use the provider name")
	}
}
