package extauthz

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// discoveryServer serves an OIDC discovery document at
// /.well-known/openid-configuration; the document's issuer is the server's
// own URL unless told otherwise.
type discoveryServer struct {
	*httptest.Server
	mu     sync.Mutex
	fields map[string]any // the document, issuer added when absent
	raw    []byte         // when set, served instead of fields
	fail   bool
	cache  string // Cache-Control, when set
	hits   atomic.Int32
}

func newDiscoveryServer(t testing.TB, jwksURI string) *discoveryServer {
	d := &discoveryServer{fields: map[string]any{"jwks_uri": jwksURI}}
	d.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != discoveryPath {
			http.NotFound(w, r)
			return
		}
		d.hits.Add(1)
		d.mu.Lock()
		defer d.mu.Unlock()
		if d.fail {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		body := d.raw
		if body == nil {
			doc := map[string]any{"issuer": d.URL}
			for k, v := range d.fields {
				doc[k] = v
			}
			body, _ = json.Marshal(doc)
		}
		if d.cache != "" {
			w.Header().Set("Cache-Control", d.cache)
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(body)
	}))
	t.Cleanup(d.Close)
	return d
}

func (d *discoveryServer) set(field string, v any) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if v == nil {
		delete(d.fields, field)
		return
	}
	d.fields[field] = v
}

func (d *discoveryServer) setFail(fail bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.fail = fail
}

// discoveryConfig trusts the issuer at ds by discovery alone; unknown-kid
// checks wait for their refetch (see waitingConfig).
func discoveryConfig(ds *discoveryServer) Config {
	return Config{Providers: []Provider{{
		Name: "idp", Issuer: ds.URL, Audiences: []string{testAudience}, Discovery: true,
		KidRefetchWait: Duration{10 * time.Second},
	}}}
}

// tokenFor is a valid token of issuer signed by k.
func (h *harness) tokenFor(t testing.TB, k *testKey, issuer string) string {
	c := claimsAt(h.clock.Now())
	c["iss"] = issuer
	return k.token(t, c)
}

func (h *harness) discovery(t testing.TB) *discovery {
	t.Helper()
	d := h.srv.state.Load().providers[0].discovery
	if d == nil {
		t.Fatal("provider has no discovery")
	}
	return d
}

// The document's jwks_uri is where the keys come from; its fetches are
// counted, with zero series from start-up.
func TestDiscoveryLoadsKeysFromJWKSURI(t *testing.T) {
	t.Parallel()
	k := newTestKey(t, "ES256", "es-1")
	js := newJWKSServer(t, jwks(t, k))
	ds := newDiscoveryServer(t, js.URL+"/keys")
	h := newHarness(t, discoveryConfig(ds))
	waitReady(t, h.srv)
	if got := h.outcome(t, h.tokenFor(t, k, ds.URL)); got != "allow" {
		t.Fatalf("token of the discovered keys: %s", got)
	}
	m := h.srv.metrics.discoveryFetch
	if got := counterValue(t, m.WithLabelValues("idp", "ok")); got != 1 {
		t.Errorf("discovery ok count %v, want 1", got)
	}
	text := gatherText(t, h)
	for _, r := range []string{"fetch_error", "invalid"} {
		if !strings.Contains(text, `tokengate_extauthz_discovery_fetches_total{provider="idp",result="`+r+`"} 0`) {
			t.Errorf("no zero series for result %s", r)
		}
	}
}

// gatherText is the registry in the Prometheus text format, one line per series.
func gatherText(t testing.TB, h *harness) string {
	t.Helper()
	mfs, err := h.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			b.WriteString(mf.GetName() + "{")
			for i, l := range m.GetLabel() {
				if i > 0 {
					b.WriteString(",")
				}
				b.WriteString(l.GetName() + `="` + l.GetValue() + `"`)
			}
			b.WriteString("} ")
			if c := m.GetCounter(); c != nil {
				b.WriteString(strings.TrimSuffix(strings.TrimSuffix(jsonNum(c.GetValue()), ".0"), "e+00"))
			}
			b.WriteString("\n")
		}
	}
	return b.String()
}

func jsonNum(f float64) string { b, _ := json.Marshal(f); return string(b) }

// A document that fails a check is refused whole: no key is ever loaded
// from a jwks_uri it names, and checks answer UNAVAILABLE (no keys), never
// allow.
func TestDiscoveryRefusesBadDocuments(t *testing.T) {
	t.Parallel()
	k := newTestKey(t, "ES256", "es-1")
	for _, tc := range []struct {
		name string
		doc  func(ds *discoveryServer, jwksURL string)
		why  string // in the refusal
	}{
		{"another issuer", func(ds *discoveryServer, _ string) { ds.set("issuer", "https://evil.example") }, "is not the configured issuer"},
		{"issuer with a trailing slash", func(ds *discoveryServer, _ string) { ds.set("issuer", ds.URL+"/") }, "is not the configured issuer"},
		{"issuer in another case", func(ds *discoveryServer, _ string) { ds.set("issuer", strings.ToUpper(ds.URL)) }, "is not the configured issuer"},
		{"no jwks_uri", func(ds *discoveryServer, _ string) { ds.set("jwks_uri", nil) }, "has no jwks_uri"},
		{"relative jwks_uri", func(ds *discoveryServer, _ string) { ds.set("jwks_uri", "/keys") }, "is not an absolute URL"},
		{"jwks_uri on another scheme", func(ds *discoveryServer, u string) {
			ds.set("jwks_uri", strings.Replace(u, "http://", "https://", 1))
		}, "is not on the issuer's scheme"},
		{"jwks_uri with credentials", func(ds *discoveryServer, u string) {
			ds.set("jwks_uri", strings.Replace(u, "http://", "http://user:pw@", 1))
		}, "has credentials"},
		{"no algorithm in common", func(ds *discoveryServer, _ string) {
			ds.set("id_token_signing_alg_values_supported", []string{"HS256", "none"})
		}, "no signing algorithm of the allowlist"},
		{"not JSON", func(ds *discoveryServer, _ string) { ds.raw = []byte("<html>") }, "parse discovery document"},
		{"oversized", func(ds *discoveryServer, u string) {
			ds.set("padding", strings.Repeat("x", maxDiscoveryBytes))
		}, "larger than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			js := newJWKSServer(t, jwks(t, k))
			ds := newDiscoveryServer(t, js.URL)
			tc.doc(ds, js.URL)
			h := newHarness(t, discoveryConfig(ds))
			d := h.discovery(t)
			// A synchronous fetch: its result is the document's verdict.
			err := d.refresh(context.Background())
			if err == nil {
				t.Fatal("document accepted")
			}
			if !strings.Contains(err.Error(), tc.why) {
				t.Errorf("refused with %q, want it to say %q", err, tc.why)
			}
			if got := counterValue(t, h.srv.metrics.discoveryFetch.WithLabelValues("idp", "invalid")); got < 1 {
				t.Errorf("invalid count %v, want ≥ 1", got)
			}
			if got := js.hits.Load(); got != 0 {
				t.Errorf("the jwks_uri of a refused document was fetched %d times", got)
			}
			if h.srv.Ready() {
				t.Error("ready without an accepted document")
			}
			if got := h.outcome(t, h.tokenFor(t, k, ds.URL)); got != "Unavailable" {
				t.Errorf("check: %s, want Unavailable", got)
			}
		})
	}
}

// The document's algorithms narrow the allowlist and never widen it: HS256
// and none listed by the document stay refused, ES256 (allowed, not listed)
// is refused, RS256 (in both) verifies. Without the field, the allowlist
// is unchanged.
func TestDiscoveryIntersectsAlgorithms(t *testing.T) {
	t.Parallel()
	es := newTestKey(t, "ES256", "es-1")
	rs := newTestKey(t, "RS256", "rs-1")
	js := newJWKSServer(t, jwks(t, es, rs))
	ds := newDiscoveryServer(t, js.URL)
	ds.set("id_token_signing_alg_values_supported", []string{"RS256", "HS256", "none"})
	h := newHarness(t, discoveryConfig(ds))
	waitReady(t, h.srv)
	for _, tc := range []struct {
		name, token, want string
	}{
		{"RS256 in both lists", h.tokenFor(t, rs, ds.URL), "allow"},
		{"ES256 not in the document", h.tokenFor(t, es, ds.URL), "invalid_token"},
		{"HS256 listed by the document", hsToken(t, h, ds.URL), "invalid_token"},
		{"none listed by the document", es.tokenWithHeader(t, map[string]any{"alg": "none"}, map[string]any{"iss": ds.URL}), "invalid_token"},
	} {
		if got := h.outcome(t, tc.token); got != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, got, tc.want)
		}
	}
	ds.set("id_token_signing_alg_values_supported", nil)
	if err := h.discovery(t).refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := h.outcome(t, h.tokenFor(t, es, ds.URL)); got != "allow" {
		t.Errorf("ES256 once the document lists no algorithms: %s", got)
	}
}

// hsToken is a valid token of issuer signed with HS256 (a shared secret
// that an attacker may know).
func hsToken(t testing.TB, h *harness, issuer string) string {
	c := claimsAt(h.clock.Now())
	c["iss"] = issuer
	p, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	return signRaw(t, "HS256", []byte(strings.Repeat("s", 32)), map[string]any{"alg": "HS256", "typ": "at+jwt"}, p)
}

// Document down: the last good document and its keys stay, as for a JWKS.
// At start, the first fetch is retried with backoff.
func TestDiscoveryDocumentDownKeepsLastGood(t *testing.T) {
	t.Parallel()
	k := newTestKey(t, "ES256", "es-1")
	js := newJWKSServer(t, jwks(t, k))
	ds := newDiscoveryServer(t, js.URL)
	ds.setFail(true)
	h := newHarness(t, discoveryConfig(ds))
	d := h.discovery(t)
	if err := d.refresh(context.Background()); err == nil {
		t.Fatal("a failing document was accepted")
	}
	if got := h.outcome(t, h.tokenFor(t, k, ds.URL)); got != "Unavailable" {
		t.Fatalf("before any document: %s, want Unavailable", got)
	}
	ds.setFail(false) // the start-up retry picks it up
	waitReady(t, h.srv)
	if got := h.outcome(t, h.tokenFor(t, k, ds.URL)); got != "allow" {
		t.Fatalf("after the document came back: %s", got)
	}
	ds.setFail(true)
	if err := d.refresh(context.Background()); err == nil {
		t.Fatal("refresh of a failing document succeeded")
	}
	if got := h.outcome(t, h.tokenFor(t, k, ds.URL)); got != "allow" {
		t.Errorf("document down: %s, want the last good keys to allow", got)
	}
	// The keys themselves still refresh from the last good jwks_uri.
	if err := d.refetchJWKS(context.Background()); err != nil {
		t.Errorf("jwks refresh while the document is down: %v", err)
	}
	if got := counterValue(t, h.srv.metrics.discoveryFetch.WithLabelValues("idp", "fetch_error")); got < 2 {
		t.Errorf("fetch_error count %v, want ≥ 2", got)
	}
}

// A changed jwks_uri is followed: the new set's keys verify, the old set's
// keys stop once it loaded, and the old URL is not fetched again.
func TestDiscoveryFollowsChangedJWKSURI(t *testing.T) {
	t.Parallel()
	k1 := newTestKey(t, "ES256", "es-1")
	k2 := newTestKey(t, "ES256", "es-2")
	old := newJWKSServer(t, jwks(t, k1))
	next := newJWKSServer(t, jwks(t, k2))
	ds := newDiscoveryServer(t, old.URL)
	h := newHarness(t, discoveryConfig(ds))
	waitReady(t, h.srv)
	if got := h.outcome(t, h.tokenFor(t, k1, ds.URL)); got != "allow" {
		t.Fatalf("old key: %s", got)
	}
	ds.set("jwks_uri", next.URL)
	d := h.discovery(t)
	if err := d.refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	// The new key's kid is unknown until the new set loads: its check
	// refetches the current jwks_uri and waits for it.
	if got := h.outcome(t, h.tokenFor(t, k2, ds.URL)); got != "allow" {
		t.Fatalf("key of the new jwks_uri: %s", got)
	}
	if got := h.outcome(t, h.tokenFor(t, k1, ds.URL)); got != "invalid_token" {
		t.Errorf("key only in the old jwks_uri: %s, want invalid_token", got)
	}
	before := old.hits.Load()
	if err := d.refetchJWKS(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := old.hits.Load(); got != before {
		t.Errorf("the old jwks_uri was fetched again (%d → %d)", before, got)
	}
}

// The document's background refresh is scheduled like a JWKS's: from its
// Cache-Control max-age, clamped to [refresh_min_interval,
// refresh_max_interval].
func TestDiscoveryHonoursCacheControl(t *testing.T) {
	t.Parallel()
	k := newTestKey(t, "ES256", "es-1")
	for _, tc := range []struct {
		name, cacheControl string
		want               time.Duration
	}{
		{"max-age within bounds", "public, max-age=900", 15 * time.Minute},
		{"max-age below min", "max-age=5", 5 * time.Minute},
		{"max-age above max", "max-age=86400", time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			js := newJWKSServer(t, jwks(t, k))
			ds := newDiscoveryServer(t, js.URL)
			ds.cache = tc.cacheControl
			h := newHarness(t, discoveryConfig(ds))
			waitReady(t, h.srv)
			d := h.discovery(t)
			if err := d.refresh(context.Background()); err != nil {
				t.Fatal(err)
			}
			res, err := d.ctrl.Lookup(context.Background(), d.docURL)
			if err != nil {
				t.Fatal(err)
			}
			// Next is set from the wall clock inside httprc; allow a few seconds of slack.
			if got := time.Until(res.Next()); got < tc.want-5*time.Second || got > tc.want+time.Second {
				t.Fatalf("next document refresh in %v, want about %v", got, tc.want)
			}
		})
	}
}

// discovery: true excludes every other key source and the HMAC secret, and
// needs an issuer a document URL can be built on; every problem is listed
// with its path.
func TestDiscoveryConfigValidation(t *testing.T) {
	t.Parallel()
	cfg := Config{Providers: []Provider{
		{Issuer: "https://idp.example", Audiences: []string{"api"}, Discovery: true},
		{Issuer: "https://b.example", Audiences: []string{"api"}, Discovery: true, JWKSURL: "https://b.example/keys", HMACSecret: strings.Repeat("s", 32)},
		{Issuer: "not-a-url", Audiences: []string{"api"}, Discovery: true},
		{Issuer: "https://c.example/?tenant=1", Audiences: []string{"api"}, Discovery: true},
		{Issuer: "https://u:p@d.example", Audiences: []string{"api"}, Discovery: true},
	}}
	err := cfg.Validate()
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{
		"providers[1].discovery: excludes jwks_url, jwks_file and jwks",
		"providers[1].discovery: excludes hmac_secret and hmac_secret_file",
		`providers[2].issuer: discovery needs an http or https issuer URL, not "not-a-url"`,
		"providers[3].issuer: a discovery issuer has no credentials, query or fragment",
		"providers[4].issuer: a discovery issuer has no credentials, query or fragment",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in:\n%v", want, err)
		}
	}
	if strings.Contains(err.Error(), "providers[0]") {
		t.Errorf("a valid discovery provider was refused:\n%v", err)
	}
	if got := strings.Count(err.Error(), "\n") + 1; got != 5 {
		t.Errorf("%d problems reported, want 5:\n%v", got, err)
	}
	if u, err := discoveryURL("https://idp.example/realms/main/"); err != nil || u != "https://idp.example/realms/main/.well-known/openid-configuration" {
		t.Errorf("discoveryURL with a path and a trailing slash: %q, %v", u, err)
	}
}
