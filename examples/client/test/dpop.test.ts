// DPoP (RFC 9449) in the client: the proof, the key in IndexedDB
// (fake-indexeddb here; the real browser runs in test/e2e/browser), and what
// the fetch wrapper and the axios interceptor do with nonces, bound tokens
// and token_unbound. Proofs are checked with Node's WebCrypto, as a server would.
import { createHash, webcrypto } from 'node:crypto';
import axios from 'axios';
import { IDBFactory } from 'fake-indexeddb';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { attachTokenRefresh } from '../src/axios.js';
import { deleteDpopKey, dpopKey, dpopProof, dpopThumbprint, rememberClock, storedDpopKey } from '../src/dpop.js';
import { TokenGateError, createFetch, type SignOutReason, type TokenClient, type TokenClientOptions } from '../src/index.js';
import { ChannelHub, FakeTokengate, axiosAdapter, storedKeys } from './harness.js';

const subtle = webcrypto.subtle;

interface Proof {
  header: { typ?: string; alg?: string; jwk?: Record<string, unknown> } & Record<string, unknown>;
  claims: { jti?: string; htm?: string; htu?: string; iat?: number; ath?: string; nonce?: string } & Record<string, unknown>;
  /** The signature verifies with the header's jwk (ES256). */
  verified: boolean;
  /** RFC 7638 thumbprint of the header's jwk. */
  jkt: string;
}

const b64 = (b: Uint8Array | Buffer | ArrayBuffer): string => Buffer.from(b instanceof ArrayBuffer ? new Uint8Array(b) : b).toString('base64url');
const sha256 = (s: string): string => b64(createHash('sha256').update(s).digest());

/** readProof decodes a proof and verifies its signature the way a server does. */
async function readProof(proof: string): Promise<Proof> {
  const [h, c, sig] = proof.split('.');
  const header = JSON.parse(Buffer.from(h, 'base64url').toString()) as Proof['header'];
  const claims = JSON.parse(Buffer.from(c, 'base64url').toString()) as Proof['claims'];
  const jwk = header.jwk as { crv: string; kty: string; x: string; y: string };
  const key = await subtle.importKey('jwk', jwk, { name: 'ECDSA', namedCurve: 'P-256' }, false, ['verify']);
  const verified = await subtle.verify({ name: 'ECDSA', hash: 'SHA-256' }, key, Buffer.from(sig, 'base64url'), Buffer.from(`${h}.${c}`));
  const jkt = sha256(JSON.stringify({ crv: jwk.crv, kty: jwk.kty, x: jwk.x, y: jwk.y }));
  return { header, claims, verified, jkt };
}

interface Seen {
  method: string;
  path: string;
  auth: string | null;
  proof?: Proof;
}

/**
 * DpopServer puts what a DPoP-enabled extauthz and refresher answer in front
 * of FakeTokengate: the proofs it saw (verified), nonces, bound tokens whose
 * proof must come from their key, and token_unbound refusals.
 */
class DpopServer {
  readonly tg = new FakeTokengate();
  seen: Seen[] = [];
  /** The nonce the API requires (401 use_dpop_nonce without it). */
  apiNonce: string | undefined;
  /** The nonce the token endpoint requires (400 use_dpop_nonce without it). */
  tokenNonce: string | undefined;
  /** The API asks for a (new) nonce on every request. */
  nonceAlways = false;
  /** Access tokens the API refuses as bound elsewhere; unboundAll refuses every token so. */
  unbound = new Set<string>();
  unboundAll = false;

  constructor(readonly origin: string) {
    this.tg.ttlSeconds = 300;
  }

  api(path: string): Seen[] {
    return this.seen.filter((s) => s.path === path);
  }

  fetch = async (input: RequestInfo | URL, init?: RequestInit): Promise<Response> => {
    const req = new Request(input, init);
    const url = new URL(req.url);
    const header = req.headers.get('dpop');
    const proof = header ? await readProof(header) : undefined;
    const auth = req.headers.get('authorization');
    this.seen.push({ method: req.method, path: url.pathname, auth, proof });
    if (url.pathname === '/v1/token' && this.tokenNonce && proof?.claims.nonce !== this.tokenNonce) {
      return json(400, { error: 'use_dpop_nonce', error_description: 'a nonce is required' }, { 'dpop-nonce': this.tokenNonce });
    }
    if (url.pathname.startsWith('/api/')) {
      if (this.nonceAlways || (this.apiNonce && proof?.claims.nonce !== this.apiNonce)) {
        const nonce = this.nonceAlways ? `n${this.seen.length}` : this.apiNonce!;
        return json(401, { error: 'use_dpop_nonce', error_description: 'a nonce is required' }, { 'www-authenticate': 'DPoP error="use_dpop_nonce", error_description="a nonce is required"', 'dpop-nonce': nonce });
      }
      const token = auth?.replace(/^\S+ /, '') ?? '';
      const cnf = (JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString() || '{}') as { cnf?: { jkt?: string } }).cnf;
      // A bound token: DPoP scheme and a valid proof by its key, with ath.
      if (cnf?.jkt && (!auth?.startsWith('DPoP ') || !proof?.verified || proof.jkt !== cnf.jkt || proof.claims.ath !== sha256(token))) {
        return json(401, { error: 'invalid_dpop_proof', error_description: 'no valid proof' }, { 'www-authenticate': 'DPoP error="invalid_dpop_proof", algs="ES256"' });
      }
      if (this.unboundAll || this.unbound.has(token)) {
        return json(401, { error: 'token_unbound', error_description: 'the token is bound to another network' }, { 'www-authenticate': 'DPoP realm="tokengate", error="invalid_token", reason="token_unbound"' });
      }
    }
    return this.tg.fetch(req);
  };
}

function json(status: number, body: unknown, headers: Record<string, string>): Response {
  return new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/json', ...headers } });
}

interface Api {
  client: TokenClient;
  /** get calls GET /api/items?q=1#frag and resolves to the status (a TokenGateError rejects). */
  get(): Promise<number>;
}

const makers: Record<string, (server: DpopServer, o: TokenClientOptions) => Api> = {
  fetch: (server, o) => {
    const f = createFetch({ ...o, fetch: server.fetch });
    return { client: f.client, get: async () => (await f(`${server.origin}/api/items?q=1#frag`)).status };
  },
  axios: (server, o) => {
    const inst = axios.create({ baseURL: server.origin, adapter: axiosAdapter(server) });
    const { client } = attachTokenRefresh(inst, { ...o, fetch: server.fetch });
    return {
      client,
      get: async () => {
        try {
          return (await inst.get('/api/items?q=1')).status;
        } catch (e) {
          if (axios.isAxiosError(e) && e.response) return e.response.status;
          throw e;
        }
      },
    };
  },
};

// Each test has its own key name and origin: the module keeps keys and nonces for the page's lifetime.
let seq = 0;
let name: string;
let origin: string;

beforeEach(() => {
  seq++;
  name = `tg${seq}`;
  origin = `http://app${seq}.test`;
  // A fresh IndexedDB for every test.
  globalThis.indexedDB = new IDBFactory();
});
afterEach(() => {
  vi.restoreAllMocks();
});

function options(extra: Partial<TokenClientOptions> = {}): TokenClientOptions & { signOuts: SignOutReason[] } {
  const signOuts: SignOutReason[] = [];
  return {
    dpop: true,
    name,
    refreshUrl: `${origin}/v1/token`,
    revokeUrl: `${origin}/v1/revoke`,
    locks: null,
    channel: null,
    visibility: null,
    autoRefresh: false,
    refreshAhead: 0,
    authorize: () => true,
    onSignOut: (r) => signOuts.push(r),
    ...extra,
    signOuts,
  };
}

/** signedIn makes a server that binds its tokens to this test's key and a client signed in to it. */
async function signedIn(kind: string, extra: Partial<TokenClientOptions> = {}) {
  const server = new DpopServer(origin);
  server.tg.jkt = await dpopThumbprint(name);
  const o = options(extra);
  const api = makers[kind](server, o);
  const s = server.tg.signIn();
  await api.client.setTokens(s.body, { date: s.date });
  return { server, o, api, first: s.body.access_token };
}

describe('dpopProof', () => {
  it('signs a proof a server accepts: header, claims, ath, htu without query and fragment, nonce', async () => {
    const before = Math.floor(Date.now() / 1000);
    const proof = await dpopProof('get', 'https://API.example:443/v1/items?x=1#top', { accessToken: 'tok-1', nonce: 'n-1', name });
    const p = await readProof(proof);
    expect(p.verified).toBe(true);
    expect(p.header).toEqual({ typ: 'dpop+jwt', alg: 'ES256', jwk: { kty: 'EC', crv: 'P-256', x: expect.any(String), y: expect.any(String) } });
    expect(Object.keys(p.header.jwk!).sort()).toEqual(['crv', 'kty', 'x', 'y']); // no d, no key_ops, no ext
    expect(p.claims.htm).toBe('GET');
    expect(p.claims.htu).toBe('https://api.example/v1/items');
    expect(p.claims.ath).toBe(sha256('tok-1'));
    expect(p.claims.nonce).toBe('n-1');
    expect(p.claims.iat).toBeGreaterThanOrEqual(before);
    expect(p.claims.iat).toBeLessThanOrEqual(Math.ceil(Date.now() / 1000));
    // jti: 128 random bits, base64url without padding.
    expect(p.claims.jti).toMatch(/^[A-Za-z0-9_-]{22}$/);
    expect(Buffer.from(p.claims.jti!, 'base64url')).toHaveLength(16);
    expect(p.jkt).toBe(await dpopThumbprint(name));
  });

  it('has no ath or nonce when none is given, and a new jti every time', async () => {
    const a = await readProof(await dpopProof('POST', `${origin}/v1/token`, { name }));
    const b = await readProof(await dpopProof('POST', `${origin}/v1/token`, { name }));
    expect(a.claims).not.toHaveProperty('ath');
    expect(a.claims).not.toHaveProperty('nonce');
    expect(a.claims.jti).not.toBe(b.claims.jti);
    expect(a.header.jwk).toEqual(b.header.jwk);
  });
});

describe('the key', () => {
  it('is made once, kept in IndexedDB and reused', async () => {
    const gen = vi.spyOn(crypto.subtle, 'generateKey');
    const proofs = await Promise.all(Array.from({ length: 5 }, () => dpopProof('GET', `${origin}/api/x`, { name })));
    proofs.push(await dpopProof('GET', `${origin}/api/x`, { name }));
    const jwks = new Set((await Promise.all(proofs.map(readProof))).map((p) => JSON.stringify(p.header.jwk)));
    expect(jwks.size).toBe(1);
    expect(gen).toHaveBeenCalledTimes(1);
    expect(await storedKeys()).toEqual([name]);
  });

  it('has a private key that cannot be exported', async () => {
    const { privateKey, publicKey } = await dpopKey(name);
    expect(privateKey.extractable).toBe(false);
    expect(privateKey.algorithm).toMatchObject({ name: 'ECDSA', namedCurve: 'P-256' });
    await expect(subtle.exportKey('jwk', privateKey as webcrypto.CryptoKey)).rejects.toThrow();
    expect(publicKey.type).toBe('public');
  });

  it('deleteDpopKey removes it: the next proof has a new key', async () => {
    expect(await storedDpopKey(name)).toBeUndefined();
    const first = await readProof(await dpopProof('GET', `${origin}/api/x`, { name }));
    const stored = await storedDpopKey(name);
    const { kty, crv, x, y } = await subtle.exportKey('jwk', stored!.publicKey as webcrypto.CryptoKey);
    expect({ kty, crv, x, y }).toEqual(first.header.jwk);
    expect(stored!.privateKey.extractable).toBe(false);
    await deleteDpopKey(name);
    expect(await storedKeys()).toEqual([]);
    expect(await storedDpopKey(name)).toBeUndefined();
    const next = await readProof(await dpopProof('GET', `${origin}/api/x`, { name }));
    expect(next.header.jwk).not.toEqual(first.header.jwk);
    expect(await storedKeys()).toEqual([name]);
  });
});

for (const kind of Object.keys(makers)) {
  describe(`${kind} with dpop: true`, () => {
    it('sends a bound token as DPoP with a proof (ath, htu without query) on every API call', async () => {
      const { server, api, first } = await signedIn(kind);
      expect(await api.get()).toBe(200);
      expect(await api.get()).toBe(200);
      const calls = server.api('/api/items');
      expect(calls).toHaveLength(2);
      for (const c of calls) {
        expect(c.auth).toBe(`DPoP ${first}`);
        expect(c.proof?.verified).toBe(true);
        expect(c.proof?.claims).toMatchObject({ htm: 'GET', htu: `${origin}/api/items`, ath: sha256(first) });
        expect(c.proof?.jkt).toBe(server.tg.jkt);
      }
      expect(calls[0].proof?.claims.jti).not.toBe(calls[1].proof?.claims.jti);
    });

    it('signs refreshes: POST /v1/token carries a proof without ath', async () => {
      const { server, api, first } = await signedIn(kind);
      server.tg.expireAll();
      expect(await api.get()).toBe(200);
      const refreshes = server.api('/v1/token');
      expect(refreshes).toHaveLength(1);
      expect(refreshes[0].proof?.verified).toBe(true);
      expect(refreshes[0].proof?.claims).toMatchObject({ htm: 'POST', htu: `${origin}/v1/token` });
      expect(refreshes[0].proof?.claims).not.toHaveProperty('ath');
      expect(refreshes[0].auth).toBeNull();
      const last = server.api('/api/items').at(-1)!;
      expect(last.auth).not.toBe(`DPoP ${first}`);
      expect(last.proof?.claims.ath).toBe(sha256(last.auth!.slice(5)));
    });

    it('retries once with the nonce the API asks for, and uses it from then on', async () => {
      const { server, api, o } = await signedIn(kind);
      server.apiNonce = 'api-nonce-1';
      expect(await api.get()).toBe(200);
      let calls = server.api('/api/items');
      expect(calls).toHaveLength(2);
      expect(calls[0].proof?.claims).not.toHaveProperty('nonce');
      expect(calls[1].proof?.claims.nonce).toBe('api-nonce-1');
      expect(await api.get()).toBe(200);
      calls = server.api('/api/items');
      expect(calls).toHaveLength(3);
      expect(calls[2].proof?.claims.nonce).toBe('api-nonce-1');
      expect(o.signOuts).toEqual([]);
    });

    it('retries a nonce request only once, then passes the answer on (no loop, session kept)', async () => {
      const { server, api, o, first } = await signedIn(kind);
      server.nonceAlways = true;
      expect(await api.get()).toBe(401);
      expect(server.api('/api/items')).toHaveLength(2);
      expect(server.api('/v1/token')).toHaveLength(0);
      expect(o.signOuts).toEqual([]);
      expect(api.client.session?.accessToken).toBe(first);
    });

    it('retries a refresh once with the nonce the refresher asks for', async () => {
      const { server, api } = await signedIn(kind);
      server.tokenNonce = 'token-nonce-1';
      server.tg.expireAll();
      expect(await api.get()).toBe(200);
      const refreshes = server.api('/v1/token');
      expect(refreshes).toHaveLength(2);
      expect(refreshes[0].proof?.claims).not.toHaveProperty('nonce');
      expect(refreshes[1].proof?.claims.nonce).toBe('token-nonce-1');
      expect(refreshes[0].proof?.claims.jti).not.toBe(refreshes[1].proof?.claims.jti);
    });

    it('answers token_unbound with exactly one refresh, then retries', async () => {
      const { server, api, o, first } = await signedIn(kind);
      server.unbound.add(first);
      expect(await api.get()).toBe(200);
      expect(server.api('/v1/token')).toHaveLength(1);
      const calls = server.api('/api/items');
      expect(calls).toHaveLength(2);
      expect(calls[0].auth).toBe(`DPoP ${first}`);
      expect(calls[1].auth).not.toBe(`DPoP ${first}`);
      expect(o.signOuts).toEqual([]);
    });

    it('a second token_unbound after the refresh does not refresh again: the session ends', async () => {
      const { server, api, o } = await signedIn(kind);
      server.unboundAll = true;
      const err = await api.get().catch((e: unknown) => e);
      expect(err).toBeInstanceOf(TokenGateError);
      expect((err as TokenGateError).code).toBe('token_unbound');
      expect(server.api('/v1/token')).toHaveLength(1);
      expect(server.api('/api/items')).toHaveLength(2);
      expect(o.signOuts).toEqual(['token_unbound']);
      expect(await storedKeys()).toEqual([]);
    });

    it('a refusal before sign-in leaves the key a sign-in running meanwhile was bound to', async () => {
      const server = new DpopServer(origin);
      const o = options();
      const api = makers[kind](server, o);
      // The login page signed its proof; an API call without a token is refused before the sign-in answers.
      const login = await readProof(await dpopProof('POST', `${origin}/login`, { name }));
      const err = await api.get().catch((e: unknown) => e);
      expect((err as TokenGateError).code).toBe('missing_token');
      expect(o.signOuts).toEqual(['missing_token']);
      expect(await storedKeys()).toEqual([name]);
      server.tg.jkt = login.jkt;
      const s = server.tg.signIn();
      await api.client.setTokens(s.body, { date: s.date });
      expect(await api.get()).toBe(200);
      expect(server.api('/api/items').at(-1)?.proof?.jkt).toBe(login.jkt);
    });

    it('sign-out deletes the key; the next sign-in proof has a new one', async () => {
      const { server, api } = await signedIn(kind);
      expect(await api.get()).toBe(200);
      const used = server.api('/api/items')[0].proof!.jkt;
      expect(await storedKeys()).toEqual([name]);
      await api.client.signOut();
      expect(await storedKeys()).toEqual([]);
      const next = await readProof(await dpopProof('POST', `${origin}/login`, { name }));
      expect(next.jkt).not.toBe(used);
    });
  });
}

describe('a clock that is off', () => {
  afterEach(() => {
    // The learned skew is the page's: back to this machine's clock for the other tests.
    rememberClock('no-store', new Date().toUTCString());
  });

  for (const kind of Object.keys(makers)) {
    it(`${kind}: iat follows the servers' clock once an uncached answer told it`, async () => {
      const { server, api } = await signedIn(kind);
      server.tg.serverOffsetMs = 3600_000; // this machine is an hour slow
      const serverNow = () => Math.floor(server.tg.serverNow() / 1000);
      expect(await api.get()).toBe(200);
      // No answer marked no-store yet: the page's own clock.
      expect(Math.abs(server.api('/api/items')[0].proof!.claims.iat! - Math.floor(Date.now() / 1000))).toBeLessThanOrEqual(1);
      // The refresh answer (Cache-Control: no-store) carries the servers' Date.
      server.tg.expireAll();
      expect(await api.get()).toBe(200);
      const last = server.api('/api/items').at(-1)!.proof!.claims.iat!;
      expect(Math.abs(last - serverNow())).toBeLessThanOrEqual(2);
      expect(await api.get()).toBe(200);
      expect(Math.abs(server.api('/api/items').at(-1)!.proof!.claims.iat! - serverNow())).toBeLessThanOrEqual(2);
    });
  }

  it('ignores the Date of an answer that may come from a cache', () => {
    rememberClock('no-store', new Date().toUTCString());
    rememberClock('max-age=60', new Date(Date.now() - 3600_000).toUTCString());
    rememberClock(null, new Date(Date.now() - 3600_000).toUTCString());
    return dpopProof('GET', `${origin}/api/x`, { name }).then(async (p) => {
      expect(Math.abs((await readProof(p)).claims.iat! - Math.floor(Date.now() / 1000))).toBeLessThanOrEqual(2);
    });
  });
});

describe('across tabs', () => {
  it("another tab's sign-out makes this tab forget its copy of the key, not delete the stored one", async () => {
    const hub = new ChannelHub();
    const server = new DpopServer(origin);
    server.tg.jkt = await dpopThumbprint(name);
    const o = options({ channel: hub.channel() });
    const f = createFetch({ ...o, fetch: server.fetch });
    const s = server.tg.signIn();
    await f.client.setTokens(s.body, { date: s.date });
    expect((await f(`${origin}/api/items`)).status).toBe(200);
    // The other tab signed out (deleting the key) and a new sign-in there made a new key before this tab heard of it.
    await deleteDpopKey(name);
    const fresh = await dpopThumbprint(name);
    hub.channel().postMessage({ type: 'signout', reason: 'signed_out' });
    await vi.waitFor(() => expect(o.signOuts).toEqual(['signed_out']));
    await vi.waitFor(async () => expect(await storedKeys()).toEqual([name]));
    expect(await dpopThumbprint(name)).toBe(fresh);
    f.client.close();
  });
});

describe('without the dpop option', () => {
  it('sends Bearer and no proof', async () => {
    const server = new DpopServer(origin);
    const f = createFetch({ ...options({ dpop: false }), fetch: server.fetch });
    const s = server.tg.signIn();
    await f.client.setTokens(s.body, { date: s.date });
    expect((await f(`${origin}/api/items`)).status).toBe(200);
    server.tg.expireAll();
    expect((await f(`${origin}/api/items`)).status).toBe(200);
    for (const c of server.seen) expect(c.proof).toBeUndefined();
    expect(server.seen[0].auth).toBe(`Bearer ${s.body.access_token}`);
    expect(await storedKeys()).toEqual([]);
  });
});

describe('with dpop: true and an unbound token (the refresher does not bind)', () => {
  it('keeps the Bearer scheme and still sends a proof', async () => {
    const server = new DpopServer(origin);
    const f = createFetch({ ...options(), fetch: server.fetch });
    const s = server.tg.signIn();
    await f.client.setTokens(s.body, { date: s.date });
    expect((await f(`${origin}/api/items`)).status).toBe(200);
    expect(server.seen[0].auth).toBe(`Bearer ${s.body.access_token}`);
    expect(server.seen[0].proof?.claims.ath).toBe(sha256(s.body.access_token));
  });
});
