package extauthz

import (
	"os"
	"strings"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"sigs.k8s.io/yaml"
)

// Envoy cannot run here, so the Envoy filter snippets in docs/extauthz.md
// are decoded strictly (unknown fields fail) into the typed protos and
// validated with go-control-plane's ValidateAll.
func TestEnvoySnippetsInDocsValidate(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile("../docs/extauthz.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(doc), "## Envoy configuration")
	if !ok {
		t.Fatal("no Envoy configuration section")
	}
	section, _, _ = strings.Cut(section, "\n## ")
	blocks := strings.Split(section, "```yaml\n")[1:]
	if len(blocks) != 3 {
		t.Fatalf("%d yaml blocks, want 3 (two filters, one virtual host)", len(blocks))
	}
	for i, b := range blocks {
		snippet, _, _ := strings.Cut(b, "```")
		js, err := yaml.YAMLToJSON([]byte(snippet))
		if err != nil {
			t.Fatalf("block %d: %v", i, err)
		}
		if !strings.HasPrefix(snippet, "name: envoy.filters.http.ext_authz\n") {
			checkAppsVirtualHost(t, js, string(doc))
			continue
		}
		var filter hcmv3.HttpFilter
		if err := protojson.Unmarshal(js, &filter); err != nil {
			t.Fatalf("block %d: decode: %v", i, err)
		}
		if err := filter.ValidateAll(); err != nil {
			t.Fatalf("block %d: %v", i, err)
		}
		var ea extauthzv3.ExtAuthz
		if err := filter.GetTypedConfig().UnmarshalTo(&ea); err != nil {
			t.Fatalf("block %d: typed_config: %v", i, err)
		}
		if err := ea.ValidateAll(); err != nil {
			t.Fatalf("block %d: %v", i, err)
		}
		if ea.GetFailureModeAllow() || ea.GetStatusOnError().GetCode() != 503 {
			t.Fatalf("block %d: must fail closed with 503", i)
		}
	}
}

// checkAppsVirtualHost validates the several-apps snippet: a virtual host
// whose routes' ExtAuthzPerRoute (inside an Any, which ValidateAll does
// not enter) decode strictly and validate, and whose context_extensions
// each select an app of the configuration example in the same document.
func checkAppsVirtualHost(t *testing.T, js []byte, doc string) {
	t.Helper()
	var vh routev3.VirtualHost
	if err := protojson.Unmarshal(js, &vh); err != nil {
		t.Fatalf("virtual host: decode: %v", err)
	}
	if err := vh.ValidateAll(); err != nil {
		t.Fatalf("virtual host: %v", err)
	}
	_, rest, _ := strings.Cut(doc, "## Configuration file")
	_, rest, _ = strings.Cut(rest, "```yaml\n")
	example, _, _ := strings.Cut(rest, "```")
	cfg, err := ParseConfig([]byte(example))
	if err != nil {
		t.Fatal(err)
	}
	p := newPolicy(cfg.WithDefaults())
	selected := 0
	for _, r := range vh.GetRoutes() {
		a := r.GetTypedPerFilterConfig()["envoy.filters.http.ext_authz"]
		if a == nil {
			continue
		}
		var per extauthzv3.ExtAuthzPerRoute
		if err := a.UnmarshalTo(&per); err != nil {
			t.Fatalf("route %s: %v", r.GetName(), err)
		}
		if err := per.ValidateAll(); err != nil {
			t.Fatalf("route %s: %v", r.GetName(), err)
		}
		ext := per.GetCheckSettings().GetContextExtensions()
		app, unknown := p.selectApp(&request{ext: ext})
		if unknown != nil || app == p.def {
			t.Errorf("route %s: context_extensions %v select no app of the configuration example", r.GetName(), ext)
		}
		selected++
	}
	if selected == 0 {
		t.Error("no route of the snippet selects an app")
	}
}
