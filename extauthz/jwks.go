package extauthz

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lestrrat-go/httprc/v3"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"go.opentelemetry.io/otel/trace"
)

// maxJWKSBytes bounds a JWKS document; real ones are a few KiB.
const maxJWKSBytes = 1 << 20

// verifyKey is one public key, exported once at load so the hot path never
// converts keys.
type verifyKey struct {
	id  string // kid, or the RFC 7638 thumbprint when the JWK has none
	kid string
	// alg is set when the JWK names one: the key then verifies only that alg.
	alg    string
	family string // EC, RSA, OKP, oct
	curve  string // EC/OKP curve
	raw    any
}

// usableWith reports whether the key may verify alg. A JWK that names its
// alg is bound to it; otherwise the key type and curve decide, so an RSA or
// EC public key can never be used as an HMAC secret.
func (k *verifyKey) usableWith(alg string) bool {
	if k.alg != "" {
		return k.alg == alg
	}
	switch alg {
	case "RS256", "RS384", "RS512", "PS256", "PS384", "PS512":
		return k.family == "RSA"
	case "ES256":
		return k.family == "EC" && k.curve == "P-256"
	case "ES384":
		return k.family == "EC" && k.curve == "P-384"
	case "ES512":
		return k.family == "EC" && k.curve == "P-521"
	case "EdDSA":
		return k.family == "OKP" && k.curve == "Ed25519"
	}
	return false
}

// keySet is an immutable snapshot of a provider's keys, swapped atomically.
type keySet struct {
	byKID map[string]*verifyKey
	byID  map[string]*verifyKey
	all   []*verifyKey
}

// candidates returns the keys that may verify a token with this kid and alg.
// found reports whether the kid exists at all (so an alg mismatch is not
// mistaken for an unknown kid).
func (ks *keySet) candidates(kid, alg string) (keys []*verifyKey, found bool) {
	if kid != "" {
		k, ok := ks.byKID[kid]
		if !ok {
			return nil, false
		}
		if k.usableWith(alg) {
			return []*verifyKey{k}, true
		}
		return nil, true
	}
	for _, k := range ks.all {
		if k.usableWith(alg) {
			keys = append(keys, k)
		}
	}
	return keys, len(keys) > 0
}

func (ks *keySet) has(id string) bool {
	_, ok := ks.byID[id]
	return ok
}

// parseKeySet turns a JWKS document into a keySet. Symmetric keys, keys for
// encryption and keys of unsupported types are skipped (logged by the caller
// through the returned notes); a set with no usable key is an error, so a
// bad fetch never replaces good keys.
func parseKeySet(data []byte) (*keySet, []string, error) {
	set, err := jwk.Parse(data)
	if err != nil {
		return nil, nil, fmt.Errorf("parse JWKS: %w", err)
	}
	ks := &keySet{byKID: map[string]*verifyKey{}, byID: map[string]*verifyKey{}}
	var notes []string
	for i := range set.Len() {
		key, _ := set.Key(i)
		vk, err := newVerifyKey(key)
		if err != nil {
			notes = append(notes, fmt.Sprintf("key %d skipped: %v", i, err))
			continue
		}
		if vk.kid != "" {
			if _, dup := ks.byKID[vk.kid]; dup {
				notes = append(notes, fmt.Sprintf("key %d skipped: duplicate kid %q", i, vk.kid))
				continue
			}
			ks.byKID[vk.kid] = vk
		}
		ks.byID[vk.id] = vk
		ks.all = append(ks.all, vk)
	}
	if len(ks.all) == 0 {
		return nil, notes, errors.New("JWKS holds no usable signature-verification key")
	}
	return ks, notes, nil
}

func newVerifyKey(key jwk.Key) (*verifyKey, error) {
	if use, ok := key.KeyUsage(); ok && use != "" && use != jwk.ForSignature.String() {
		return nil, fmt.Errorf("use is %q, not sig", use)
	}
	kty := key.KeyType().String()
	if kty == "oct" {
		return nil, errors.New("symmetric keys are never taken from a JWKS (configure hmac_secret instead)")
	}
	pub, err := jwk.PublicKeyOf(key)
	if err != nil {
		return nil, fmt.Errorf("public key: %w", err)
	}
	var raw any
	if err := jwk.Export(pub, &raw); err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	vk := &verifyKey{family: kty, raw: raw}
	switch r := raw.(type) {
	case *ecdsa.PublicKey:
		vk.curve = r.Curve.Params().Name
	case ed25519.PublicKey:
		vk.curve = "Ed25519"
	case *rsa.PublicKey:
		if r.N.BitLen() < 2048 {
			return nil, fmt.Errorf("RSA key of %d bits is too small", r.N.BitLen())
		}
	default:
		return nil, fmt.Errorf("unsupported key type %T", raw)
	}
	if alg, ok := key.Algorithm(); ok && alg.String() != "" {
		if !supportedAlg(alg.String()) || strings.HasPrefix(alg.String(), "HS") {
			return nil, fmt.Errorf("alg %q is not a supported signature algorithm", alg)
		}
		vk.alg = alg.String()
	}
	vk.kid, _ = key.KeyID()
	vk.id = vk.kid
	if vk.id == "" {
		tp, err := pub.Thumbprint(crypto.SHA256)
		if err != nil {
			return nil, fmt.Errorf("thumbprint: %w", err)
		}
		vk.id = "tp:" + base64.RawURLEncoding.EncodeToString(tp)
	}
	return vk, nil
}

// keySource keeps a provider's keys current: inline keys never change, a
// file is polled, a URL is refreshed by httprc (the machinery behind
// jwk.Cache) and refetched on demand for an unknown kid.
type keySource struct {
	name string
	// rawURL and logURL are a jwks_url and the same with its password
	// masked: fetch errors quote the URL, and logs must not hold the password.
	rawURL, logURL string
	keys           atomic.Pointer[keySet]
	metrics        *metrics
	log            *slog.Logger
	clock          func() time.Time

	// refetch loads the keys again now (URL or file); nil for inline keys.
	refetch func(ctx context.Context) error
	// kids decides and runs the refetches that unknown kids ask for.
	kids kidRefetcher

	// algs, when set, narrows the provider's algorithms to those its
	// discovery document lists (nil: no narrowing).
	algs atomic.Pointer[map[string]bool]

	// tracer, when set, records each JWKS and discovery fetch.
	tracer trace.Tracer

	readyOnce sync.Once
	ready     chan struct{} // closed once keys first load
	// updated is signalled (without blocking) after every key-set change,
	// so a waiter learns of a reload as an event rather than by polling.
	updated chan struct{}
}

// newKeySource makes the key source of provider p (defaults applied);
// background refetches end with ctx.
func newKeySource(ctx context.Context, p Provider, m *metrics, log *slog.Logger, clock func() time.Time) *keySource {
	s := &keySource{name: p.Name, metrics: m, log: log, clock: clock, ready: make(chan struct{}), updated: make(chan struct{}, 1)}
	m.provider(p.Name)
	s.kids = kidRefetcher{
		ctx: ctx, perKID: p.KidRefetchInterval.Duration, minGap: p.KidRefetchMinGap.Duration,
		wait: p.KidRefetchWait.Duration, fetchTimeout: p.FetchTimeout.Duration,
		finished: make(chan struct{}), kids: map[string]*kidState{},
	}
	return s
}

func (s *keySource) loaded() bool { return s.keys.Load() != nil }

// algAllowed reports whether discovery left alg in the allowlist (the
// configured allowlist itself is checked by the caller).
func (s *keySource) algAllowed(alg string) bool {
	m := s.algs.Load()
	return m == nil || (*m)[alg]
}

func (s *keySource) store(ks *keySet, notes []string) {
	for _, n := range notes {
		s.log.Warn("jwks key skipped", "detail", n)
	}
	old := s.keys.Swap(ks)
	if old != nil {
		s.kids.removed(old, ks, s.clock())
	}
	s.metrics.jwksKeys.WithLabelValues(s.name).Set(float64(len(ks.all)))
	s.metrics.jwksLastSuccess.WithLabelValues(s.name).Set(float64(s.clock().Unix()))
	s.readyOnce.Do(func() { close(s.ready) })
	// Signalled last, so a waiter sees the keys and their metrics together.
	select {
	case s.updated <- struct{}{}:
	default:
	}
}

// kidVerdict is what a refetch for an unknown kid concluded.
type kidVerdict int

const (
	kidFound   kidVerdict = iota // the kid is in the key set now
	kidUnknown                   // a fetch that started after the kid was first seen lacks it: invalid_token
	kidPending                   // no such fetch has completed (running, limited or failed): UNAVAILABLE
)

// maxTrackedKIDs bounds the unknown kids remembered per provider. A kid
// that may trigger a refetch is at most 256 printable bytes
// (plausibleKID), so the set holds at most 256 KiB of kids (plus about
// 100 bytes of bookkeeping each); when it is full the oldest entry goes,
// which at worst lets that kid ask for one more refetch — still under the
// min-gap ceiling.
const maxTrackedKIDs = 1024

// kidRefetcher rate-limits the JWKS refetches asked for by tokens whose kid
// is not in the key set, so that a real new key is picked up promptly even
// while junk kids arrive:
//   - each unknown kid needs one fetch that *started after* it was first
//     seen; until such a fetch has succeeded its checks get UNAVAILABLE
//     (clients retry), never invalid_token (clients sign out);
//   - once such a fetch succeeded without the kid, the kid is invalid_token
//     and does not ask again for perKID (kid_refetch_interval);
//   - fetches start at least minGap (kid_refetch_min_gap) apart, one at a
//     time, whatever the kids: the ceiling on what junk kids cost the
//     issuer. Every fetch loads the whole set, so a new key is in by the
//     first fetch that starts after it was published: within minGap of the
//     first check that asks, plus the fetch itself;
//   - a check waits at most wait (kid_refetch_wait) for the fetch; the
//     fetch runs in the background, bounded by fetchTimeout, whoever waits.
//
// Fetches are started by checks, not by timers: a check that finds the gap
// not yet passed answers UNAVAILABLE, and the client's retry starts the
// fetch once it has.
type kidRefetcher struct {
	ctx          context.Context
	perKID       time.Duration
	minGap       time.Duration
	wait         time.Duration
	fetchTimeout time.Duration

	mu sync.Mutex
	// Fetch generations: the n-th fetch started is generation n. started
	// counts fetches begun, ok is the generation of the last one that
	// succeeded (fetches run one at a time, so they complete in order).
	started, ok uint64
	running     bool
	lastStart   time.Time
	finished    chan struct{} // closed (and replaced) when a fetch completes
	kids        map[string]*kidState
	order       []string // kids in insertion order, for eviction
}

type kidState struct {
	need      uint64    // a fetch of this generation or later answers for the kid
	refusedAt time.Time // when such a fetch succeeded without it (zero: not yet)
}

// awaitKID is called for a plausible kid that is not in the key set. It
// starts a refetch if the limits allow one, waits for it (at most
// kids.wait, or until ctx ends), and says what to answer.
func (s *keySource) awaitKID(ctx context.Context, kid string) kidVerdict {
	if s.refetch == nil { // inline keys never change
		s.metrics.unknownKID.WithLabelValues(s.name, "unknown").Inc()
		return kidUnknown
	}
	r := &s.kids
	var timeout <-chan time.Time
	for {
		if ks := s.keys.Load(); ks != nil {
			if _, ok := ks.byKID[kid]; ok {
				s.metrics.unknownKID.WithLabelValues(s.name, "found").Inc()
				return kidFound
			}
		}
		verdict, finished := r.step(s, kid)
		if verdict != kidPending || finished == nil {
			s.metrics.unknownKID.WithLabelValues(s.name, verdictLabel(verdict)).Inc()
			return verdict
		}
		if timeout == nil {
			t := time.NewTimer(r.wait)
			defer t.Stop()
			timeout = t.C
		}
		select {
		case <-finished:
		case <-timeout:
			s.metrics.unknownKID.WithLabelValues(s.name, "pending").Inc()
			return kidPending
		case <-ctx.Done():
			s.metrics.unknownKID.WithLabelValues(s.name, "pending").Inc()
			return kidPending
		}
	}
}

func verdictLabel(v kidVerdict) string {
	switch v {
	case kidFound:
		return "found"
	case kidUnknown:
		return "unknown"
	}
	return "pending"
}

// step decides for kid under the lock: unknown, or pending with the channel
// of the running fetch to wait on (nil when no fetch is running: nothing to
// wait for until the min gap has passed).
func (r *kidRefetcher) step(s *keySource, kid string) (kidVerdict, <-chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := s.clock()
	st := r.kids[kid]
	switch {
	case st == nil:
		st = &kidState{need: r.started + 1}
		r.track(kid, st)
	case !st.refusedAt.IsZero() && now.Sub(st.refusedAt) < r.perKID:
		return kidUnknown, nil
	case !st.refusedAt.IsZero():
		// kid_refetch_interval has passed: the kid may ask once more
		// (a signer that switched before publishing its key).
		*st = kidState{need: r.started + 1}
	}
	if r.ok >= st.need {
		st.refusedAt = now
		return kidUnknown, nil
	}
	if !r.running && (r.lastStart.IsZero() || now.Sub(r.lastStart) >= r.minGap) {
		r.start(s, now)
	}
	if !r.running {
		return kidPending, nil
	}
	return kidPending, r.finished
}

// removed records the kids of old that next lacks as refused now: the
// issuer took the key out, so its tokens are invalid_token at once rather
// than UNAVAILABLE while they wait for a refetch of their own.
func (r *kidRefetcher) removed(old, next *keySet, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for kid := range old.byKID {
		if _, ok := next.byKID[kid]; ok || !plausibleKID(kid) {
			continue // kept, or a kid no token can make us look up
		}
		if st := r.kids[kid]; st != nil {
			*st = kidState{refusedAt: now}
		} else {
			r.track(kid, &kidState{refusedAt: now})
		}
	}
}

// track remembers kid, evicting the oldest entry when the set is full.
func (r *kidRefetcher) track(kid string, st *kidState) {
	for len(r.kids) >= maxTrackedKIDs && len(r.order) > 0 {
		delete(r.kids, r.order[0])
		r.order = r.order[1:]
	}
	r.kids[kid] = st
	r.order = append(r.order, kid) // append reallocates as the front is cut: bounded too
}

// start begins fetch generation started+1 in the background; r.mu is held.
func (r *kidRefetcher) start(s *keySource, now time.Time) {
	r.started++
	gen := r.started
	r.running = true
	r.lastStart = now
	go func() {
		ctx, cancel := context.WithTimeout(r.ctx, r.fetchTimeout)
		err := s.refetch(ctx)
		cancel()
		if err != nil {
			s.log.Warn("jwks refetch for unknown kid failed; keeping last good keys", "error", s.errText(err))
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		r.running = false
		if err == nil {
			r.ok = gen
		}
		close(r.finished)
		r.finished = make(chan struct{})
	}()
}

func newInlineSource(src *keySource, data []byte) error {
	ks, notes, err := parseKeySet(data)
	if err != nil {
		return err
	}
	src.store(ks, notes)
	return nil
}

// startFileSource loads the file now (an error fails the start, so a reload
// to a missing file is refused) and polls it until ctx ends.
func startFileSource(ctx context.Context, src *keySource, path string, every time.Duration) error {
	var last []byte
	var mu sync.Mutex
	load := func() error {
		data, err := os.ReadFile(path)
		if err != nil {
			src.metrics.jwksFetches.WithLabelValues(src.name, "fetch_error").Inc()
			return fmt.Errorf("read jwks_file: %w", err)
		}
		mu.Lock()
		defer mu.Unlock()
		if last != nil && bytes.Equal(data, last) {
			return nil
		}
		ks, notes, err := parseKeySet(data)
		if err != nil {
			src.metrics.jwksFetches.WithLabelValues(src.name, "invalid").Inc()
			return fmt.Errorf("%s: %w", path, err)
		}
		src.metrics.jwksFetches.WithLabelValues(src.name, "ok").Inc()
		last = data
		src.store(ks, notes)
		src.log.Info("jwks file loaded", "path", path, "keys", len(ks.all))
		return nil
	}
	if err := load(); err != nil {
		return err
	}
	src.refetch = func(context.Context) error { return load() }
	go func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if err := load(); err != nil {
					src.log.Warn("jwks file reload failed; keeping last good keys", "error", err)
				}
			}
		}
	}()
	return nil
}

// countingClient records transport failures and non-200 answers; parse
// results are recorded by the transformer.
type countingClient struct {
	inner *http.Client
	src   *keySource
}

func (c countingClient) Do(req *http.Request) (*http.Response, error) {
	resp, err := tracedDo(c.src.tracer, spanFetchJWKS, c.src.name, c.inner, req)
	if err != nil || resp.StatusCode != http.StatusOK {
		c.src.metrics.jwksFetches.WithLabelValues(c.src.name, "fetch_error").Inc()
	}
	return resp, err
}

// urlSource is a JWKS URL kept fresh by an httprc client: the same
// machinery as jwk.Cache (background refresh within min/max intervals,
// honouring Cache-Control max-age and Expires, last good value kept on
// failure), used directly so every fetch result reaches our metrics and the
// key snapshot is rebuilt once per fetch rather than per check.
type urlSource struct {
	ctrl    httprc.Controller
	url     string
	logURL  string // url with its password masked
	timeout time.Duration
	failed  chan struct{} // signalled on every background failure, for initialRetry
}

// startURLSource registers the URL and retries the first fetch with
// exponential backoff (from firstBackoff, capped at 30s) until it succeeds
// or ctx ends. It does not wait for the keys.
func startURLSource(ctx context.Context, src *keySource, p Provider, client *http.Client, firstBackoff time.Duration) (*urlSource, error) {
	// Set before httprc starts: its goroutines log through errText.
	src.rawURL, src.logURL = p.JWKSURL, redactedURL(p.JWKSURL)
	u, err := newURLSource(ctx, src, p, client)
	if err != nil {
		return nil, err
	}
	src.refetch = u.refresh
	go u.initialRetry(ctx, src, u.failed, firstBackoff)
	return u, nil
}

// newURLSource starts the httprc client of p.JWKSURL, storing every good
// fetch into src. It neither sets src.refetch nor retries the first fetch:
// startURLSource does, and discovery, which replaces the URL source when
// the jwks_uri changes, does so through its own refetch.
func newURLSource(ctx context.Context, src *keySource, p Provider, client *http.Client) (*urlSource, error) {
	if client == nil {
		client = &http.Client{Timeout: p.FetchTimeout.Duration}
	}
	transform := httprc.TransformFunc[jwk.Set](func(_ context.Context, res *http.Response) (jwk.Set, error) {
		data, err := io.ReadAll(io.LimitReader(res.Body, maxJWKSBytes+1))
		if err != nil {
			src.metrics.jwksFetches.WithLabelValues(src.name, "fetch_error").Inc()
			return nil, fmt.Errorf("read JWKS: %w", err)
		}
		if len(data) > maxJWKSBytes {
			src.metrics.jwksFetches.WithLabelValues(src.name, "invalid").Inc()
			return nil, fmt.Errorf("JWKS larger than %d bytes", maxJWKSBytes)
		}
		ks, notes, err := parseKeySet(data)
		if err != nil {
			src.metrics.jwksFetches.WithLabelValues(src.name, "invalid").Inc()
			return nil, err
		}
		src.metrics.jwksFetches.WithLabelValues(src.name, "ok").Inc()
		src.store(ks, notes)
		return jwk.NewSet(), nil // the snapshot above is what checks use
	})
	res, err := httprc.NewResource[jwk.Set](p.JWKSURL, transform,
		httprc.WithHTTPClient(countingClient{inner: client, src: src}),
		httprc.WithMinInterval(p.RefreshMinInterval.Duration),
		httprc.WithMaxInterval(p.RefreshMaxInterval.Duration))
	if err != nil {
		return nil, fmt.Errorf("jwks_url: %w", err)
	}
	failed := make(chan struct{}, 1)
	ctrl, err := httprc.NewClient(httprc.WithWorkers(1), httprc.WithErrorSink(errorSink{src: src, failed: failed})).Start(ctx)
	if err != nil {
		return nil, fmt.Errorf("start JWKS refresher: %w", err)
	}
	if err := ctrl.Add(ctx, res, httprc.WithWaitReady(false)); err != nil {
		_ = ctrl.ShutdownContext(context.Background())
		return nil, fmt.Errorf("jwks_url: %w", err)
	}
	return &urlSource{ctrl: ctrl, url: p.JWKSURL, logURL: redactedURL(p.JWKSURL), timeout: p.FetchTimeout.Duration, failed: failed}, nil
}

// refresh fetches the JWKS now, bounded by fetch_timeout.
func (u *urlSource) refresh(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, u.timeout)
	defer cancel()
	return u.ctrl.Refresh(ctx, u.url)
}

// initialRetry keeps fetching the JWKS until the first fetch succeeds
// (retryFirstFetch).
func (u *urlSource) initialRetry(ctx context.Context, src *keySource, failed <-chan struct{}, backoff time.Duration) {
	retryFirstFetch(ctx, src.ready, failed, backoff, src.refetch, func(next time.Duration, err error) {
		src.log.Warn("jwks fetch failed; retrying", "url", u.logURL, "retry_in", next.String(), "error", src.errText(err))
	})
}

// retryFirstFetch waits for httprc's first fetch and, if it fails, keeps
// calling fetch with backoff (doubling up to 30 s, jittered) until ready
// closes or ctx ends: httprc alone would wait refresh_min_interval after a
// failed first fetch, far too long for a pod that cannot serve without
// keys. It never fetches while httprc's own first attempt is in flight, so
// a healthy start costs one request. retrying is told of each failure.
func retryFirstFetch(ctx context.Context, ready, failed <-chan struct{}, backoff time.Duration, fetch func(context.Context) error, retrying func(next time.Duration, err error)) {
	const maxBackoff = 30 * time.Second
	select {
	case <-ctx.Done():
		return
	case <-ready:
		return
	case <-failed:
	}
	for {
		// Jitter spreads the retries of many replicas restarting together.
		wait := backoff/2 + rand.N(backoff/2+1)
		select {
		case <-ctx.Done():
			return
		case <-ready:
			return
		case <-time.After(wait):
		}
		err := fetch(ctx)
		if err == nil || ctx.Err() != nil {
			return
		}
		backoff = min(2*backoff, maxBackoff)
		retrying(backoff, err)
	}
}

func (u *urlSource) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = u.ctrl.ShutdownContext(ctx)
}

// errorSink receives the failures of httprc's own (background) fetches.
type errorSink struct {
	src    *keySource
	failed chan struct{} // signalled on every failure, for initialRetry
}

func (e errorSink) Put(_ context.Context, err error) {
	select {
	case e.failed <- struct{}{}:
	default:
	}
	e.src.log.Warn("jwks background refresh failed; keeping last good keys", "error", e.src.errText(err))
}

// errText is err's message with the jwks_url's password masked.
func (s *keySource) errText(err error) string {
	msg := err.Error()
	if s.rawURL != s.logURL {
		msg = strings.ReplaceAll(msg, s.rawURL, s.logURL)
	}
	return msg
}

// redactedURL is raw with the password of its user info masked (net/url's
// Redacted), or raw unchanged when it does not parse.
func redactedURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return raw
	}
	return u.Redacted()
}
