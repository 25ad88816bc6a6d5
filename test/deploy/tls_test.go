package deploy

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
)

// upstreamTLS is the UpstreamTlsContext of a cluster's transport socket.
func upstreamTLS(t *testing.T, c *clusterv3.Cluster) *tlsv3.UpstreamTlsContext {
	t.Helper()
	ts := c.GetTransportSocket()
	if ts.GetName() != "envoy.transport_sockets.tls" {
		t.Fatalf("cluster %s: transport socket %q, want envoy.transport_sockets.tls", c.GetName(), ts.GetName())
	}
	u := &tlsv3.UpstreamTlsContext{}
	if err := ts.GetTypedConfig().UnmarshalTo(u); err != nil {
		t.Fatalf("cluster %s: %v", c.GetName(), err)
	}
	return u
}

// TestEnvoyFrontProxyTLS: the TLS variant of the front proxy talks mutual
// TLS to extauthz (client certificate, CA, the Service's name, TLS 1.2+,
// ALPN h2 for gRPC) and TLS to the refresher, and is otherwise
// front-proxy.yaml (the same listener, routes and filters).
func TestEnvoyFrontProxyTLS(t *testing.T) {
	t.Parallel()
	root := repoRoot(t)
	if !slices.Contains(envoyYAMLs(t), filepath.Join(root, "examples/envoy/front-proxy-tls.yaml")) {
		t.Fatal("front-proxy-tls.yaml is not among the Envoy configs the strict decode test walks")
	}
	cfg := decodeEnvoy(t, filepath.Join(root, "examples/envoy/front-proxy-tls.yaml"))
	plain := decodeEnvoy(t, filepath.Join(root, "examples/envoy/front-proxy.yaml"))
	checkWiring(t, cfg)
	if !proto.Equal(cfg.bootstrap.GetStaticResources().GetListeners()[0], plain.bootstrap.GetStaticResources().GetListeners()[0]) {
		t.Error("front-proxy-tls.yaml's listener differs from front-proxy.yaml's; only the clusters should")
	}
	clusters := map[string]*clusterv3.Cluster{}
	for _, c := range cfg.bootstrap.GetStaticResources().GetClusters() {
		clusters[c.GetName()] = c
	}

	ea := upstreamTLS(t, clusters["tokengate_extauthz"])
	ctx := ea.GetCommonTlsContext()
	if certs := ctx.GetTlsCertificates(); len(certs) != 1 || certs[0].GetCertificateChain().GetFilename() == "" || certs[0].GetPrivateKey().GetFilename() == "" {
		t.Errorf("tokengate_extauthz presents no client certificate (mutual TLS): %v", certs)
	}
	if !slices.Contains(ctx.GetAlpnProtocols(), "h2") {
		t.Errorf("tokengate_extauthz ALPN %v lacks h2 (gRPC over TLS needs it)", ctx.GetAlpnProtocols())
	}
	for name, c := range map[string]*clusterv3.Cluster{"tokengate_extauthz": clusters["tokengate_extauthz"], "refresher": clusters["refresher"]} {
		u := upstreamTLS(t, c)
		v := u.GetCommonTlsContext().GetValidationContext()
		if v.GetTrustedCa().GetFilename() == "" {
			t.Errorf("%s: no trusted CA: the server certificate would not be verified", name)
		}
		sans := v.GetMatchTypedSubjectAltNames()
		if len(sans) == 0 || sans[0].GetMatcher().GetExact() == "" {
			t.Errorf("%s: no subject name to match: any certificate of the CA would do", name)
		}
		if u.GetSni() == "" {
			t.Errorf("%s: no SNI", name)
		}
		if got := u.GetCommonTlsContext().GetTlsParams().GetTlsMinimumProtocolVersion(); got != tlsv3.TlsParameters_TLSv1_2 {
			t.Errorf("%s: minimum TLS version %v, want TLSv1_2", name, got)
		}
	}
	if certs := upstreamTLS(t, clusters["refresher"]).GetCommonTlsContext().GetTlsCertificates(); len(certs) != 0 {
		t.Error("refresher cluster presents a client certificate; the refresher serves browsers and asks for none")
	}
	if clusters["app"].GetTransportSocket() != nil {
		t.Error("the app cluster changed; only tokengate's clusters should")
	}
}

// TestChartTLS: tls.* mounts the Secret, wires the flags, keeps every probe
// working (HTTPS httpGet for the refresher; `tokengate healthcheck` exec
// probes over grpcs with the pod's certificate for extauthz, since the
// kubelet's gRPC probes speak no TLS and no kubelet probe presents a client
// certificate), points extauthz at https, and renders the cert-manager
// Certificate and a TLS ServiceMonitor.
func TestChartTLS(t *testing.T) {
	t.Parallel()
	objs := renderChart(t, valuesFile(t, "tls.yaml"))
	v := chartView{objs}
	checkHardening(t, v)
	fullname := release + "-tokengate"
	pods := podSpecs(v)
	exPod, rfPod := pods["Deployment/"+fullname+"-extauthz"], pods["StatefulSet/"+fullname+"-refresher"]
	if exPod == nil || rfPod == nil {
		t.Fatalf("workloads %v", keys(pods))
	}
	ex, rf := exPod.Containers[0], rfPod.Containers[0]
	exArgs, rfArgs := argMap(t, ex), argMap(t, rf)
	secret := fullname + "-tls"

	tlsDir := func(pod *corev1.PodSpec, c corev1.Container) {
		t.Helper()
		var vol string
		for _, m := range c.VolumeMounts {
			if m.MountPath == "/etc/tokengate/tls" {
				vol = m.Name
				if m.SubPath != "" {
					t.Errorf("%s: TLS Secret mounted with subPath: a rotation would never reach the pod", c.Name)
				}
			}
		}
		for _, pv := range pod.Volumes {
			if pv.Name == vol && pv.Secret != nil && pv.Secret.SecretName == secret {
				return
			}
		}
		t.Errorf("%s: /etc/tokengate/tls is not Secret %s", c.Name, secret)
	}
	tlsDir(exPod, ex)
	tlsDir(rfPod, rf)
	for name, args := range map[string]map[string]string{"extauthz": exArgs, "refresher": rfArgs} {
		if args["--tls-cert-file"] != "/etc/tokengate/tls/tls.crt" || args["--tls-key-file"] != "/etc/tokengate/tls/tls.key" {
			t.Errorf("%s: --tls-cert-file %q --tls-key-file %q", name, args["--tls-cert-file"], args["--tls-key-file"])
		}
	}
	if exArgs["--tls-client-ca-file"] != "/etc/tokengate/tls/ca.crt" {
		t.Errorf("extauthz --tls-client-ca-file = %q, want the Secret's ca.crt (tls.clientAuth)", exArgs["--tls-client-ca-file"])
	}
	if _, ok := rfArgs["--tls-client-ca-file"]; ok {
		t.Error("refresher requires client certificates; browsers call it")
	}
	wantFeed := fmt.Sprintf("https://%s-refresher.%s.svc.cluster.local:8080/v1/revocations", fullname, namespace)
	if got := exArgs["--revocations-url"]; got != wantFeed {
		t.Errorf("--revocations-url = %q, want %q", got, wantFeed)
	}
	env := map[string]string{}
	var envNames []string
	for _, e := range ex.Env {
		env[e.Name] = e.Value
		envNames = append(envNames, e.Name)
	}
	if env["SSL_CERT_FILE"] != "/etc/tokengate/tls/ca.crt" || env["SSL_CERT_DIR"] != "/etc/ssl/certs" {
		t.Errorf("extauthz does not trust ca.crt besides the system roots: env %v", env)
	}

	for name, p := range map[string]*corev1.Probe{"liveness": ex.LivenessProbe, "readiness": ex.ReadinessProbe, "startup": ex.StartupProbe} {
		if p == nil || p.Exec == nil {
			t.Errorf("extauthz %s probe = %+v, want exec tokengate healthcheck", name, p)
			continue
		}
		cmd := p.Exec.Command
		want := []string{"/tokengate", "healthcheck", "--timeout=2s", "--tls-ca-file=/etc/tokengate/tls/ca.crt",
			"--tls-server-name=" + fullname + "-extauthz", "--tls-cert-file=/etc/tokengate/tls/tls.crt",
			"--tls-key-file=/etc/tokengate/tls/tls.key", fmt.Sprintf("grpcs://127.0.0.1:%d", extAuthzPort)}
		if !slices.Equal(cmd, want) {
			t.Errorf("extauthz %s probe command %q, want %q", name, cmd, want)
		}
		if p.TimeoutSeconds < 3 {
			t.Errorf("extauthz %s probe timeout %ds is shorter than the probe's own --timeout", name, p.TimeoutSeconds)
		}
		checkInvocation(t, "extauthz "+name+" probe", cmd[1:], nil)
	}
	for name, p := range map[string]*corev1.Probe{"liveness": rf.LivenessProbe, "readiness": rf.ReadinessProbe, "startup": rf.StartupProbe} {
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Scheme != corev1.URISchemeHTTPS {
			t.Errorf("refresher %s probe = %+v, want httpGet scheme HTTPS", name, p)
		}
	}
	checkInvocation(t, "extauthz", ex.Args, envNames)
	checkInvocation(t, "refresher", rf.Args, nil)

	var cert Certificate
	var sm ServiceMonitor
	for _, o := range objs {
		switch o.gvk.Kind {
		case "Certificate":
			if err := json.Unmarshal(o.json, &cert); err != nil {
				t.Fatal(err)
			}
		case "ServiceMonitor":
			if err := json.Unmarshal(o.json, &sm); err != nil {
				t.Fatal(err)
			}
		}
	}
	if cert.Spec.SecretName != secret || cert.Spec.IssuerRef.Name != "tokengate-ca" || cert.Spec.IssuerRef.Kind != "ClusterIssuer" {
		t.Errorf("Certificate spec %+v", cert.Spec)
	}
	for _, name := range []string{fullname + "-extauthz", fullname + "-refresher", fullname + "-refresher.auth.svc.cluster.local", "auth.example.com"} {
		if !slices.Contains(cert.Spec.DNSNames, name) {
			t.Errorf("Certificate dnsNames %v lack %s", cert.Spec.DNSNames, name)
		}
	}
	if !slices.Contains(cert.Spec.Usages, "client auth") || !slices.Contains(cert.Spec.Usages, "server auth") {
		t.Errorf("Certificate usages %v: the pod's certificate serves and (probes, Prometheus) authenticates", cert.Spec.Usages)
	}
	if len(sm.Spec.Endpoints) != 1 {
		t.Fatalf("ServiceMonitor endpoints %+v", sm.Spec.Endpoints)
	}
	ep := sm.Spec.Endpoints[0]
	if ep.Scheme != "https" || ep.TLSConfig == nil || ep.TLSConfig.CA == nil || ep.TLSConfig.CA.Secret.Key != "ca.crt" ||
		ep.TLSConfig.Cert == nil || ep.TLSConfig.KeySecret == nil || ep.TLSConfig.ServerName == "" {
		t.Errorf("ServiceMonitor endpoint %+v: want https with ca.crt and the client certificate", ep)
	}

	notes := renderNotes(t, "tls.enabled=true", "tls.clientAuth=true")
	for _, want := range []string{"grpcs://" + fullname + "-extauthz", "https://" + fullname + "-refresher", "examples/envoy/front-proxy-tls.yaml"} {
		if !strings.Contains(notes, want) {
			t.Errorf("NOTES with TLS lack %q", want)
		}
	}
}

// Without tls.* nothing changes: no TLS flag, no TLS volume, the kubelet's
// own probes.
func TestChartTLSOffByDefault(t *testing.T) {
	t.Parallel()
	for name, pod := range podSpecs(chartView{renderChart(t, valuesFile(t, "bolt-default.yaml"))}) {
		for _, c := range pod.Containers {
			for _, a := range c.Args {
				if strings.HasPrefix(a, "--tls-") {
					t.Errorf("%s: %s with tls.enabled=false", name, a)
				}
			}
			if hasVolumeMount(c, "/etc/tokengate/tls") {
				t.Errorf("%s mounts a TLS Secret with tls.enabled=false", name)
			}
		}
	}
}

// The schema refuses a cert-manager Certificate without an issuer.
func TestChartTLSSchemaRefuses(t *testing.T) {
	t.Parallel()
	_, err := helm(t, "template", release, chartDir(t), "--kube-version", kubeVersion,
		"--set", "tls.enabled=true", "--set", "tls.certManager.enabled=true")
	if err == nil || !strings.Contains(err.Error(), "issuerRef") {
		t.Fatalf("helm template error = %v, want one naming issuerRef", err)
	}
}
