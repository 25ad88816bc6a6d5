package extauthz

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lestrrat-go/httprc/v3"
)

// discoveryPath is where OIDC Discovery 1.0 §4 puts the provider's
// metadata, appended to the issuer without its trailing slash.
const discoveryPath = "/.well-known/openid-configuration"

// maxDiscoveryBytes bounds a discovery document like a JWKS: real ones
// are a few KiB.
const maxDiscoveryBytes = maxJWKSBytes

// discoveryURL is the document's URL for issuer, or why issuer cannot
// have one: an absolute http(s) URL without credentials, query or
// fragment (RFC 8414 §2).
func discoveryURL(issuer string) (string, error) {
	u, err := url.Parse(issuer)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return "", fmt.Errorf("discovery needs an http or https issuer URL, not %q", issuer)
	}
	if u.User != nil || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.Contains(issuer, "#") {
		return "", fmt.Errorf("a discovery issuer has no credentials, query or fragment, not %q", issuer)
	}
	return strings.TrimSuffix(issuer, "/") + discoveryPath, nil
}

// discoveryDoc is the part of the provider metadata extauthz uses.
type discoveryDoc struct {
	Issuer  string   `json:"issuer"`
	JWKSURI string   `json:"jwks_uri"`
	Algs    []string `json:"id_token_signing_alg_values_supported"`
}

// discovery keeps a provider's discovery document fresh with its own
// httprc client (the same refresh rules as a jwks_url) and feeds the
// document's jwks_uri to a urlSource, which stores the keys into the
// provider's keySource. A new jwks_uri replaces the urlSource; the keys of
// the old one stay until the new one loads. A document that fails any
// check changes nothing: the last good document, and its keys, stay.
type discovery struct {
	src     *keySource
	p       Provider
	client  *http.Client
	backoff time.Duration
	ctx     context.Context // the configuration's: ends every fetch
	docURL  string
	scheme  string // the issuer's; a jwks_uri must use the same
	ctrl    httprc.Controller

	readyOnce sync.Once
	ready     chan struct{} // closed once a document is accepted

	mu         sync.Mutex // serialises apply and close
	closed     bool
	jwks       atomic.Pointer[urlSource]
	cancelJWKS context.CancelFunc
}

// startDiscovery fetches p's discovery document in the background (the
// first fetch retried with backoff from firstBackoff, like a jwks_url) and
// starts the key source it names. It does not wait for either.
func startDiscovery(ctx context.Context, src *keySource, p Provider, client *http.Client, firstBackoff time.Duration) (*discovery, error) {
	docURL, err := discoveryURL(p.Issuer)
	if err != nil {
		return nil, fmt.Errorf("issuer: %w", err)
	}
	if client == nil {
		client = &http.Client{Timeout: p.FetchTimeout.Duration}
	}
	u, _ := url.Parse(p.Issuer)
	d := &discovery{
		src: src, p: p, client: client, backoff: firstBackoff, ctx: ctx,
		docURL: docURL, scheme: u.Scheme, ready: make(chan struct{}),
	}
	for _, r := range []string{"ok", "fetch_error", "invalid"} {
		src.metrics.discoveryFetch.WithLabelValues(src.name, r) // zero series from start-up
	}
	// Unknown kids refetch whichever JWKS the document names now.
	src.refetch = d.refetchJWKS
	transform := httprc.TransformFunc[struct{}](func(_ context.Context, res *http.Response) (struct{}, error) {
		data, err := io.ReadAll(io.LimitReader(res.Body, maxDiscoveryBytes+1))
		if err != nil {
			d.count("fetch_error")
			return struct{}{}, fmt.Errorf("read discovery document: %w", err)
		}
		if len(data) > maxDiscoveryBytes {
			d.count("invalid")
			return struct{}{}, fmt.Errorf("discovery document larger than %d bytes", maxDiscoveryBytes)
		}
		doc, algs, err := d.parse(data)
		if err == nil {
			err = d.apply(doc, algs)
		}
		if err != nil {
			d.count("invalid")
			return struct{}{}, err
		}
		d.count("ok")
		d.readyOnce.Do(func() { close(d.ready) })
		return struct{}{}, nil
	})
	res, err := httprc.NewResource[struct{}](docURL, transform,
		httprc.WithHTTPClient(discoveryClient{inner: client, d: d}),
		httprc.WithMinInterval(p.RefreshMinInterval.Duration),
		httprc.WithMaxInterval(p.RefreshMaxInterval.Duration))
	if err != nil {
		return nil, fmt.Errorf("discovery: %w", err)
	}
	failed := make(chan struct{}, 1)
	ctrl, err := httprc.NewClient(httprc.WithWorkers(1), httprc.WithErrorSink(discoverySink{d: d, failed: failed})).Start(ctx)
	if err != nil {
		return nil, fmt.Errorf("start discovery refresher: %w", err)
	}
	d.ctrl = ctrl
	if err := ctrl.Add(ctx, res, httprc.WithWaitReady(false)); err != nil {
		_ = ctrl.ShutdownContext(context.Background())
		return nil, fmt.Errorf("discovery: %w", err)
	}
	go d.initialRetry(ctx, failed, firstBackoff)
	return d, nil
}

func (d *discovery) count(result string) {
	d.src.metrics.discoveryFetch.WithLabelValues(d.src.name, result).Inc()
}

// parse checks a document: its issuer is the configured one, byte for byte
// (OIDC Discovery 1.0 §4.3: otherwise another issuer could name its keys
// for ours); its jwks_uri is an absolute URL on the issuer's scheme, so an
// https issuer never sends us to plain http; and its signing algorithms,
// when listed, share at least one with the allowlist. algs is the
// allowlist narrowed to the listed ones, or nil when none are listed.
func (d *discovery) parse(data []byte) (discoveryDoc, map[string]bool, error) {
	var doc discoveryDoc
	if err := json.Unmarshal(data, &doc); err != nil {
		return doc, nil, fmt.Errorf("parse discovery document: %w", err)
	}
	if doc.Issuer != d.p.Issuer {
		return doc, nil, fmt.Errorf("discovery document issuer %q is not the configured issuer %q", doc.Issuer, d.p.Issuer)
	}
	u, err := url.Parse(doc.JWKSURI)
	switch {
	case doc.JWKSURI == "":
		return doc, nil, errors.New("discovery document has no jwks_uri")
	case err != nil || u.Host == "":
		return doc, nil, fmt.Errorf("discovery document jwks_uri %q is not an absolute URL", doc.JWKSURI)
	case u.Scheme != d.scheme:
		return doc, nil, fmt.Errorf("discovery document jwks_uri %q is not on the issuer's scheme %s", u.Redacted(), d.scheme)
	case u.User != nil || u.Fragment != "":
		return doc, nil, fmt.Errorf("discovery document jwks_uri %q has credentials or a fragment", u.Redacted())
	}
	if doc.Algs == nil {
		return doc, nil, nil
	}
	listed := map[string]bool{}
	for _, a := range doc.Algs {
		listed[a] = true
	}
	algs := map[string]bool{}
	for _, a := range d.p.Algorithms {
		// The allowlist never holds none or HS256 with discovery; checked
		// again so a document can never bring them in.
		if listed[a] && supportedAlg(a) && !strings.HasPrefix(a, "HS") {
			algs[a] = true
		}
	}
	if len(algs) == 0 {
		return doc, nil, fmt.Errorf("discovery document lists no signing algorithm of the allowlist %v", d.p.Algorithms)
	}
	return doc, algs, nil
}

// apply makes an accepted document current: its algorithms narrow the
// allowlist, and a jwks_uri other than the current one gets a new URL
// source (the old one is closed; its keys stay until the new ones load).
func (d *discovery) apply(doc discoveryDoc, algs map[string]bool) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil
	}
	old := d.jwks.Load()
	if old == nil || old.url != doc.JWKSURI {
		pc := d.p
		pc.JWKSURL = doc.JWKSURI
		ctx, cancel := context.WithCancel(d.ctx)
		u, err := newURLSource(ctx, d.src, pc, d.client)
		if err != nil {
			cancel()
			return err
		}
		d.jwks.Store(u)
		oldCancel := d.cancelJWKS
		d.cancelJWKS = cancel
		// Retries the first fetch only while no keys ever loaded.
		go u.initialRetry(ctx, d.src, u.failed, d.backoff)
		if old == nil {
			d.src.log.Info("discovery document loaded", "jwks_uri", u.logURL)
		} else {
			d.src.log.Info("discovery jwks_uri changed", "from", old.logURL, "to", u.logURL)
			old.close()
			oldCancel()
		}
	}
	if algs == nil {
		d.src.algs.Store(nil)
	} else {
		d.src.algs.Store(&algs)
	}
	return nil
}

// refetchJWKS fetches the current jwks_uri now (for unknown kids).
func (d *discovery) refetchJWKS(ctx context.Context) error {
	u := d.jwks.Load()
	if u == nil {
		return errors.New("no discovery document loaded yet")
	}
	return u.refresh(ctx)
}

// refresh fetches the document now, bounded by fetch_timeout.
func (d *discovery) refresh(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, d.p.FetchTimeout.Duration)
	defer cancel()
	return d.ctrl.Refresh(ctx, d.docURL)
}

// initialRetry keeps fetching the document until the first fetch succeeds
// (retryFirstFetch).
func (d *discovery) initialRetry(ctx context.Context, failed <-chan struct{}, backoff time.Duration) {
	retryFirstFetch(ctx, d.ready, failed, backoff, d.refresh, func(next time.Duration, err error) {
		d.src.log.Warn("discovery fetch failed; retrying", "url", d.docURL, "retry_in", next.String(), "error", err.Error())
	})
}

// close stops the document's refresher and the current URL source.
func (d *discovery) close() {
	d.mu.Lock()
	d.closed = true
	u, cancel := d.jwks.Load(), d.cancelJWKS
	d.mu.Unlock()
	ctx, stop := context.WithTimeout(context.Background(), 5*time.Second)
	defer stop()
	_ = d.ctrl.ShutdownContext(ctx)
	if u != nil {
		u.close()
		cancel()
	}
}

// discoveryClient counts transport failures and non-200 answers; parse
// results are counted by the transformer.
type discoveryClient struct {
	inner *http.Client
	d     *discovery
}

func (c discoveryClient) Do(req *http.Request) (*http.Response, error) {
	resp, err := tracedDo(c.d.src.tracer, spanFetchDiscovery, c.d.src.name, c.inner, req)
	if err != nil || resp.StatusCode != http.StatusOK {
		c.d.count("fetch_error")
	}
	return resp, err
}

// discoverySink receives the failures of the document's background fetches.
type discoverySink struct {
	d      *discovery
	failed chan struct{}
}

func (e discoverySink) Put(_ context.Context, err error) {
	select {
	case e.failed <- struct{}{}:
	default:
	}
	e.d.src.log.Warn("discovery background refresh failed; keeping last good document", "error", err.Error())
}
