package deploy

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/yaml"
)

const (
	release   = "tg"
	namespace = "auth"
)

// renderChart runs helm lint --strict and helm template for a values file
// and decodes every object strictly.
func renderChart(t *testing.T, valuesFile string, set ...string) []rendered {
	t.Helper()
	args := []string{"--namespace", namespace, "-f", valuesFile}
	for _, s := range set {
		args = append(args, "--set", s)
	}
	if out, err := helm(t, append([]string{"lint", "--strict", chartDir(t)}, args...)...); err != nil {
		t.Fatalf("helm lint --strict: %v\n%s", err, out)
	}
	out, err := helm(t, append([]string{"template", release, chartDir(t), "--kube-version", kubeVersion}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := decodeRendered(out)
	if err != nil {
		t.Fatalf("rendered manifests:\n%v", err)
	}
	return objs
}

// chartView indexes one rendering.
type chartView struct {
	objs []rendered
}

func (v chartView) kinds() map[string]int {
	m := map[string]int{}
	for _, o := range v.objs {
		m[o.gvk.Kind]++
	}
	return m
}

func one[T any](t *testing.T, items []T, what string) T {
	t.Helper()
	if len(items) != 1 {
		t.Fatalf("want one %s, got %d", what, len(items))
	}
	return items[0]
}

func byName[T interface{ GetName() string }](items []T, name string) (T, bool) {
	for _, it := range items {
		if it.GetName() == name {
			return it, true
		}
	}
	var zero T
	return zero, false
}

// podSpecs returns every pod template of the rendering, by workload.
func podSpecs(v chartView) map[string]*corev1.PodSpec {
	out := map[string]*corev1.PodSpec{}
	for _, d := range find[*appsv1.Deployment](v.objs) {
		out["Deployment/"+d.Name] = &d.Spec.Template.Spec
	}
	for _, s := range find[*appsv1.StatefulSet](v.objs) {
		out["StatefulSet/"+s.Name] = &s.Spec.Template.Spec
	}
	for _, j := range find[*batchv1.Job](v.objs) {
		out["Job/"+j.Name] = &j.Spec.Template.Spec
	}
	return out
}

// checkHardening holds for every pod the chart renders, whatever the values.
func checkHardening(t *testing.T, v chartView) {
	t.Helper()
	for name, pod := range podSpecs(v) {
		psc := pod.SecurityContext
		if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
			t.Errorf("%s: pod securityContext %+v lacks runAsNonRoot / seccomp RuntimeDefault", name, psc)
		}
		wantToken := strings.HasPrefix(name, "Job/")
		if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken != wantToken {
			t.Errorf("%s: automountServiceAccountToken = %v, want %v (only the keygen hook talks to the API)", name, pod.AutomountServiceAccountToken, wantToken)
		}
		for _, c := range pod.Containers {
			sc := c.SecurityContext
			switch {
			case sc == nil:
				t.Errorf("%s/%s: no securityContext", name, c.Name)
				continue
			case sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot:
				t.Errorf("%s/%s: runAsNonRoot not set", name, c.Name)
			case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
				t.Errorf("%s/%s: readOnlyRootFilesystem not set", name, c.Name)
			case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
				t.Errorf("%s/%s: allowPrivilegeEscalation not false", name, c.Name)
			case sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0:
				t.Errorf("%s/%s: capabilities %+v, want drop ALL", name, c.Name, sc.Capabilities)
			case sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault:
				t.Errorf("%s/%s: seccompProfile %+v", name, c.Name, sc.SeccompProfile)
			}
			if sc.RunAsUser == nil || *sc.RunAsUser != 65532 {
				t.Errorf("%s/%s: runAsUser %v, want 65532 (distroless nonroot)", name, c.Name, sc.RunAsUser)
			}
			if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() {
				t.Errorf("%s/%s: resource requests %v", name, c.Name, c.Resources.Requests)
			}
			if len(c.Command) > 0 {
				t.Errorf("%s/%s: command %v overrides the image's /tokengate entrypoint", name, c.Name, c.Command)
			}
		}
	}
}

// args turns ["--a=b", "--c"] into {"--a": "b", "--c": ""}; a repeated flag fails.
func argMap(t *testing.T, c corev1.Container) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, a := range c.Args[1:] {
		k, v, _ := strings.Cut(a, "=")
		if _, dup := m[k]; dup {
			t.Errorf("%s: flag %s given twice", c.Name, k)
		}
		m[k] = v
	}
	return m
}

// mountedSecret returns the Secret name and key behind a file path in a container.
func mountedSecret(t *testing.T, pod *corev1.PodSpec, c corev1.Container, file string) (secret, key string) {
	t.Helper()
	for _, m := range c.VolumeMounts {
		if filepath.Dir(file) != m.MountPath {
			continue
		}
		for _, vol := range pod.Volumes {
			if vol.Name != m.Name || vol.Secret == nil {
				continue
			}
			for _, it := range vol.Secret.Items {
				if it.Path == filepath.Base(file) {
					return vol.Secret.SecretName, it.Key
				}
			}
		}
	}
	t.Errorf("%s: %s is not a file of a mounted Secret", c.Name, file)
	return "", ""
}

func hasVolumeMount(c corev1.Container, path string) bool {
	return slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.MountPath == path })
}

// checkCommon checks the wiring shared by every values set: ports, probes,
// config, and that both services read the same admin token Secret. Each
// property is a subtest, so a failure names the property that broke.
func checkCommon(t *testing.T, v chartView, fullname string) (refresher, extauthz *corev1.PodSpec) {
	t.Helper()
	pods := podSpecs(v)
	extauthz = pods["Deployment/"+fullname+"-extauthz"]
	if extauthz == nil {
		t.Fatalf("no extauthz Deployment among %v", keys(pods))
	}
	refresher = pods["StatefulSet/"+fullname+"-refresher"]
	if refresher == nil {
		refresher = pods["Deployment/"+fullname+"-refresher"]
	}
	if refresher == nil {
		t.Fatalf("no refresher workload among %v", keys(pods))
	}
	ex := one(t, extauthz.Containers, "extauthz container")
	rf := one(t, refresher.Containers, "refresher container")
	if ex.Args[0] != "extauthz" || rf.Args[0] != "refresher" {
		t.Fatalf("subcommands %q, %q", ex.Args[0], rf.Args[0])
	}
	exArgs, rfArgs := argMap(t, ex), argMap(t, rf)

	t.Run("extauthz probes are gRPC health on the gRPC port", func(t *testing.T) {
		for name, p := range map[string]*corev1.Probe{"liveness": ex.LivenessProbe, "readiness": ex.ReadinessProbe, "startup": ex.StartupProbe} {
			if p == nil || p.GRPC == nil || p.GRPC.Port != extAuthzPort {
				t.Errorf("extauthz %s probe = %+v, want gRPC health on %d", name, p, extAuthzPort)
			}
		}
	})
	t.Run("refresher probes are HTTP readyz and healthz", func(t *testing.T) {
		if p := rf.ReadinessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/readyz" {
			t.Errorf("refresher readiness probe = %+v", p)
		}
		if p := rf.LivenessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/healthz" {
			t.Errorf("refresher liveness probe = %+v", p)
		}
	})
	svcs := find[*corev1.Service](v.objs)
	t.Run("services expose extauthz gRPC 9001 and HTTP 9002, refresher 8080", func(t *testing.T) {
		exSvc, ok := byName(svcs, fullname+"-extauthz")
		if !ok {
			t.Fatal("no extauthz Service")
		}
		var ports []string
		for _, p := range exSvc.Spec.Ports {
			ports = append(ports, fmt.Sprintf("%s/%d/%s/%s", p.Name, p.Port, p.TargetPort.String(), deref(p.AppProtocol)))
		}
		if diff := cmp.Diff([]string{"grpc/9001/grpc/grpc", "http/9002/http/http"}, ports); diff != "" {
			t.Errorf("extauthz Service ports (-want +got):\n%s", diff)
		}
		if _, ok := byName(svcs, fullname+"-extauthz-headless"); !ok {
			t.Error("no headless extauthz Service (examples/envoy/sidecar.yaml and NOTES use it)")
		}
		rfSvc, ok := byName(svcs, fullname+"-refresher")
		if !ok || rfSvc.Spec.Ports[0].Port != 8080 {
			t.Errorf("refresher Service %v", rfSvc)
		}
	})
	t.Run("every service selects a pod template", func(t *testing.T) {
		for _, s := range svcs {
			if !selects(s.Spec.Selector, v) {
				t.Errorf("Service %s selects no pod template: %v", s.Name, s.Spec.Selector)
			}
		}
	})
	t.Run("both services read one admin token Secret from a file", func(t *testing.T) {
		exSecret, exKey := mountedSecret(t, extauthz, ex, exArgs["--admin-token-file"])
		rfSecret, rfKey := mountedSecret(t, refresher, rf, rfArgs["--admin-token-file"])
		if exSecret == "" || exSecret != rfSecret || exKey != rfKey {
			t.Errorf("admin token: extauthz reads %s/%s, refresher %s/%s", exSecret, exKey, rfSecret, rfKey)
		}
		if _, ok := exArgs["--admin-token"]; ok {
			t.Error("extauthz gets the admin token on its command line (visible in the pod spec); use the file")
		}
	})
	t.Run("signing key is a mounted Secret file", func(t *testing.T) {
		if sk := rfArgs["--signing-key"]; sk == "" {
			t.Error("refresher has no --signing-key")
		} else if s, _ := mountedSecret(t, refresher, rf, sk); s == "" {
			t.Error("signing key is not mounted from a Secret")
		}
	})
	t.Run("revocations come from the refresher Service of this release", func(t *testing.T) {
		wantFeed := fmt.Sprintf("http://%s-refresher.%s.svc.cluster.local:8080/v1/revocations", fullname, namespace)
		if got := exArgs["--revocations-url"]; got != wantFeed {
			t.Errorf("--revocations-url = %q, want %q", got, wantFeed)
		}
	})
	t.Run("extauthz config is the mounted ConfigMap and matches the refresher", func(t *testing.T) {
		cm, ok := byName(find[*corev1.ConfigMap](v.objs), fullname+"-extauthz")
		if !ok {
			t.Fatal("no extauthz ConfigMap")
		}
		if exArgs["--config"] != "/etc/tokengate/config/config.yaml" || !hasVolumeMount(ex, "/etc/tokengate/config") {
			t.Errorf("--config %q is not the mounted ConfigMap", exArgs["--config"])
		}
		var cfg struct {
			Providers []struct {
				Issuer    string   `json:"issuer"`
				Audiences []string `json:"audiences"`
				JWKSURL   string   `json:"jwks_url"`
			} `json:"providers"`
		}
		if err := yaml.Unmarshal([]byte(cm.Data["config.yaml"]), &cfg); err != nil || len(cfg.Providers) != 1 {
			t.Fatalf("extauthz config %q: %v", cm.Data["config.yaml"], err)
		}
		if p := cfg.Providers[0]; p.Issuer != rfArgs["--issuer"] || strings.Join(p.Audiences, ",") != rfArgs["--audience"] ||
			p.JWKSURL != fmt.Sprintf("http://%s-refresher.%s.svc.cluster.local:8080/.well-known/jwks.json", fullname, namespace) {
			t.Errorf("extauthz provider %+v does not match the refresher (--issuer %q --audience %q)", p, rfArgs["--issuer"], rfArgs["--audience"])
		}
	})
	t.Run("writable tmp on a read-only root", func(t *testing.T) {
		if !hasVolumeMount(ex, "/tmp") || !hasVolumeMount(rf, "/tmp") {
			t.Error("no /tmp emptyDir")
		}
	})
	t.Run("every pod is hardened", func(t *testing.T) {
		checkHardening(t, v)
	})
	return refresher, extauthz
}

// selects reports whether a selector matches some pod template.
func selects(sel map[string]string, v chartView) bool {
	for _, pod := range podTemplates(v) {
		ok := true
		for k, val := range sel {
			if pod[k] != val {
				ok = false
			}
		}
		if ok {
			return true
		}
	}
	return false
}

func podTemplates(v chartView) []map[string]string {
	var out []map[string]string
	for _, d := range find[*appsv1.Deployment](v.objs) {
		out = append(out, d.Spec.Template.Labels)
	}
	for _, s := range find[*appsv1.StatefulSet](v.objs) {
		out = append(out, s.Spec.Template.Labels)
	}
	return out
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func valuesFile(t *testing.T, name string) string {
	p, err := filepath.Abs(filepath.Join("testdata", "values", name))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestChartBoltDefault(t *testing.T) {
	t.Parallel()
	v := chartView{renderChart(t, valuesFile(t, "bolt-default.yaml"))}
	fullname := release + "-tokengate"
	refresher, _ := checkCommon(t, v, fullname)

	sts := one(t, find[*appsv1.StatefulSet](v.objs), "StatefulSet")
	if sts.Spec.Replicas == nil || *sts.Spec.Replicas != 1 {
		t.Errorf("bolt refresher replicas = %v, want exactly 1", sts.Spec.Replicas)
	}
	if _, ok := byName(find[*appsv1.Deployment](v.objs), fullname+"-refresher"); ok {
		t.Error("bolt store also renders a refresher Deployment")
	}
	pvc := one(t, sts.Spec.VolumeClaimTemplates, "volumeClaimTemplate")
	if pvc.Name != "data" || pvc.Spec.Resources.Requests.Storage().String() != "1Gi" {
		t.Errorf("PVC %s %v", pvc.Name, pvc.Spec.Resources.Requests)
	}
	rf := refresher.Containers[0]
	if argMap(t, rf)["--store"] != "bolt:///data/tokengate.db" || !hasVolumeMount(rf, "/data") {
		t.Errorf("bolt file is not on the PVC: --store %q", argMap(t, rf)["--store"])
	}
	if len(find[*policyv1.PodDisruptionBudget](v.objs)) != 1 {
		t.Error("want a PDB for extauthz only (a single bolt pod cannot have one)")
	}
	checkKeygenHook(t, v, fullname, refresher)

	// The chart makes the admin token Secret.
	secrets := find[*corev1.Secret](v.objs)
	adm, ok := byName(secrets, fullname+"-admin-token")
	if !ok || len(adm.Data["admin-token"]) != 48 {
		t.Errorf("admin token Secret %v: want a 48-character random token", adm)
	}
	if diff := cmp.Diff(map[string]int{"ConfigMap": 1, "Deployment": 1, "Job": 1, "PodDisruptionBudget": 1, "Role": 1, "RoleBinding": 1, "Secret": 1, "Service": 3, "ServiceAccount": 2, "StatefulSet": 1}, v.kinds()); diff != "" {
		t.Errorf("rendered kinds (-want +got):\n%s", diff)
	}
}

// checkKeygenHook: the hook Job creates exactly the Secret the refresher
// mounts, with RBAC limited to it, and runs before install and upgrade.
func checkKeygenHook(t *testing.T, v chartView, fullname string, refresher *corev1.PodSpec) {
	t.Helper()
	job := one(t, find[*batchv1.Job](v.objs), "keygen Job")
	c := one(t, job.Spec.Template.Spec.Containers, "keygen container")
	args := argMap(t, c)
	if c.Args[0] != "keygen" || args["--kubernetes-secret"] == "" {
		t.Fatalf("keygen Job args %v", c.Args)
	}
	rf := refresher.Containers[0]
	secret, key := mountedSecret(t, refresher, rf, argMap(t, rf)["--signing-key"])
	if secret != args["--kubernetes-secret"] || key != args["--kubernetes-secret-key"] {
		t.Errorf("keygen writes %s/%s, the refresher reads %s/%s", args["--kubernetes-secret"], args["--kubernetes-secret-key"], secret, key)
	}
	for _, o := range v.objs {
		if !strings.HasSuffix(o.name, "-keygen") {
			continue
		}
		var meta struct {
			Metadata struct {
				Annotations map[string]string `json:"annotations"`
			} `json:"metadata"`
		}
		json.Unmarshal(o.json, &meta)
		if got := meta.Metadata.Annotations["helm.sh/hook"]; got != "pre-install,pre-upgrade" {
			t.Errorf("%s %s: helm.sh/hook = %q", o.gvk.Kind, o.name, got)
		}
	}
	role := one(t, find[*rbacv1.Role](v.objs), "Role")
	for _, r := range role.Rules {
		if slices.Contains(r.Verbs, "get") && !cmp.Equal(r.ResourceNames, []string{secret}) {
			t.Errorf("Role get rule %+v is not limited to Secret %s", r, secret)
		}
		for _, verb := range r.Verbs {
			if !slices.Contains([]string{"get", "create"}, verb) {
				t.Errorf("Role grants %s", verb)
			}
		}
		if !cmp.Equal(r.Resources, []string{"secrets"}) {
			t.Errorf("Role rule on %v", r.Resources)
		}
	}
	rb := one(t, find[*rbacv1.RoleBinding](v.objs), "RoleBinding")
	if rb.RoleRef.Name != role.Name || one(t, rb.Subjects, "subject").Name != job.Spec.Template.Spec.ServiceAccountName {
		t.Errorf("RoleBinding %+v does not bind Role %s to the Job's ServiceAccount %s", rb, role.Name, job.Spec.Template.Spec.ServiceAccountName)
	}
}

func TestChartRedisThreeReplicas(t *testing.T) {
	t.Parallel()
	v := chartView{renderChart(t, valuesFile(t, "redis-3-replicas.yaml"))}
	fullname := release + "-tokengate"
	refresher, _ := checkCommon(t, v, fullname)
	if len(find[*appsv1.StatefulSet](v.objs)) != 0 {
		t.Error("redis store renders a StatefulSet")
	}
	dep, _ := byName(find[*appsv1.Deployment](v.objs), fullname+"-refresher")
	if dep.Spec.Replicas == nil || *dep.Spec.Replicas != 3 {
		t.Errorf("refresher replicas = %v, want 3", dep.Spec.Replicas)
	}
	rf := refresher.Containers[0]
	args := argMap(t, rf)
	if _, ok := args["--store"]; ok {
		t.Error("the Redis URL (with its password) is on the command line")
	}
	var store *corev1.EnvVar
	for i := range rf.Env {
		if rf.Env[i].Name == "TOKENGATE_STORE" {
			store = &rf.Env[i]
		}
	}
	if store == nil || store.ValueFrom == nil || store.ValueFrom.SecretKeyRef == nil ||
		store.ValueFrom.SecretKeyRef.Name != "shared-redis" || store.ValueFrom.SecretKeyRef.Key != "url" {
		t.Errorf("TOKENGATE_STORE = %+v, want secretKeyRef shared-redis/url", store)
	}
	if args["--redis-timeout"] != "500ms" {
		t.Errorf("--redis-timeout = %q", args["--redis-timeout"])
	}
	if hasVolumeMount(rf, "/data") {
		t.Error("redis refresher mounts /data")
	}
	if len(refresher.TopologySpreadConstraints) == 0 {
		t.Error("redis refresher replicas are not spread")
	}
	if _, ok := byName(find[*policyv1.PodDisruptionBudget](v.objs), fullname+"-refresher"); !ok {
		t.Error("no refresher PDB")
	}
	if _, ok := byName(find[*corev1.Secret](v.objs), fullname+"-redis"); ok {
		t.Error("chart made a Redis Secret although existingSecret is set")
	}
	checkKeygenHook(t, v, fullname, refresher)
}

func TestChartIstio(t *testing.T) {
	t.Parallel()
	objs := renderChart(t, valuesFile(t, "istio.yaml"))
	v := chartView{objs}
	checkCommon(t, v, release+"-tokengate")
	var aps []*AuthorizationPolicy
	for _, o := range objs {
		if o.gvk.Kind == "AuthorizationPolicy" {
			ap := &AuthorizationPolicy{}
			if err := strictJSON(o.json, ap); err != nil {
				t.Fatal(err)
			}
			if err := ap.validate(); err != nil {
				t.Fatal(err)
			}
			aps = append(aps, ap)
		}
	}
	ap := one(t, aps, "AuthorizationPolicy")
	if ap.Namespace != "shop" || ap.spec.GetAction().String() != "CUSTOM" || ap.spec.GetProvider().GetName() != "tokengate-ext-authz" {
		t.Errorf("AuthorizationPolicy %s/%s action %s provider %q", ap.Namespace, ap.Name, ap.spec.GetAction(), ap.spec.GetProvider().GetName())
	}
	if diff := cmp.Diff(map[string]string{"app": "web"}, ap.spec.GetSelector().GetMatchLabels()); diff != "" {
		t.Errorf("selector (-want +got):\n%s", diff)
	}
	notPaths := ap.spec.GetRules()[0].GetTo()[0].GetOperation().GetNotPaths()
	if diff := cmp.Diff([]string{"/healthz", "/v1/token", "/v1/revoke", "/v1/token/revoke", "/.well-known/jwks.json"}, notPaths); diff != "" {
		t.Errorf("notPaths (-want +got):\n%s", diff)
	}
}

func TestChartEverythingOn(t *testing.T) {
	t.Parallel()
	objs := renderChart(t, valuesFile(t, "everything.yaml"))
	v := chartView{objs}
	refresher, extauthz := checkCommon(t, v, "auth")
	if diff := cmp.Diff(map[string]int{"AuthorizationPolicy": 1, "ConfigMap": 1, "Deployment": 2, "HorizontalPodAutoscaler": 1, "NetworkPolicy": 2, "PodDisruptionBudget": 2, "Secret": 1, "Service": 3, "ServiceAccount": 1, "ServiceMonitor": 1}, v.kinds()); diff != "" {
		t.Errorf("rendered kinds (-want +got):\n%s", diff)
	}
	// Existing Secrets: no keygen hook, no admin Secret; the key file and kid are passed.
	rf := refresher.Containers[0]
	args := argMap(t, rf)
	if s, k := mountedSecret(t, refresher, rf, args["--signing-key"]); s != "tokengate-keys" || k != "keys.jwks" || args["--signing-key-id"] != "2026-11" {
		t.Errorf("signing key from %s/%s kid %q", s, k, args["--signing-key-id"])
	}
	if s, k := mountedSecret(t, refresher, rf, args["--admin-token-file"]); s != "tokengate-admin" || k != "token" {
		t.Errorf("admin token from %s/%s", s, k)
	}
	if args["--client-ip-header"] != "X-Forwarded-For" {
		t.Errorf("--client-ip-header = %q", args["--client-ip-header"])
	}
	if args["--redis-sentinel-master"] != "mymaster" || args["--issuer"] != "https://auth.example.com" || args["--audience"] != "shop-api,admin-api" {
		t.Errorf("refresher args %v", rf.Args)
	}
	redis, ok := byName(find[*corev1.Secret](objs), "auth-redis")
	if !ok || !strings.HasPrefix(string(redis.Data["redis-url"]), "redis://:secret@") {
		t.Errorf("chart-made Redis Secret %v", redis)
	}
	ex := extauthz.Containers[0]
	if ex.Image != "ghcr.io/tokengate/tokengate@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef" {
		t.Errorf("image %s does not use the digest", ex.Image)
	}
	if _, ok := argMap(t, ex)["--grpc-reflection"]; !ok {
		t.Error("--grpc-reflection missing")
	}
	// Shutdown and listener limits reach the flags (camelCase key → flag).
	for _, c := range []struct {
		args map[string]string
		want map[string]string
	}{
		{args, map[string]string{"--drain-period": "8s", "--shutdown-grace": "20s", "--http-max-connections": "2048", "--http-write-timeout": "90s"}},
		{argMap(t, ex), map[string]string{"--drain-period": "5s", "--shutdown-grace": "15s", "--grpc-max-connections": "4096", "--grpc-max-concurrent-streams": "512", "--http-max-header-bytes": "1048576"}},
	} {
		for k, v := range c.want {
			if c.args[k] != v {
				t.Errorf("%s = %q, want %q", k, c.args[k], v)
			}
		}
	}
	// HPA owns the replica count.
	dep, _ := byName(find[*appsv1.Deployment](objs), "auth-extauthz")
	if dep.Spec.Replicas != nil {
		t.Errorf("extauthz Deployment sets replicas %d while the HPA scales it", *dep.Spec.Replicas)
	}
	hpa := one(t, find[*autoscalingv2.HorizontalPodAutoscaler](objs), "HPA")
	if hpa.Spec.ScaleTargetRef.Name != "auth-extauthz" || hpa.Spec.MaxReplicas != 12 || deref(hpa.Spec.MinReplicas) != 3 {
		t.Errorf("HPA %+v", hpa.Spec)
	}
	if tsc := one(t, extauthz.TopologySpreadConstraints, "topology spread"); tsc.TopologyKey != "topology.kubernetes.io/zone" {
		t.Errorf("topology spread %+v", tsc)
	}
	// NetworkPolicy: the refresher only from extauthz pods and the listed namespaces.
	np, ok := byName(find[*networkingv1.NetworkPolicy](objs), "auth-refresher")
	if !ok {
		t.Fatal("no refresher NetworkPolicy")
	}
	var peers []string
	for _, rule := range np.Spec.Ingress {
		for _, p := range rule.From {
			switch {
			case p.PodSelector != nil:
				peers = append(peers, "pods:"+p.PodSelector.MatchLabels["app.kubernetes.io/component"])
			case p.NamespaceSelector != nil:
				peers = append(peers, "ns:"+p.NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"])
			}
		}
	}
	if diff := cmp.Diff([]string{"pods:extauthz", "ns:ingress", "ns:shop", "ns:monitoring"}, peers); diff != "" {
		t.Errorf("refresher NetworkPolicy peers (-want +got):\n%s", diff)
	}
	if np.Spec.PodSelector.MatchLabels["app.kubernetes.io/component"] != "refresher" {
		t.Errorf("refresher NetworkPolicy selects %v", np.Spec.PodSelector)
	}
	// ServiceMonitor scrapes both services' http port, not the headless Service.
	for _, o := range objs {
		if o.gvk.Kind != "ServiceMonitor" {
			continue
		}
		var sm ServiceMonitor
		if err := strictJSON(o.json, &sm); err != nil {
			t.Fatal(err)
		}
		if sm.Labels["release"] != "prometheus" || sm.Spec.Endpoints[0].Port != "http" || sm.Spec.Endpoints[0].Path != "/metrics" {
			t.Errorf("ServiceMonitor %+v", sm)
		}
		if diff := cmp.Diff([]string{"refresher", "extauthz"}, sm.Spec.Selector.MatchExpressions[0].Values); diff != "" {
			t.Errorf("ServiceMonitor components (-want +got):\n%s", diff)
		}
	}
	// DPoP nonces: the shared secret mounted, the config pointing at it,
	// the user's own dpop settings kept.
	var excfg struct {
		DPoP struct {
			MaxAge string `json:"max_age"`
			Nonce  struct {
				Enabled    bool   `json:"enabled"`
				SecretFile string `json:"secret_file"`
			} `json:"nonce"`
		} `json:"dpop"`
	}
	excm, _ := byName(find[*corev1.ConfigMap](objs), "auth-extauthz")
	if err := yaml.Unmarshal([]byte(excm.Data["config.yaml"]), &excfg); err != nil {
		t.Fatal(err)
	}
	if !excfg.DPoP.Nonce.Enabled || excfg.DPoP.MaxAge != "30s" {
		t.Errorf("extauthz dpop config %+v", excfg.DPoP)
	}
	if s, k := mountedSecret(t, extauthz, ex, excfg.DPoP.Nonce.SecretFile); s != "tokengate-dpop-nonce" || k != "secret" {
		t.Errorf("DPoP nonce secret from %s/%s", s, k)
	}
	for _, pod := range podSpecs(v) {
		if len(pod.ImagePullSecrets) != 1 || pod.ImagePullSecrets[0].Name != "regcred" {
			t.Errorf("imagePullSecrets %v", pod.ImagePullSecrets)
		}
	}
}

// TestChartSchemaRefuses: values the chart must refuse, each with a message
// that names the problem.
func TestChartSchemaRefuses(t *testing.T) {
	t.Parallel()
	base := valuesFile(t, "bolt-default.yaml")
	tests := []struct {
		name    string
		set     []string
		wantErr string
	}{
		{"bolt with 2 replicas", []string{"refresher.replicas=2"}, "/refresher/replicas': value must be 1"},
		{"redis without a URL", []string{"refresher.store=redis", "refresher.replicas=3"}, "/refresher/redis"},
		{"sentinel without a master", []string{"refresher.store=redis", "refresher.redis.url=redis://r:26379", "refresher.redis.mode=sentinel"}, "/refresher/redis/sentinel/masterName"},
		{"unknown store", []string{"refresher.store=memory"}, "/refresher/store"},
		{"misspelt value", []string{"extauthz.replica=3"}, "additional properties 'replica' not allowed"},
		{"writable root filesystem", []string{"securityContext.readOnlyRootFilesystem=false"}, "/securityContext/readOnlyRootFilesystem"},
		{"running as root allowed", []string{"podSecurityContext.runAsNonRoot=false"}, "/podSecurityContext/runAsNonRoot"},
		{"bad duration", []string{"refresher.accessTTL=15 minutes"}, "/refresher/accessTTL"},
		{"bad signing algorithm", []string{"signingKey.generate.alg=HS256"}, "/signingKey/generate/alg"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			args := []string{"template", release, chartDir(t), "--kube-version", kubeVersion, "-f", base}
			for _, s := range tc.set {
				args = append(args, "--set", s)
			}
			_, err := helm(t, args...)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("helm template error = %v\nwant one containing %q", err, tc.wantErr)
			}
		})
	}
}

// TestChartStrictDecodeCatchesUnknownFields proves the strict decode is
// strict: a misspelt field that helm lint accepts must fail here.
func TestChartStrictDecodeCatchesUnknownFields(t *testing.T) {
	t.Parallel()
	out, err := helm(t, "template", release, chartDir(t), "--kube-version", kubeVersion, "--show-only", "templates/extauthz.yaml")
	if err != nil {
		t.Fatal(err)
	}
	broken := strings.Replace(out, "terminationGracePeriodSeconds:", "terminationGracePeriodSecond:", 1)
	if broken == out {
		t.Fatal("extauthz.yaml no longer renders terminationGracePeriodSeconds; update this test")
	}
	if _, err := decodeRendered(broken); err == nil || !strings.Contains(err.Error(), `unknown field "spec.template.spec.terminationGracePeriodSecond"`) {
		t.Fatalf("decode error = %v, want an unknown field error", err)
	}
}

// TestChartValuesDocumented: every value in values.yaml has a schema entry
// and a row in the chart README.
func TestChartValuesDocumented(t *testing.T) {
	t.Parallel()
	read := func(name string) []byte {
		data, err := os.ReadFile(filepath.Join(chartDir(t), name))
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	var values map[string]any
	if err := yaml.Unmarshal(read("values.yaml"), &values); err != nil {
		t.Fatal(err)
	}
	var schema map[string]any
	if err := json.Unmarshal(read("values.schema.json"), &schema); err != nil {
		t.Fatal(err)
	}
	readme := string(read("README.md"))
	var leaves []string
	var walk func(prefix string, v any, sch map[string]any)
	walk = func(prefix string, v any, sch map[string]any) {
		props, _ := sch["properties"].(map[string]any)
		m, isMap := v.(map[string]any)
		if !isMap || props == nil {
			leaves = append(leaves, prefix)
			if sch["description"] == nil || sch["description"] == "" {
				t.Errorf("schema entry for %s has no description", prefix)
			}
			return
		}
		for k, child := range m {
			p := strings.TrimPrefix(prefix+"."+k, ".")
			csch, ok := props[k].(map[string]any)
			if !ok {
				t.Errorf("value %s is not in values.schema.json", p)
				continue
			}
			walk(p, child, csch)
		}
	}
	walk("", values, schema)
	if len(leaves) < 50 {
		t.Fatalf("found only %d values; the walk is broken", len(leaves))
	}
	for _, leaf := range leaves {
		// A leaf is documented by its own row or by its parent object's row.
		parent := leaf
		documented := false
		for parent != "" {
			if strings.Contains(readme, "| `"+parent+"` |") {
				documented = true
				break
			}
			i := strings.LastIndex(parent, ".")
			if i < 0 {
				break
			}
			parent = parent[:i]
		}
		if !documented {
			t.Errorf("value %s has no row in charts/tokengate/README.md", leaf)
		}
	}
}
