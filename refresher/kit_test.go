package refresher_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokengate/tokengate/internal/fakeclock"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/tokengate/tokengate/internal/keyset"
	"github.com/tokengate/tokengate/refresher"
	"github.com/tokengate/tokengate/refresher/store"
	"github.com/tokengate/tokengate/refresher/store/memstore"
)

const adminToken = "test-admin-token-0123456789"

func testConfig() refresher.Config {
	c := refresher.Defaults()
	c.Issuer = "https://auth.test"
	c.Audience = []string{"api"}
	c.AdminToken = adminToken
	c.RefreshTTL = time.Hour
	c.SessionMaxAge = 24 * time.Hour
	return c
}

// rig is one refresher on a real loopback listener.
type rig struct {
	t      testing.TB
	srv    *refresher.Server
	http   *httptest.Server
	store  store.Store
	clock  *fakeclock.Clock
	reg    *prometheus.Registry
	keys   *keyset.Keys
	client *http.Client
	logs   *lockedWriter
}

type rigSetup struct {
	cfg   refresher.Config
	opts  refresher.Options
	clock *fakeclock.Clock
}

type rigOption func(*rigSetup)

func withStore(s store.Store) rigOption { return func(r *rigSetup) { r.opts.Store = s } }

func withConfig(f func(*refresher.Config)) rigOption { return func(r *rigSetup) { f(&r.cfg) } }

func withKeys(k *keyset.Keys) rigOption { return func(r *rigSetup) { r.opts.Keys = k } }

// withClock shares a clock between rigs (two replicas of one deployment).
func withClock(c *fakeclock.Clock) rigOption { return func(r *rigSetup) { r.clock = c } }

func generateKeys(t testing.TB) *keyset.Keys {
	t.Helper()
	k, err := keyset.Generate(jwa.ES256())
	if err != nil {
		t.Fatal(err)
	}
	ks, err := keyset.Assemble([]jwk.Key{k}, "")
	if err != nil {
		t.Fatal(err)
	}
	return ks
}

func newRig(t testing.TB, opts ...rigOption) *rig {
	t.Helper()
	logs := &lockedWriter{}
	reg := prometheus.NewRegistry()
	setup := rigSetup{cfg: testConfig(), clock: fakeclock.New(), opts: refresher.Options{Store: memstore.New(),
		Registry: reg, Logger: slog.New(slog.NewJSONHandler(logs, nil))}}
	for _, opt := range opts {
		opt(&setup)
	}
	o := setup.opts
	o.Clock = setup.clock.Now
	if o.Keys == nil {
		o.Keys = generateKeys(t)
	}
	srv, err := refresher.NewServer(setup.cfg, o)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Routes())
	t.Cleanup(hs.Close)
	return &rig{t: t, srv: srv, http: hs, store: o.Store, clock: setup.clock, reg: reg, keys: o.Keys,
		client: hs.Client(), logs: logs}
}

// lockedWriter collects JSON logs from concurrent handlers.
type lockedWriter struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

func (w *lockedWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

type response struct {
	Status int
	Header http.Header
	Body   map[string]any
	Raw    string
}

func (r response) str(field string) string {
	s, _ := r.Body[field].(string)
	return s
}

func (rg *rig) do(req *http.Request) response {
	rg.t.Helper()
	resp, err := rg.client.Do(req)
	if err != nil {
		rg.t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	out := response{Status: resp.StatusCode, Header: resp.Header, Raw: string(raw)}
	_ = json.Unmarshal(raw, &out.Body)
	return out
}

func (rg *rig) request(method, path, contentType, body string, header ...string) *http.Request {
	rg.t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), method, rg.http.URL+path, strings.NewReader(body))
	if err != nil {
		rg.t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	return req
}

func (rg *rig) admin(method, path, body string) response {
	rg.t.Helper()
	ct := ""
	if body != "" {
		ct = "application/json"
	}
	return rg.do(rg.request(method, path, ct, body, "Authorization", "Bearer "+adminToken))
}

// startSession signs alice in and returns the 201 answer.
func (rg *rig) startSession(body string) response {
	rg.t.Helper()
	if body == "" {
		body = `{"sub":"alice","claims":{"name":"Alice","roles":["admin"]}}`
	}
	r := rg.admin("POST", "/v1/sessions", body)
	if r.Status != http.StatusCreated {
		rg.t.Fatalf("POST /v1/sessions = %d %s", r.Status, r.Raw)
	}
	return r
}

func (rg *rig) refresh(token string) response {
	rg.t.Helper()
	form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {token}}.Encode()
	return rg.do(rg.request("POST", "/v1/token", "application/x-www-form-urlencoded", form))
}

// counter reads a counter (summed over label sets matching labels).
func (rg *rig) counter(name string, labels ...string) float64 {
	rg.t.Helper()
	mfs, err := rg.reg.Gather()
	if err != nil {
		rg.t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if matches(m, labels) {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

func matches(m *dto.Metric, labels []string) bool {
	for i := 0; i+1 < len(labels); i += 2 {
		found := false
		for _, lp := range m.GetLabel() {
			if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

func (rg *rig) session(sid string) store.Session {
	rg.t.Helper()
	s, err := rg.store.GetSession(context.Background(), sid)
	if err != nil {
		rg.t.Fatalf("GetSession(%s): %v", sid, err)
	}
	return s
}

func jsonUnmarshal(raw string, v any) error { return json.Unmarshal([]byte(raw), v) }
