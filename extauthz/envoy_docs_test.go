package extauthz

import (
	"os"
	"strings"
	"testing"

	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"sigs.k8s.io/yaml"

	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
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
	if len(blocks) != 2 {
		t.Fatalf("%d yaml blocks, want 2", len(blocks))
	}
	for i, b := range blocks {
		snippet, _, _ := strings.Cut(b, "```")
		js, err := yaml.YAMLToJSON([]byte(snippet))
		if err != nil {
			t.Fatalf("block %d: %v", i, err)
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
