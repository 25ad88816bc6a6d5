package deploy

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	monv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

// The chart's Grafana dashboard and PrometheusRule are checked against what
// Prometheus and the binaries really do: the rule groups go through
// Prometheus's own rule-file loader (expressions, templates, label names),
// and every metric a query names is one the refresher or extauthz exports,
// scraped from the running processes.

var promQL = parser.NewParser(parser.Options{})

// decodePrometheusRule decodes a PrometheusRule strictly into
// prometheus-operator's own type and loads its groups the way Prometheus
// loads a rule file (unknown fields refused): every expression parsed,
// every annotation and label template parsed, label names checked.
func decodePrometheusRule(js []byte) (*monv1.PrometheusRule, error) {
	var pr monv1.PrometheusRule
	if err := strictJSON(js, &pr); err != nil {
		return nil, err
	}
	if len(pr.Spec.Groups) == 0 {
		return nil, errors.New("spec.groups is empty")
	}
	type rule struct {
		Alert       string            `json:"alert,omitempty"`
		Record      string            `json:"record,omitempty"`
		Expr        string            `json:"expr"`
		For         string            `json:"for,omitempty"`
		Labels      map[string]string `json:"labels,omitempty"`
		Annotations map[string]string `json:"annotations,omitempty"`
	}
	type group struct {
		Name  string `json:"name"`
		Rules []rule `json:"rules"`
	}
	var file struct {
		Groups []group `json:"groups"`
	}
	for _, g := range pr.Spec.Groups {
		out := group{Name: g.Name}
		for _, r := range g.Rules {
			if r.Expr.Type != intstr.String { // an integer expression is legal but never meant
				return nil, fmt.Errorf("group %s rule %s%s: expr is not a string", g.Name, r.Alert, r.Record)
			}
			rr := rule{Alert: r.Alert, Record: r.Record, Expr: r.Expr.StrVal, Labels: r.Labels, Annotations: r.Annotations}
			if r.For != nil {
				rr.For = string(*r.For)
			}
			out.Rules = append(out.Rules, rr)
		}
		file.Groups = append(file.Groups, out)
	}
	data, err := yaml.Marshal(file)
	if err != nil {
		return nil, err
	}
	if _, errs := rulefmt.Parse(data, false, model.UTF8Validation, promQL, slog.New(slog.DiscardHandler)); len(errs) > 0 {
		return nil, fmt.Errorf("prometheus rule loader: %w", errors.Join(errs...))
	}
	return &pr, nil
}

// selectors returns the vector selectors of a PromQL expression.
func selectors(t *testing.T, expr string) []*parser.VectorSelector {
	t.Helper()
	e, err := promQL.ParseExpr(expr)
	if err != nil {
		t.Fatalf("%s: %v", expr, err)
	}
	var out []*parser.VectorSelector
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		if vs, ok := n.(*parser.VectorSelector); ok {
			out = append(out, vs)
		}
		return nil
	})
	return out
}

func selectorName(vs *parser.VectorSelector) string {
	if vs.Name != "" {
		return vs.Name
	}
	for _, m := range vs.LabelMatchers {
		if m.Name == model.MetricNameLabel && m.Type == labels.MatchEqual {
			return m.Value
		}
	}
	return ""
}

func hasMatcher(vs *parser.VectorSelector, name string, typ labels.MatchType, value string) bool {
	return slices.ContainsFunc(vs.LabelMatchers, func(m *labels.Matcher) bool {
		return m.Name == name && m.Type == typ && m.Value == value
	})
}

// notExported are the series alerts may name that no tokengate binary
// exports, each with where it comes from.
var notExported = map[string]string{
	"up":                    "Prometheus adds it to every scrape target",
	"kube_pod_status_ready": "kube-state-metrics (prometheusRule.kubeStateMetrics)",
}

// wantAlerts are the chart's alerts, each with its severity: every one has
// a section in docs/operations.md.
var wantAlerts = map[string]string{
	"TokengateExtauthzKeysUnavailable":   "critical",
	"TokengateJWKSFetchFailing":          "warning",
	"TokengateJWKSStale":                 "warning",
	"TokengateRevocationsUnavailable":    "critical",
	"TokengateRevocationFeedDown":        "warning",
	"TokengateRevocationFeedLagging":     "warning",
	"TokengateDenialRatioHigh":           "warning",
	"TokengateCheckLatencyHigh":          "warning",
	"TokengateRefresherStoreErrors":      "critical",
	"TokengateRefreshTokenReuseDetected": "warning",
	"TokengateTargetDown":                "critical",
	"TokengatePodNotReady":               "warning",
}

// monitoring is one rendering's dashboard and rules.
type monitoring struct {
	dashboardCM *corev1.ConfigMap
	rule        *monv1.PrometheusRule
}

func renderMonitoring(t *testing.T, set ...string) monitoring {
	t.Helper()
	var m monitoring
	for _, o := range renderChart(t, valuesFile(t, "monitoring.yaml"), set...) {
		switch {
		case o.gvk.Kind == "PrometheusRule":
			pr, err := decodePrometheusRule(o.json)
			if err != nil {
				t.Fatal(err)
			}
			m.rule = pr
		case o.gvk.Kind == "ConfigMap" && strings.HasSuffix(o.name, "-dashboard"):
			m.dashboardCM = o.obj.(*corev1.ConfigMap)
		}
	}
	if m.rule == nil || m.dashboardCM == nil {
		t.Fatalf("rendering has PrometheusRule %v, dashboard ConfigMap %v", m.rule != nil, m.dashboardCM != nil)
	}
	return m
}

// dashboard is the part of Grafana's dashboard JSON the test reads.
type dashboard struct {
	UID    string `json:"uid"`
	Title  string `json:"title"`
	Panels []struct {
		Type    string `json:"type"`
		Title   string `json:"title"`
		Targets []struct {
			Expr string `json:"expr"`
		} `json:"targets"`
	} `json:"panels"`
	Templating struct {
		List []struct {
			Name  string `json:"name"`
			Query any    `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

// grafanaVars replaces the dashboard's variables by values PromQL parses.
var grafanaVars = strings.NewReplacer("$__rate_interval", "5m", "${namespace}", namespace, "$namespace", namespace)

var labelValues = regexp.MustCompile(`^label_values\(([a-zA-Z_:][a-zA-Z0-9_:]*),\s*[a-zA-Z_][a-zA-Z0-9_]*\)$`)

// queries returns every PromQL expression of the dashboard (variables
// replaced) and the metrics its template variables read.
func (d dashboard) queries(t *testing.T) (exprs, varMetrics []string) {
	t.Helper()
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			if tg.Expr == "" {
				t.Errorf("panel %q has a target without expr", p.Title)
				continue
			}
			exprs = append(exprs, grafanaVars.Replace(tg.Expr))
		}
	}
	for _, v := range d.Templating.List {
		q, ok := v.Query.(map[string]any)
		if !ok {
			continue // the datasource variable
		}
		s, _ := q["query"].(string)
		m := labelValues.FindStringSubmatch(s)
		if m == nil {
			t.Errorf("variable %s: query %q is not label_values(metric, label)", v.Name, s)
			continue
		}
		varMetrics = append(varMetrics, m[1])
	}
	return exprs, varMetrics
}

func (m monitoring) dashboard(t *testing.T) dashboard {
	t.Helper()
	var d dashboard
	if err := json.Unmarshal([]byte(m.dashboardCM.Data["tokengate.json"]), &d); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	return d
}

// TestChartMonitoring: the dashboard ConfigMap and the PrometheusRule as
// rendered — placement values, every alert present with a severity, a
// summary, a description and a runbook section that exists, every query
// parsed and scoped to the release.
func TestChartMonitoring(t *testing.T) {
	t.Parallel()
	m := renderMonitoring(t)

	t.Run("dashboard ConfigMap for the Grafana sidecar", func(t *testing.T) {
		cm := m.dashboardCM
		if cm.Namespace != "monitoring" || cm.Labels["grafana_dashboard"] != "1" || cm.Labels["team"] != "identity" || cm.Annotations["grafana_folder"] != "Auth" {
			t.Errorf("dashboard ConfigMap %s/%s labels %v annotations %v", cm.Namespace, cm.Name, cm.Labels, cm.Annotations)
		}
		file, err := os.ReadFile(filepath.Join(chartDir(t), "files", "dashboard.json"))
		if err != nil {
			t.Fatal(err)
		}
		if strings.TrimSpace(cm.Data["tokengate.json"]) != strings.TrimSpace(string(file)) {
			t.Error("the ConfigMap's tokengate.json is not files/dashboard.json")
		}
		d := m.dashboard(t)
		if d.UID != "tokengate" || d.Title == "" || len(d.Panels) < 10 {
			t.Errorf("dashboard uid %q title %q with %d panels", d.UID, d.Title, len(d.Panels))
		}
	})
	t.Run("dashboard queries parse and follow the namespace variable", func(t *testing.T) {
		exprs, _ := m.dashboard(t).queries(t)
		for _, e := range exprs {
			for _, vs := range selectors(t, e) {
				if !hasMatcher(vs, "namespace", labels.MatchRegexp, namespace) {
					t.Errorf("%s: selector %s lacks namespace=~\"$namespace\"", e, vs)
				}
			}
		}
	})

	t.Run("PrometheusRule placement", func(t *testing.T) {
		if m.rule.Namespace != namespace || m.rule.Labels["release"] != "prometheus" {
			t.Errorf("PrometheusRule %s/%s labels %v", m.rule.Namespace, m.rule.Name, m.rule.Labels)
		}
	})
	ops, err := os.ReadFile(filepath.Join(repoRoot(t), "docs", "operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, g := range m.rule.Spec.Groups {
		for _, r := range g.Rules {
			got[r.Alert] = r.Labels["severity"]
			t.Run(r.Alert, func(t *testing.T) {
				if r.Labels["team"] != "identity" {
					t.Errorf("labels %v lack additionalAlertLabels (team: identity)", r.Labels)
				}
				if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
					t.Errorf("annotations %v: summary and description are required", r.Annotations)
				}
				base, anchor, _ := strings.Cut(r.Annotations["runbook_url"], "#")
				if base != "https://github.com/tokengate/tokengate/blob/main/docs/operations.md" || anchor != strings.ToLower(r.Alert) {
					t.Errorf("runbook_url %q, want …/docs/operations.md#%s", r.Annotations["runbook_url"], strings.ToLower(r.Alert))
				}
				if !strings.Contains(string(ops), "\n#### "+r.Alert+"\n") {
					t.Errorf("docs/operations.md has no section \"#### %s\" (the runbook_url's anchor)", r.Alert)
				}
				for _, vs := range selectors(t, r.Expr.StrVal) {
					if !hasMatcher(vs, "namespace", labels.MatchEqual, namespace) {
						t.Errorf("selector %s lacks namespace=%q (the default prometheusRule.selector)", vs, namespace)
					}
				}
			})
		}
	}
	if diff := cmp.Diff(wantAlerts, got); diff != "" {
		t.Errorf("alerts and severities (-want +got):\n%s", diff)
	}

	t.Run("selector, disabled alerts and kube-state-metrics off", func(t *testing.T) {
		t.Parallel()
		m := renderMonitoring(t, `prometheusRule.selector=cluster="eu1"\,namespace="auth"`,
			"prometheusRule.disabled={TokengateJWKSStale}", "prometheusRule.kubeStateMetrics=false")
		for _, g := range m.rule.Spec.Groups {
			for _, r := range g.Rules {
				if r.Alert == "TokengateJWKSStale" || r.Alert == "TokengatePodNotReady" {
					t.Errorf("%s rendered although left out", r.Alert)
				}
				for _, vs := range selectors(t, r.Expr.StrVal) {
					if !hasMatcher(vs, "cluster", labels.MatchEqual, "eu1") {
						t.Errorf("%s: selector %s lacks the configured cluster=\"eu1\"", r.Alert, vs)
					}
				}
			}
		}
	})
}

// TestChartMonitoringBrokenRuleIsCaught proves the rule check checks: an
// expression Prometheus cannot parse, or an unknown field, fails the decode.
func TestChartMonitoringBrokenRuleIsCaught(t *testing.T) {
	t.Parallel()
	out, err := helm(t, "template", release, chartDir(t), "--kube-version", kubeVersion, "--namespace", namespace,
		"--set", "prometheusRule.enabled=true", "--show-only", "templates/prometheusrule.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ name, old, new, wantErr string }{
		{"bad PromQL", "> 0\n", "> > 0\n", "could not parse expression"},
		{"unknown field", "for: 2m", "fore: 2m", `unknown field "fore"`},
		{"bad template", "{{ $value | humanize }}", "{{ $value | humanize }", `annotation "description": template`},
	} {
		broken := strings.Replace(out, c.old, c.new, 1)
		if broken == out {
			t.Fatalf("%s: the replacement no longer applies; update this test", c.name)
		}
		if _, err := decodeRendered(broken); err == nil || !strings.Contains(err.Error(), c.wantErr) {
			t.Errorf("%s: decode error = %v, want one containing %q", c.name, err, c.wantErr)
		}
	}
}

// scrapeNames returns the series names a /metrics page can produce:
// counters and gauges by name, histograms as _bucket, _sum and _count,
// summaries as the name, _sum and _count.
func scrapeNames(t *testing.T, url string) map[string]bool {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	names := map[string]bool{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 4 || f[0] != "#" || f[1] != "TYPE" {
			continue
		}
		switch name, kind := f[2], f[3]; kind {
		case "histogram":
			names[name+"_bucket"], names[name+"_sum"], names[name+"_count"] = true, true, true
		case "summary":
			names[name], names[name+"_sum"], names[name+"_count"] = true, true, true
		default:
			names[name] = true
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(names) == 0 {
		t.Fatalf("GET %s: no metric families", url)
	}
	return names
}

// exercise makes the requests that give every labelled histogram series:
// a session started, refreshed and revoked on the refresher, checks allowed
// (a cache miss, then a hit) and denied on extauthz.
func exercise(t *testing.T, s runningChart) {
	t.Helper()
	rf := fmt.Sprintf("http://127.0.0.1:%d", s.refresher)
	call := func(req *http.Request, want int) map[string]any {
		t.Helper()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != want {
			t.Fatalf("%s %s: %d %s, want %d", req.Method, req.URL.Path, resp.StatusCode, body, want)
		}
		var out map[string]any
		json.Unmarshal(body, &out)
		return out
	}
	req, _ := http.NewRequest("POST", rf+"/v1/sessions", strings.NewReader(`{"sub":"alice"}`))
	req.Header.Set("Authorization", "Bearer "+s.adminToken)
	req.Header.Set("Content-Type", "application/json")
	pair := call(req, http.StatusCreated)
	form := func(path string, v url.Values) *http.Request {
		req, _ := http.NewRequest("POST", rf+path, strings.NewReader(v.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		return req
	}
	pair = call(form("/v1/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {fmt.Sprint(pair["refresh_token"])}}), http.StatusOK)

	authz := fmt.Sprintf("http://127.0.0.1:%d/authz/api/orders", s.extauthzHTTP)
	for range 2 {
		req, _ := http.NewRequest("GET", authz, nil)
		req.Header.Set("Authorization", "Bearer "+fmt.Sprint(pair["access_token"]))
		call(req, http.StatusOK)
	}
	req, _ = http.NewRequest("GET", authz, nil)
	call(req, http.StatusUnauthorized)

	call(form("/v1/revoke", url.Values{"token": {fmt.Sprint(pair["refresh_token"])}}), http.StatusOK)
}

// TestMonitoringMetricsExist: every metric a dashboard query, a dashboard
// variable or an alert names is one the running refresher or extauthz
// exports (a few named series come from Prometheus itself or
// kube-state-metrics), and every tokengate_ metric they export is on the
// dashboard.
func TestMonitoringMetricsExist(t *testing.T) {
	t.Parallel()
	objs := renderChart(t, valuesFile(t, "monitoring.yaml"))
	s := startChartServices(t, objs)
	exercise(t, s)
	exported := scrapeNames(t, fmt.Sprintf("http://127.0.0.1:%d/metrics", s.refresher))
	for n := range scrapeNames(t, fmt.Sprintf("http://127.0.0.1:%d/metrics", s.extauthzHTTP)) {
		exported[n] = true
	}
	// The families this test relies on being there after exercise: if the
	// scrape misses them, the comparison below proves nothing.
	for _, n := range []string{"tokengate_refresher_store_latency_seconds_bucket", "tokengate_extauthz_check_duration_seconds_bucket",
		"tokengate_extauthz_jwks_keys", "tokengate_extauthz_revocations_feed_up", "process_resident_memory_bytes", "go_goroutines"} {
		if !exported[n] {
			t.Fatalf("%s not scraped; exported: %v", n, keys(exported))
		}
	}

	m := monitoring{}
	for _, o := range objs {
		switch {
		case o.gvk.Kind == "PrometheusRule":
			pr, err := decodePrometheusRule(o.json)
			if err != nil {
				t.Fatal(err)
			}
			m.rule = pr
		case o.gvk.Kind == "ConfigMap" && strings.HasSuffix(o.name, "-dashboard"):
			m.dashboardCM = o.obj.(*corev1.ConfigMap)
		}
	}
	named := map[string][]string{} // metric → where
	exprs, varMetrics := m.dashboard(t).queries(t)
	for _, e := range exprs {
		for _, vs := range selectors(t, e) {
			named[selectorName(vs)] = append(named[selectorName(vs)], "dashboard: "+e)
		}
	}
	for _, n := range varMetrics {
		named[n] = append(named[n], "dashboard variable")
	}
	for _, g := range m.rule.Spec.Groups {
		for _, r := range g.Rules {
			for _, vs := range selectors(t, r.Expr.StrVal) {
				named[selectorName(vs)] = append(named[selectorName(vs)], "alert "+r.Alert)
			}
		}
	}
	for n, where := range named {
		if _, ok := notExported[n]; ok || exported[n] {
			continue
		}
		t.Errorf("%q is not exported by the refresher or extauthz; named by %v", n, where)
	}
	// And the other way: the dashboard shows every tokengate metric.
	onDashboard := map[string]bool{}
	for _, e := range exprs {
		for _, vs := range selectors(t, e) {
			onDashboard[selectorName(vs)] = true
		}
	}
	for n := range exported {
		if strings.HasPrefix(n, "tokengate_") && !onDashboard[n] && !strings.HasSuffix(n, "_sum") && !strings.HasSuffix(n, "_count") {
			t.Errorf("%s is exported but on no dashboard panel (charts/tokengate/files/dashboard.json)", n)
		}
	}
}

// TestChartMonitoringSchemaRefuses: monitoring values the schema refuses,
// each with a message naming the value.
func TestChartMonitoringSchemaRefuses(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, flag, set, wantErr string }{
		{"unknown alert left out", "--set", "prometheusRule.disabled={TokengateNoSuchAlert}", "/prometheusRule/disabled/0"},
		{"ratio above 1", "--set", "prometheusRule.thresholds.denialRatio=2", "/prometheusRule/thresholds/denialRatio': maximum"},
		{"selector with braces", "--set-string", "prometheusRule.selector={namespace=\"a\"}", "/prometheusRule/selector"},
		{"misspelt value", "--set", "grafanaDashboard.label.x=y", "additional properties 'label' not allowed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := helm(t, "template", release, chartDir(t), "--kube-version", kubeVersion, "-f", valuesFile(t, "monitoring.yaml"), tc.flag, tc.set)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("helm template error = %v\nwant one containing %q", err, tc.wantErr)
			}
		})
	}
}
