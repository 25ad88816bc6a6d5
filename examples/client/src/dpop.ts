/**
 * DPoP (RFC 9449) for @tokengate/client: a non-extractable ECDSA P-256 key
 * kept in IndexedDB, and a signed proof for each request.
 *
 * This module is the subpath `@tokengate/client/dpop`. A client made with
 * `dpop: true` loads it on first use with a dynamic import(), so an app
 * without DPoP does not download it (with a bundler that splits chunks). A
 * login page imports it directly to sign its sign-in request
 * ({@link dpopHeaders}).
 */

/** Options of the proof helpers. */
export interface DpopProofOptions {
  /** The access token the request carries: the proof gets its hash (`ath`). API calls only; not for sign-in or refresh. */
  accessToken?: string;
  /** The server nonce to sign. Default: the last `DPoP-Nonce` this page received from the URL's origin. */
  nonce?: string;
  /** Which key: the client's `name` option. Default `tokengate`. */
  name?: string;
}

const DB = 'tokengate-dpop';
const STORE = 'keys';
const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };

/** The key pair of each name, loaded (or made) once per page. */
const keys = new Map<string, Promise<CryptoKeyPair>>();
/** The public JWK of each key pair, exported once. */
const jwks = new WeakMap<CryptoKey, Promise<JsonWebKey>>();
/** The last DPoP-Nonce received from each origin. */
const nonces = new Map<string, string>();
/** The servers' clock minus this machine's, in milliseconds (see {@link rememberClock}). */
let skew = 0;

/**
 * dpopProof signs a DPoP proof for one request: header `typ: dpop+jwt`,
 * `alg: ES256`, the public `jwk`; claims `jti` (128 random bits), `htm`,
 * `htu` (the absolute URL without query and fragment), `iat`, and `ath` and
 * `nonce` when known. The key is made on first use and kept in IndexedDB.
 */
export async function dpopProof(method: string, url: string, options: DpopProofOptions = {}): Promise<string> {
  const pair = await dpopKey(options.name);
  let jwk = jwks.get(pair.publicKey);
  if (!jwk) jwks.set(pair.publicKey, (jwk = crypto.subtle.exportKey('jwk', pair.publicKey)));
  const { kty, crv, x, y } = await jwk;
  const u = absolute(url);
  const claims: Record<string, unknown> = {
    jti: b64(crypto.getRandomValues(new Uint8Array(16)) as BufferSource),
    htm: method.toUpperCase(),
    htu: u.protocol + '//' + u.host + u.pathname,
    iat: Math.floor((Date.now() + skew) / 1000),
  };
  if (options.accessToken) claims.ath = b64(await crypto.subtle.digest('SHA-256', utf8(options.accessToken)));
  const nonce = options.nonce ?? nonces.get(u.origin);
  if (nonce) claims.nonce = nonce;
  const input = `${b64json({ typ: 'dpop+jwt', alg: 'ES256', jwk: { kty, crv, x, y } })}.${b64json(claims)}`;
  // WebCrypto's ECDSA signature is r||s, the JWS form (RFC 7518 §3.4).
  return `${input}.${b64(await crypto.subtle.sign(ALG, pair.privateKey, utf8(input)))}`;
}

/** dpopHeaders is `{ DPoP: proof }` for a request, to spread into its headers (the sign-in request of a login page). */
export async function dpopHeaders(method: string, url: string, options?: DpopProofOptions): Promise<{ DPoP: string }> {
  return { DPoP: await dpopProof(method, url, options) };
}

/** dpopThumbprint is the RFC 7638 thumbprint (`jkt`) of the key: what `cnf.jkt` of a bound token says. */
export async function dpopThumbprint(name?: string): Promise<string> {
  const { crv, kty, x, y } = await crypto.subtle.exportKey('jwk', (await dpopKey(name)).publicKey);
  return b64(await crypto.subtle.digest('SHA-256', utf8(JSON.stringify({ crv, kty, x, y }))));
}

/**
 * dpopKey returns the key pair, from IndexedDB or made now. The private key
 * is not extractable. Two tabs that start at once end up with one key: each
 * makes a candidate, and one transaction stores it only when none is there
 * and returns the stored one otherwise. Without IndexedDB (blocked, private
 * modes of old browsers) the key lives in this page's memory only.
 */
export function dpopKey(name = 'tokengate'): Promise<CryptoKeyPair> {
  let p = keys.get(name);
  if (!p) {
    keys.set(name, (p = loadKey(name)));
    p.catch(() => keys.get(name) === p && keys.delete(name));
  }
  return p;
}

/**
 * storedDpopKey reads the key pair kept in IndexedDB without making one:
 * undefined when there is none (never signed in, or signed out), or when
 * IndexedDB is unusable.
 */
export async function storedDpopKey(name = 'tokengate'): Promise<CryptoKeyPair | undefined> {
  const db = await openDb();
  if (!db) return undefined;
  const found = await run(db, 'readonly', (s) => s.get(name)).finally(() => db.close());
  return isPair(found) ? found : undefined;
}

/**
 * deleteDpopKey forgets the key: removed from IndexedDB (the next sign-in
 * makes a new one), or, with onlyHere, only from this page's memory (it
 * is read again on next use).
 */
export async function deleteDpopKey(name = 'tokengate', onlyHere = false): Promise<void> {
  keys.delete(name);
  if (onlyHere) return;
  const db = await openDb();
  if (db) await run(db, 'readwrite', (s) => void s.delete(name)).finally(() => db.close());
  // A proof signed while the record was being deleted may have cached the old key again.
  keys.delete(name);
}

/**
 * rememberNonce keeps the `DPoP-Nonce` of a response from url's origin
 * for the next proofs to that origin. null and empty are ignored.
 */
export function rememberNonce(url: string, nonce: string | null | undefined): void {
  if (!nonce) return;
  const origin = absolute(url).origin;
  nonces.delete(origin);
  nonces.set(origin, nonce);
  // A handful of origins at most; never grow without bound.
  if (nonces.size > 32) nonces.delete(nonces.keys().next().value as string);
}

/**
 * rememberClock learns how far this machine's clock is from the servers'
 * from the `Date` of an answer marked `Cache-Control: no-store` (token
 * responses, denials: never served from a cache, so their Date is now), so
 * that `iat` stays within the servers' window when this clock is off. Proofs
 * made before any such answer (the sign-in's) use this clock as it is.
 */
export function rememberClock(cacheControl: string | null | undefined, date: string | null | undefined): void {
  const server = date && /\bno-store\b/i.test(cacheControl ?? '') ? Date.parse(date) : NaN;
  if (!Number.isNaN(server)) skew = server - Date.now();
}

/**
 * isNonceChallenge says whether an answer asks for a proof with a nonce:
 * extauthz's 401 (`WWW-Authenticate: DPoP error="use_dpop_nonce"` or the
 * JSON error) or the refresher's 400 `{"error":"use_dpop_nonce"}`.
 */
export function isNonceChallenge(status: number, wwwAuthenticate: string | null | undefined, body: unknown): boolean {
  if (status !== 400 && status !== 401) return false;
  if (/\berror\s*=\s*"?use_dpop_nonce\b/i.test(wwwAuthenticate ?? '')) return true;
  let b = body;
  if (typeof b === 'string') {
    try {
      b = JSON.parse(b);
    } catch {
      return false;
    }
  }
  return (b as { error?: unknown } | null | undefined)?.error === 'use_dpop_nonce';
}

/**
 * signRequest is what one request sends: its `DPoP` proof (with `ath` when
 * authorization carries an access token) and its `Authorization`, whose
 * scheme becomes `DPoP` when the token is DPoP-bound (its claims carry
 * `cnf.jkt`); an unbound token keeps `Bearer`.
 */
export async function signRequest(method: string, url: string, authorization: string | null | undefined, name?: string): Promise<{ authorization?: string; dpop: string }> {
  const token = /^(?:bearer|dpop)\s+(\S+)$/i.exec(authorization ?? '')?.[1];
  return {
    authorization: token && `${bound(token) ? 'DPoP' : 'Bearer'} ${token}`,
    dpop: await dpopProof(method, url, { accessToken: token, name }),
  };
}

/**
 * dpopFetch wraps a fetch so that every request carries a `DPoP` proof
 * (with `ath` when it carries an access token, whose scheme becomes `DPoP`
 * when the token is bound), every `DPoP-Nonce` received is remembered (and
 * the servers' clock, {@link rememberClock}), and an answer asking for a
 * nonce is retried once with it.
 */
export function dpopFetch(f: typeof fetch, name?: string): typeof fetch {
  return async (input: RequestInfo | URL, init?: RequestInit): Promise<Response> => {
    let req = typeof input === 'object' && 'url' in input ? input : undefined;
    const url = req ? req.url : String(input);
    const method = init?.method ?? req?.method ?? 'GET';
    for (let again = false; ; again = true) {
      const spare = again ? undefined : req?.clone();
      const headers = new Headers(init?.headers ?? req?.headers);
      const signed = await signRequest(method, url, headers.get('authorization'), name);
      if (signed.authorization) headers.set('authorization', signed.authorization);
      headers.set('dpop', signed.dpop);
      const res = await f(req ?? input, { ...init, headers });
      const nonce = res.headers.get('dpop-nonce');
      rememberNonce(url, nonce);
      rememberClock(res.headers.get('cache-control'), res.headers.get('date'));
      if (again || !nonce || !isNonceChallenge(res.status, res.headers.get('www-authenticate'), await jsonOf(res))) return res;
      req = spare;
    }
  };
}

/** The DPoP operations of one client (its key name), as the client and its adapters use them. */
export interface Dpop {
  /** fetch wraps f: see {@link dpopFetch}. */
  fetch(f: typeof fetch): typeof fetch;
  /** sign signs one request: see {@link signRequest}. */
  sign(method: string, url: string, authorization: string | null | undefined): Promise<{ authorization?: string; dpop: string }>;
  /** deleteKey: see {@link deleteDpopKey}; it never rejects (ending a session must not fail on storage). */
  deleteKey(onlyHere?: boolean): Promise<void>;
  rememberNonce: typeof rememberNonce;
  rememberClock: typeof rememberClock;
  isNonceChallenge: typeof isNonceChallenge;
}

/** dpopFor is the DPoP operations for the key name (the client's `name` option). */
export function dpopFor(name?: string): Dpop {
  return {
    fetch: (f) => dpopFetch(f, name),
    sign: (method, url, authorization) => signRequest(method, url, authorization, name),
    deleteKey: (onlyHere) => deleteDpopKey(name, onlyHere).catch(() => undefined),
    rememberNonce,
    rememberClock,
    isNonceChallenge,
  };
}

async function jsonOf(res: Response): Promise<unknown> {
  if (!/json/i.test(res.headers.get('content-type') ?? '')) return undefined;
  return res
    .clone()
    .json()
    .catch(() => undefined);
}

function bound(token: string): boolean {
  try {
    const claims = JSON.parse(new TextDecoder().decode(unb64(token.split('.')[1] ?? ''))) as { cnf?: { jkt?: unknown } } | null;
    return typeof claims?.cnf?.jkt === 'string';
  } catch {
    return false;
  }
}

async function loadKey(name: string): Promise<CryptoKeyPair> {
  if (!globalThis.crypto?.subtle) throw new Error('@tokengate/client: DPoP needs WebCrypto, which browsers offer only in a secure context (HTTPS, or http://localhost)');
  const db = await openDb();
  try {
    if (db) {
      const found = await run(db, 'readonly', (s) => s.get(name));
      if (isPair(found)) return found;
    }
    // Not extractable: script on the page can sign with it, never copy it.
    const fresh = await crypto.subtle.generateKey(ALG, false, ['sign', 'verify']);
    if (!db) return fresh;
    // Create only if absent, in one transaction: of two tabs racing, the second reads the first one's key.
    let out = fresh;
    await run(db, 'readwrite', (s) => {
      const g = s.get(name);
      g.onsuccess = () => {
        if (isPair(g.result)) out = g.result;
        else s.add(fresh, name);
      };
    }).catch(() => undefined); // a key that cannot be stored still signs for this page
    return out;
  } finally {
    db?.close();
  }
}

function isPair(v: unknown): v is CryptoKeyPair {
  const p = v as Partial<CryptoKeyPair> | undefined;
  return !!p?.privateKey && !!p.publicKey;
}

/** openDb opens the key database, or resolves undefined when there is no usable IndexedDB. */
function openDb(): Promise<IDBDatabase | undefined> {
  return new Promise((resolve) => {
    try {
      const r = globalThis.indexedDB.open(DB, 1);
      r.onupgradeneeded = () => r.result.createObjectStore(STORE);
      r.onsuccess = () => resolve(r.result);
      r.onerror = () => resolve(undefined);
    } catch {
      resolve(undefined);
    }
  });
}

/** run runs one transaction on the key store and resolves with the result of fn's request when it commits. */
function run<T>(db: IDBDatabase, mode: IDBTransactionMode, fn: (s: IDBObjectStore) => IDBRequest<T> | void): Promise<T | undefined> {
  return new Promise((resolve, reject) => {
    const t = db.transaction(STORE, mode);
    const r = fn(t.objectStore(STORE));
    t.oncomplete = () => resolve(r ? r.result : undefined);
    t.onerror = t.onabort = () => reject(t.error);
  });
}

function absolute(url: string): URL {
  return new URL(url, (globalThis as { location?: { href?: string } }).location?.href ?? 'http://localhost/');
}

function utf8(s: string): BufferSource {
  return new TextEncoder().encode(s) as BufferSource;
}

function b64json(v: unknown): string {
  return b64(utf8(JSON.stringify(v)));
}

function b64(data: BufferSource): string {
  let s = '';
  for (const c of new Uint8Array(data as ArrayBuffer)) s += String.fromCharCode(c);
  return btoa(s).replace(/=+$/, '').replace(/\+/g, '-').replace(/\//g, '_');
}

function unb64(s: string): Uint8Array {
  const b = atob(s.replace(/-/g, '+').replace(/_/g, '/') + '='.repeat((4 - (s.length % 4)) % 4));
  return Uint8Array.from(b, (c) => c.charCodeAt(0));
}
