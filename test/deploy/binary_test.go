package deploy

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	"sigs.k8s.io/yaml"
)

// The chart and the compose file pass flags and TOKENGATE_* variables to
// the binary; each must exist in the real flag set (`tokengate SUB -h`), so
// a renamed flag breaks this test rather than a user's deployment.

var (
	flagSetsMu sync.Mutex
	flagSets   = map[string]map[string]bool{}
)

var flagLine = regexp.MustCompile(`^\s+--([a-z0-9-]+) \(env (TOKENGATE_[A-Z0-9_]+)\)`)

// knownFlags returns the flags of a subcommand, from its -h output.
func knownFlags(t *testing.T, sub string) map[string]bool {
	t.Helper()
	bin := dockerfileBinary(t).bin
	flagSetsMu.Lock()
	defer flagSetsMu.Unlock()
	if fs, ok := flagSets[sub]; ok {
		return fs
	}
	out, _ := exec.Command(bin, sub, "-h").CombinedOutput() // -h may exit non-zero
	fs := map[string]bool{}
	for _, line := range strings.Split(string(out), "\n") {
		if m := flagLine.FindStringSubmatch(line); m != nil {
			fs[m[1]] = true
		}
	}
	if len(fs) == 0 {
		t.Fatalf("tokengate %s -h lists no flags:\n%s", sub, out)
	}
	flagSets[sub] = fs
	return fs
}

// checkInvocation checks a container's args and TOKENGATE_* env against
// the real flag set of its subcommand.
func checkInvocation(t *testing.T, where string, args []string, env []string) {
	t.Helper()
	if len(args) == 0 {
		t.Errorf("%s: no subcommand", where)
		return
	}
	sub := args[0]
	fs := knownFlags(t, sub)
	for _, a := range args[1:] {
		if !strings.HasPrefix(a, "--") {
			continue // a flag's value given as the next word
		}
		name, _, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if !fs[name] {
			t.Errorf("%s: tokengate %s has no flag --%s", where, sub, name)
		}
	}
	for _, e := range env {
		name, ok := strings.CutPrefix(e, "TOKENGATE_")
		if !ok {
			continue
		}
		flag := strings.ToLower(strings.ReplaceAll(name, "_", "-"))
		if !fs[flag] {
			t.Errorf("%s: %s names no flag of tokengate %s", where, e, sub)
		}
	}
}

// validateConfig runs `tokengate validate-config` on the extauthz config
// the chart renders.
func validateConfig(t *testing.T, objs []rendered) error {
	t.Helper()
	var cm *corev1.ConfigMap
	for _, c := range find[*corev1.ConfigMap](objs) {
		if strings.HasSuffix(c.Name, "-extauthz") {
			cm = c
		}
	}
	if cm == nil {
		t.Fatal("no extauthz ConfigMap")
	}
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(cm.Data["config.yaml"]), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(dockerfileBinary(t).bin, "validate-config", path).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%w: %s", err, out)
	}
	return nil
}

// TestChartAgainstBinary: every flag and TOKENGATE_* variable the chart
// passes exists, and the extauthz config it renders passes validate-config.
func TestChartAgainstBinary(t *testing.T) {
	t.Parallel()
	t.Run("an invalid config is caught", func(t *testing.T) {
		t.Parallel()
		objs := renderChart(t, valuesFile(t, "bolt-default.yaml"), "extauthz.config.default_action=maybe")
		if err := validateConfig(t, objs); err == nil || !strings.Contains(err.Error(), "default_action") {
			t.Fatalf("validate-config = %v, want a default_action error", err)
		}
	})
	for _, file := range []string{"bolt-default.yaml", "redis-3-replicas.yaml", "istio.yaml", "everything.yaml"} {
		t.Run(file, func(t *testing.T) {
			t.Parallel()
			objs := renderChart(t, valuesFile(t, file))
			if err := validateConfig(t, objs); err != nil {
				t.Errorf("rendered extauthz config: %v", err)
			}
			for name, pod := range podSpecs(chartView{objs}) {
				for _, c := range pod.Containers {
					var env []string
					for _, e := range c.Env {
						env = append(env, e.Name)
					}
					checkInvocation(t, name+"/"+c.Name, c.Args, env)
				}
			}
		})
	}
}

// composeFile is the part of the Compose specification the example uses.
type composeFile struct {
	Name     string                    `json:"name"`
	Services map[string]composeService `json:"services"`
	Volumes  map[string]any            `json:"volumes"`
}

type composeService struct {
	Image       string            `json:"image"`
	Command     []string          `json:"command"`
	Environment map[string]string `json:"environment"`
	Volumes     []string          `json:"volumes"`
	Ports       []string          `json:"ports"`
	User        string            `json:"user"`
	ReadOnly    bool              `json:"read_only"`
	CapDrop     []string          `json:"cap_drop"`
	Healthcheck *struct {
		Test []string `json:"test"`
	} `json:"healthcheck"`
	DependsOn map[string]struct {
		Condition string `json:"condition"`
	} `json:"depends_on"`
}

func TestComposeExample(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile(filepath.Join(repoRoot(t), "examples", "compose", "docker-compose.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var cf composeFile
	// Not strict: the Compose spec is larger than this struct; YAML anchors
	// and merge keys are resolved by the YAML decoder.
	if err := yaml.Unmarshal(data, &cf); err != nil {
		t.Fatal(err)
	}
	envoy, ok := cf.Services["envoy"]
	if !ok {
		t.Fatal("no envoy service")
	}
	// The official image, at the Envoy release whose API test/deploy validates against.
	if want := "envoyproxy/envoy:" + envoyAPIRelease(t) + "-latest"; envoy.Image != want {
		t.Errorf("envoy image %q, want %q (the go-control-plane API the configs are checked with)", envoy.Image, want)
	}
	if !slices.Contains(envoy.Volumes, "../envoy/front-proxy.yaml:/etc/envoy/envoy.yaml:ro") {
		t.Errorf("envoy volumes %v do not mount ../envoy/front-proxy.yaml as its config", envoy.Volumes)
	}
	// Every upstream host:port in front-proxy.yaml is a compose service listening there.
	cfg := decodeEnvoy(t, filepath.Join(repoRoot(t), "examples", "envoy", "front-proxy.yaml"))
	listens := map[string]uint32{"refresher": 8080, "extauthz": 9001}
	if app := cf.Services["app"]; slices.Contains(app.Command, "--port") {
		var port uint32
		fmt.Sscan(app.Command[slices.Index(app.Command, "--port")+1], &port)
		listens["app"] = port
	}
	for _, c := range cfg.bootstrap.GetStaticResources().GetClusters() {
		sa := c.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
		if _, ok := cf.Services[sa.GetAddress()]; !ok {
			t.Errorf("cluster %s → %s, which is not a compose service", c.GetName(), sa.GetAddress())
		} else if listens[sa.GetAddress()] != sa.GetPortValue() {
			t.Errorf("cluster %s → %s:%d, but the service listens on %d", c.GetName(), sa.GetAddress(), sa.GetPortValue(), listens[sa.GetAddress()])
		}
	}
	// tokengate services: real flags, hardened, healthchecked by the binary itself.
	keyOut := ""
	for name, s := range cf.Services {
		if !strings.HasPrefix(s.Image, "tokengate") {
			continue
		}
		var env []string
		for k := range s.Environment {
			env = append(env, k)
		}
		checkInvocation(t, "compose "+name, s.Command, env)
		if s.User != "65532:65532" || !s.ReadOnly || !slices.Contains(s.CapDrop, "ALL") {
			t.Errorf("compose %s: user %q read_only %v cap_drop %v", name, s.User, s.ReadOnly, s.CapDrop)
		}
		if name == "keygen" {
			i := slices.Index(s.Command, "--out")
			if i < 0 || !slices.Contains(s.Command, "--if-missing") {
				t.Errorf("keygen %v must write --out with --if-missing (a restart keeps the key)", s.Command)
			} else {
				keyOut = s.Command[i+1]
			}
			continue
		}
		if s.Healthcheck == nil || len(s.Healthcheck.Test) < 3 || s.Healthcheck.Test[1] != "/tokengate" || s.Healthcheck.Test[2] != "healthcheck" {
			t.Errorf("compose %s: healthcheck %v, want [CMD /tokengate healthcheck …] (no shell in the image)", name, s.Healthcheck)
		} else {
			checkInvocation(t, "compose "+name+" healthcheck", s.Healthcheck.Test[2:], nil)
		}
	}
	if rf := cf.Services["refresher"]; !slices.Contains(rf.Command, "--signing-key="+keyOut) {
		t.Errorf("refresher %v does not read the key keygen writes (%s)", rf.Command, keyOut)
	}
}

// envoyAPIRelease is "v1.N" of the go-control-plane/envoy module this test
// module requires; its versions follow Envoy's releases.
func envoyAPIRelease(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile("go.mod")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^\s*github\.com/envoyproxy/go-control-plane/envoy (v\d+\.\d+)\.`).FindSubmatch(data)
	if m == nil {
		t.Fatal("go.mod does not require github.com/envoyproxy/go-control-plane/envoy")
	}
	return string(m[1])
}

// TestChartExtauthzStarts runs the default chart's refresher and extauthz
// as rendered — extauthz with the ConfigMap's config, the admin token file
// and the revocation feed, the refresher's Service name pointed at loopback
// — and waits for extauthz's gRPC health to answer SERVING (keys and
// revocation list loaded).
func TestChartExtauthzStarts(t *testing.T) {
	t.Parallel()
	startChartServices(t, renderChart(t, valuesFile(t, "bolt-default.yaml")))
}

// runningChart is the loopback ports of a rendered refresher and extauthz
// started by startChartServices.
type runningChart struct {
	refresher, extauthzGRPC, extauthzHTTP int
	adminToken                            string
}

// startChartServices runs a rendering's refresher (a bolt StatefulSet) and
// extauthz as rendered — extauthz with the ConfigMap's config, the admin
// token file and the revocation feed, the refresher's Service name pointed
// at loopback — and waits for extauthz's gRPC health and /readyz.
func startChartServices(t *testing.T, objs []rendered) runningChart {
	t.Helper()
	sts := one(t, find[*appsv1.StatefulSet](objs), "refresher StatefulSet")
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "data"), 0o700)
	rfPort := startRefresher(t, objs, &sts.Spec.Template.Spec, root, nil)

	var pod *corev1.PodSpec
	for _, d := range find[*appsv1.Deployment](objs) {
		if strings.HasSuffix(d.Name, "-extauthz") {
			pod = &d.Spec.Template.Spec
		}
	}
	ex := pod.Containers[0]
	var cm *corev1.ConfigMap
	for _, c := range find[*corev1.ConfigMap](objs) {
		if strings.HasSuffix(c.Name, "-extauthz") {
			cm = c
		}
	}
	// In the cluster the refresher is its Service; here it is loopback.
	service := fmt.Sprintf("http://%s-tokengate-refresher.%s.svc.cluster.local:8080", release, namespace)
	local := fmt.Sprintf("http://127.0.0.1:%d", rfPort)
	cfgPath := filepath.Join(root, argMap(t, ex)["--config"])
	os.MkdirAll(filepath.Dir(cfgPath), 0o700)
	// Only the JWKS URL moves: the issuer stays the refresher's --issuer.
	cfg := strings.ReplaceAll(cm.Data["config.yaml"], service+"/.well-known/jwks.json", local+"/.well-known/jwks.json")
	if !strings.Contains(cfg, local) {
		t.Fatalf("the extauthz config does not name the refresher Service %s:\n%s", service, cm.Data["config.yaml"])
	}
	os.WriteFile(cfgPath, []byte(cfg), 0o600)
	// Same mounted admin token file as the refresher's (one Secret).
	grpcPort, httpPort := freePort(t), freePort(t)
	out := runContainer(t, ex, root, nil, map[string]string{
		service:               local,
		"--grpc-listen=:9001": fmt.Sprintf("--grpc-listen=127.0.0.1:%d", grpcPort),
		"--http-listen=:9002": fmt.Sprintf("--http-listen=127.0.0.1:%d", httpPort),
	})
	waitHealthy(t, fmt.Sprintf("grpc://127.0.0.1:%d", grpcPort), out)
	waitHealthy(t, fmt.Sprintf("http://127.0.0.1:%d/readyz", httpPort), out)
	return runningChart{refresher: rfPort, extauthzGRPC: grpcPort, extauthzHTTP: httpPort, adminToken: chartAdminToken}
}
