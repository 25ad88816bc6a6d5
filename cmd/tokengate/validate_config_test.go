package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// validate-config names the file once, then lists every problem: decode
// problems (unknown fields, wrong types, duplicate keys) and Validate's.
func TestValidateConfigListsDecodeAndValidateProblems(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	tests := []struct {
		name, yaml string
		want       []string
	}{
		{"decode and validate problems together", `
providers:
- issuer: https://a
  audience: [x]
  jwks_url: ftp://x
  leeway: 30
cache: {size: lots}
default_actoin: public
`, []string{
			": 6 problems",
			"  cache.size: must be an integer, not a string",
			`  unknown field "default_actoin"`,
			`  providers[0]: unknown field "audience"`,
			`  providers[0].leeway: a duration is a string like "30s": cannot unmarshal number into Go value of type string`,
			"  providers[0].audiences: at least one audience is required",
			`  providers[0].jwks_url: must be an http or https URL, not "ftp://x"`,
		}},
		{"duplicate keys", "realm: a\nrealm: b\nproviders: [{issuer: https://a, audiences: [x], jwks_url: https://a/j}]\n", []string{
			": 1 problem",
			`  line 2: key "realm" already set in map`,
		}},
		{"not YAML", "providers: [\n", []string{": 1 problem"}},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(dir, "c"+string(rune('0'+i))+".yaml")
			if err := os.WriteFile(path, []byte(tc.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			if err := run(context.Background(), []string{"validate-config", path}, os.Getenv, &out, &bytes.Buffer{}); err == nil {
				t.Fatal("invalid file accepted")
			}
			lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
			if lines[0] != path+tc.want[0] {
				t.Errorf("first line %q, want %q", lines[0], path+tc.want[0])
			}
			if strings.Count(out.String(), path) != 1 {
				t.Errorf("the file is named %d times:\n%s", strings.Count(out.String(), path), out.String())
			}
			if len(tc.want) > 1 && strings.Join(lines[1:], "\n") != strings.Join(tc.want[1:], "\n") {
				t.Errorf("output:\n%s\nwant:\n%s", strings.Join(lines[1:], "\n"), strings.Join(tc.want[1:], "\n"))
			}
		})
	}
	var out bytes.Buffer
	missing := filepath.Join(dir, "missing.yaml")
	if err := run(context.Background(), []string{"validate-config", missing}, os.Getenv, &out, &bytes.Buffer{}); err == nil ||
		out.String() != missing+": 1 problem\n  cannot read: no such file or directory\n" {
		t.Errorf("missing file: %v\n%s", err, out.String())
	}
}
