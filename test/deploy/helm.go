package deploy

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	kjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"
)

// kubeVersion is what `helm template` renders for; the chart needs ≥ 1.24.
const kubeVersion = "1.31.0"

// helmBin finds the pinned helm that .ci/run installs. Missing helm fails
// under CI and skips elsewhere.
func helmBin(t testing.TB) string {
	t.Helper()
	if p, err := exec.LookPath("helm"); err == nil {
		return p
	}
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		p := filepath.Join(strings.TrimSpace(string(out)), "bin", "helm")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	msg := "helm not found; install it with: go install helm.sh/helm/v3/cmd/helm@v3.22.0"
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

func chartDir(t testing.TB) string { return filepath.Join(repoRoot(t), "charts", "tokengate") }

// helm runs helm and returns stdout, or the error with stderr.
func helm(t testing.TB, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(helmBin(t), args...)
	// No user config or cache may change what the chart renders.
	home := t.TempDir()
	cmd.Env = append(os.Environ(), "HELM_CONFIG_HOME="+home, "HELM_CACHE_HOME="+home, "HELM_DATA_HOME="+home)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("helm %s: %w\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}

// rendered is one object of `helm template` output.
type rendered struct {
	source string // "# Source:" comment
	gvk    schema.GroupVersionKind
	name   string
	ns     string
	json   []byte
	obj    runtime.Object // typed, for kinds in client-go's scheme
}

// strictCodec decodes YAML with client-go's scheme and fails on unknown or
// duplicate fields (helm lint does not catch a misspelt field).
var strictCodec = kjson.NewSerializerWithOptions(kjson.DefaultMetaFactory, scheme.Scheme, scheme.Scheme,
	kjson.SerializerOptions{Yaml: true, Strict: true})

// splitManifests splits a multi-document YAML stream.
func splitManifests(out string) ([][]byte, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(strings.NewReader(out)))
	var docs [][]byte
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, err
		}
		if len(bytes.TrimSpace(stripComments(doc))) == 0 {
			continue
		}
		docs = append(docs, doc)
	}
}

func stripComments(doc []byte) []byte {
	var b bytes.Buffer
	for _, line := range bytes.Split(doc, []byte("\n")) {
		if !bytes.HasPrefix(bytes.TrimSpace(line), []byte("#")) {
			b.Write(line)
			b.WriteByte('\n')
		}
	}
	return b.Bytes()
}

// decodeRendered decodes every document strictly: built-in kinds through
// client-go's scheme, the CRDs the chart uses into local structs with
// unknown fields refused and required fields checked.
func decodeRendered(out string) ([]rendered, error) {
	docs, err := splitManifests(out)
	if err != nil {
		return nil, err
	}
	var objs []rendered
	var errs []error
	for _, doc := range docs {
		var head struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Metadata   struct {
				Name      string `json:"name"`
				Namespace string `json:"namespace"`
			} `json:"metadata"`
		}
		js, err := yaml.YAMLToJSON(doc)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", sourceOf(doc), err))
			continue
		}
		if err := json.Unmarshal(js, &head); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", sourceOf(doc), err))
			continue
		}
		r := rendered{source: sourceOf(doc), gvk: schema.FromAPIVersionAndKind(head.APIVersion, head.Kind), name: head.Metadata.Name, ns: head.Metadata.Namespace, json: js}
		if r.name == "" {
			errs = append(errs, fmt.Errorf("%s: %s without metadata.name", r.source, r.gvk.Kind))
		}
		if scheme.Scheme.Recognizes(r.gvk) {
			obj, _, err := strictCodec.Decode(doc, nil, nil)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s (%s): strict decode: %w", r.source, r.gvk.Kind, err))
				continue
			}
			r.obj = obj
		} else if err := decodeCRD(r.gvk, js); err != nil {
			errs = append(errs, fmt.Errorf("%s (%s): %w", r.source, r.gvk, err))
			continue
		}
		objs = append(objs, r)
	}
	return objs, errors.Join(errs...)
}

func sourceOf(doc []byte) string {
	for _, line := range strings.Split(string(doc), "\n") {
		if s, ok := strings.CutPrefix(line, "# Source: "); ok {
			return s
		}
	}
	return "(no source)"
}

// strictJSON decodes into v refusing unknown fields.
func strictJSON(js []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

func decodeCRD(gvk schema.GroupVersionKind, js []byte) error {
	switch gvk {
	case schema.GroupVersionKind{Group: "monitoring.coreos.com", Version: "v1", Kind: "ServiceMonitor"}:
		var sm ServiceMonitor
		if err := strictJSON(js, &sm); err != nil {
			return err
		}
		return sm.validate()
	case schema.GroupVersionKind{Group: "monitoring.coreos.com", Version: "v1", Kind: "PrometheusRule"}:
		_, err := decodePrometheusRule(js)
		return err
	case schema.GroupVersionKind{Group: "cert-manager.io", Version: "v1", Kind: "Certificate"}:
		var c Certificate
		if err := strictJSON(js, &c); err != nil {
			return err
		}
		return c.validate()
	case schema.GroupVersionKind{Group: "security.istio.io", Version: "v1", Kind: "AuthorizationPolicy"}:
		var ap AuthorizationPolicy
		if err := strictJSON(js, &ap); err != nil {
			return err
		}
		return ap.validate()
	}
	return fmt.Errorf("kind not known to client-go's scheme nor to this test; add a strict decoder for it")
}

// find returns the rendered objects of a kind.
func find[T runtime.Object](objs []rendered) []T {
	var out []T
	for _, o := range objs {
		if v, ok := o.obj.(T); ok {
			out = append(out, v)
		}
	}
	return out
}
