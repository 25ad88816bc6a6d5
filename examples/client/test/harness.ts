// Test edges: a fake tokengate (refresher + extauthz-protected API) behind a
// fetch function, an in-process Web Locks manager and BroadcastChannel hub.
// Everything inside the client runs for real.
import { readFileSync } from 'node:fs';
import axios, { type AxiosAdapter } from 'axios';
import type { ChannelLike, LockManagerLike, TokenResponse } from '../src/index.js';

/** One refusal as extauthz answers it (see fixtures/denials.json). */
export interface Denial {
  status: number;
  grpc_code: string;
  /** Every header of the answer, lower-case names (no date, no content-length). */
  headers: Record<string, string>;
  body: { error: string; error_description: string };
}

/**
 * denials are extauthz's real answers, by reason: fixtures/denials.json is
 * written by extauthz/denials_fixture_test.go from the Go response code, and
 * that test fails whenever the answers change and the file does not follow.
 */
export const denials: Readonly<Record<string, Denial>> = (
  JSON.parse(readFileSync(new URL('./fixtures/denials.json', import.meta.url), 'utf8')) as { denials: Record<string, Denial> }
).denials;

/** denialResponse is extauthz's answer for reason; with html, what nginx auth_request passes on (its own page, extauthz's headers). */
export function denialResponse(reason: string, init: { html?: boolean; date?: string } = {}): Response {
  const d = denials[reason];
  if (!d) throw new Error(`no such denial in fixtures/denials.json: ${reason}`);
  const headers: Record<string, string> = { ...d.headers };
  if (init.date) headers.date = init.date;
  if (init.html) {
    headers['content-type'] = 'text/html';
    return new Response(`<html><body>${d.status}</body></html>`, { status: d.status, headers });
  }
  // Go's json.Encoder: compact, one trailing newline.
  return new Response(JSON.stringify(d.body) + '\n', { status: d.status, headers });
}

/** What the fake refresher issues: a token response with every field present. */
export type IssuedPair = Required<Pick<TokenResponse, 'access_token' | 'refresh_token' | 'expires_in' | 'session_id'>> & TokenResponse;

function b64url(s: string): string {
  return Buffer.from(s, 'utf8').toString('base64').replace(/=+$/, '').replace(/\+/g, '-').replace(/\//g, '_');
}

/** jwt makes an unsigned-looking JWS with the given claims (the client never verifies). */
export function jwt(claims: Record<string, unknown>): string {
  return `${b64url(JSON.stringify({ alg: 'ES256', typ: 'at+jwt', kid: 'k1' }))}.${b64url(JSON.stringify(claims))}.c2ln`;
}

export interface Call {
  path: string;
  auth: string | null;
  body: string;
}

/**
 * FakeTokengate answers like the refresher and an extauthz-protected API.
 * Its clock is the (fake) Date.now() plus serverOffsetMs.
 */
export class FakeTokengate {
  ttlSeconds = 10;
  serverOffsetMs = 0;
  /** Answers to return from /v1/token before the normal behaviour (status, body, headers). */
  tokenFailures: { status: number; body?: unknown; headers?: Record<string, string>; network?: boolean }[] = [];
  /** How a denial reaches the client: extauthz's JSON body (true) or, as behind nginx auth_request, an HTML page with extauthz's headers (false). */
  jsonDenials = true;
  /** When set, the API refuses every token with this reason (a key of fixtures/denials.json). */
  refuseAll: string | undefined;
  /** Tokens the API refuses with this reason regardless of expiry. */
  refuse = new Map<string, string>();
  /** The response header telling the client how long its token has left (extauthz's headers.expires_in_header). */
  expiresInHeader = 'x-token-expires-in';
  /** DPoP: the thumbprint issued tokens are bound to (`cnf.jkt`); undefined issues unbound tokens. */
  jkt: string | undefined;
  calls: Call[] = [];
  private seq = 0;
  private access = new Map<string, number>(); // token -> exp (server ms)
  private refresh = new Map<string, 'active' | 'rotated'>();

  serverNow(): number {
    return Date.now() + this.serverOffsetMs;
  }

  /** signIn issues a pair like POST /v1/sessions. */
  signIn(): { body: IssuedPair; date: string } {
    return { body: this.issue(), date: new Date(this.serverNow()).toUTCString() };
  }

  /** expireAll makes every issued access token expired on the server. */
  expireAll(): void {
    for (const k of this.access.keys()) this.access.set(k, this.serverNow() - 1000);
  }

  count(path: string): number {
    return this.calls.filter((c) => c.path === path).length;
  }

  private issue(): IssuedPair {
    this.seq++;
    const now = this.serverNow();
    const exp = Math.floor(now / 1000) + this.ttlSeconds;
    const claims: Record<string, unknown> = { sub: 'u1', sid: 's1', exp, iat: Math.floor(now / 1000), jti: `j${this.seq}` };
    if (this.jkt) claims.cnf = { jkt: this.jkt };
    const token = jwt(claims);
    this.access.set(token, exp * 1000);
    const rt = `rt${this.seq}`;
    this.refresh.set(rt, 'active');
    return { access_token: token, token_type: this.jkt ? 'DPoP' : 'Bearer', expires_in: this.ttlSeconds, refresh_token: rt, refresh_expires_in: 3600, session_id: 's1' };
  }

  fetch = async (input: RequestInfo | URL, init?: RequestInit): Promise<Response> => {
    const req = new Request(input, init);
    const url = new URL(req.url);
    const body = await req.text();
    this.calls.push({ path: url.pathname, auth: req.headers.get('authorization'), body });
    const date = new Date(this.serverNow()).toUTCString();
    if (url.pathname === '/v1/token') {
      const f = this.tokenFailures.shift();
      if (f?.network) throw new TypeError('fetch failed');
      if (f) return json(f.status, f.body ?? {}, { date, ...f.headers });
      const rt = new URLSearchParams(body).get('refresh_token') ?? '';
      if (this.refresh.get(rt) !== 'active') return json(400, { error: 'invalid_grant', error_description: 'refresh token is not active' }, { date });
      this.refresh.set(rt, 'rotated');
      return json(200, this.issue(), { date, 'cache-control': 'no-store' });
    }
    if (url.pathname === '/v1/revoke') return new Response(null, { status: 200, headers: { date } });
    // The protected API.
    const auth = req.headers.get('authorization');
    const token = auth?.startsWith('Bearer ') ? auth.slice(7) : auth?.startsWith('DPoP ') ? auth.slice(5) : undefined;
    let reason: string | undefined;
    if (!token) reason = 'missing_token';
    else if (this.refuseAll) reason = this.refuseAll;
    else if (this.refuse.has(token)) reason = this.refuse.get(token);
    else if (!this.access.has(token)) reason = 'invalid_token';
    else if (this.access.get(token)! <= this.serverNow()) reason = 'token_expired';
    if (reason) return denialResponse(reason, { html: !this.jsonDenials, date });
    const left = Math.floor((this.access.get(token!)! - this.serverNow()) / 1000);
    return json(200, { ok: true, path: url.pathname, token }, { date, [this.expiresInHeader]: String(left) });
  };
}

function json(status: number, body: unknown, headers: Record<string, string>): Response {
  return new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/json', ...headers } });
}

/**
 * FakeLocks implements the Web Locks request() semantics the client relies
 * on: exclusive FIFO grant, AbortSignal while waiting, steal.
 */
export class FakeLocks implements LockManagerLike {
  private held = new Map<string, { release: () => void } | undefined>();
  private queues = new Map<string, { grant: () => void; signal?: AbortSignal }[]>();
  steals = 0;

  request<T>(name: string, options: { signal?: AbortSignal; steal?: boolean }, callback: () => Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const run = () => {
        let released = false;
        const release = () => {
          if (released) return;
          released = true;
          if (this.held.get(name) === holder) this.held.delete(name);
          this.next(name);
        };
        const holder = { release };
        this.held.set(name, holder);
        callback().then(
          (v) => {
            release();
            resolve(v);
          },
          (e) => {
            release();
            reject(e);
          },
        );
      };
      if (options.steal) {
        this.steals++;
        this.held.delete(name); // the old holder keeps running but no longer excludes
        run();
        return;
      }
      if (options.signal?.aborted) return reject(abortError());
      if (!this.held.has(name)) return run();
      const q = this.queues.get(name) ?? [];
      const entry = { grant: run, signal: options.signal };
      q.push(entry);
      this.queues.set(name, q);
      options.signal?.addEventListener('abort', () => {
        const i = q.indexOf(entry);
        if (i >= 0) {
          q.splice(i, 1);
          reject(abortError());
        }
      });
    });
  }

  /** hold takes the lock and never lets go (a hung tab) until the returned function is called. */
  hold(name: string): () => void {
    let release!: () => void;
    void this.request(name, {}, () => new Promise<void>((r) => (release = r)));
    return () => release();
  }

  private next(name: string): void {
    if (this.held.has(name)) return;
    const q = this.queues.get(name);
    const e = q?.shift();
    e?.grant();
  }
}

function abortError(): Error {
  const e = new Error('The request was aborted.');
  e.name = 'AbortError';
  return e;
}

/** ChannelHub connects fake BroadcastChannels of one name; delivery is asynchronous, never to the sender. */
export class ChannelHub {
  private members = new Set<FakeChannel>();
  channel(): ChannelLike {
    const c = new FakeChannel(this.members);
    this.members.add(c);
    return c;
  }
}

class FakeChannel implements ChannelLike {
  private listeners: ((ev: { data: unknown }) => void)[] = [];
  constructor(private members: Set<FakeChannel>) {}
  postMessage(message: unknown): void {
    const data = structuredClone(message);
    for (const m of this.members) if (m !== this) queueMicrotask(() => m.listeners.forEach((l) => l({ data })));
  }
  addEventListener(_type: 'message', listener: (ev: { data: unknown }) => void): void {
    this.listeners.push(listener);
  }
  close(): void {
    this.members.delete(this);
  }
}

/** Visibility is a switchable page visibility. */
export class Visibility {
  private v = true;
  private subs = new Set<() => void>();
  visible = (): boolean => this.v;
  subscribe = (cb: () => void): (() => void) => {
    this.subs.add(cb);
    return () => this.subs.delete(cb);
  };
  set(v: boolean): void {
    this.v = v;
    this.subs.forEach((cb) => cb());
  }
}

/** axiosAdapter sends axios requests through a fake server's fetch: the process edge. */
export function axiosAdapter(server: { fetch(input: RequestInfo | URL, init?: RequestInit): Promise<Response> }): AxiosAdapter {
  return async (config) => {
    const headers = new Headers();
    for (const [k, v] of Object.entries(config.headers.toJSON())) if (v != null) headers.set(k, String(v));
    const res = await server.fetch(new URL(config.url!, config.baseURL).toString(), { method: config.method?.toUpperCase(), headers, body: config.data });
    const text = await res.text();
    let data: unknown = text;
    try {
      data = JSON.parse(text);
    } catch {
      /* keep text */
    }
    const response = { data, status: res.status, statusText: res.statusText, headers: Object.fromEntries(res.headers), config, request: {} };
    if (config.validateStatus ? config.validateStatus(res.status) : res.status >= 200 && res.status < 300) return response;
    throw new axios.AxiosError(`Request failed with status code ${res.status}`, 'ERR_BAD_REQUEST', config, {}, response);
  };
}

/** storedKeys lists the names that have a key in the IndexedDB database the client's DPoP keys live in. */
export function storedKeys(): Promise<string[]> {
  return new Promise((resolve, reject) => {
    const r = indexedDB.open('tokengate-dpop', 1);
    r.onupgradeneeded = () => r.result.createObjectStore('keys');
    r.onerror = () => reject(r.error);
    r.onsuccess = () => {
      const db = r.result;
      const g = db.transaction('keys', 'readonly').objectStore('keys').getAllKeys();
      g.onsuccess = () => {
        db.close();
        resolve(g.result.map(String).sort());
      };
      g.onerror = () => reject(g.error);
    };
  });
}
