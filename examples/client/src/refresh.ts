import type { RefreshError } from './errors.js';
import type { TokenResponse } from './session.js';

/** How the refresh token travels: in the JSON body (default) or as the refresher's HttpOnly cookie. */
export type RefreshTransport = 'body' | 'cookie';

export interface RefreshCall {
  url: string;
  transport: RefreshTransport;
  /** Body transport: the refresh token to present. */
  refreshToken?: string;
  fetch: typeof fetch;
  /** Attempts in total for 429, 5xx and network failures (at least 1). */
  maxAttempts: number;
  /** Backoff base and cap, milliseconds; Retry-After overrides the computed delay (capped too). */
  backoffBaseMs: number;
  backoffMaxMs: number;
  /** Abort one attempt after this long. */
  timeoutMs: number;
  /** Extra headers for the refresh request. */
  headers?: Record<string, string>;
  now: () => number;
  onError?: (e: RefreshError) => void;
}

/** The outcome of a refresh: a new pair, or why not. */
export type RefreshResult =
  | { ok: true; body: TokenResponse; date: string | null; receivedAt: number }
  /** The refresher refused the grant (a 4xx, or a 2xx without a token), or could not be reached at all: the session is over. */
  | { ok: false; fatal: true; error: string; status: number }
  /** The refresher answered 429 or 5xx through every attempt: keep the session, fail the waiting requests. */
  | { ok: false; fatal: false; error: string; status: number };

/**
 * callRefresher sends `POST url` with `grant_type=refresh_token` (RFC 6749 §6)
 * and retries what is worth retrying: `503 temporarily_unavailable` and
 * `429 slow_down` after their `Retry-After`, other 5xx answers and network
 * failures after an exponential backoff with jitter. Retrying the same refresh token is safe:
 * the refresher replays the same new pair within its reuse-grace window.
 *
 * With the cookie transport the request carries credentials and no token;
 * the refresher reads its HttpOnly cookie and sets the rotated one.
 */
export async function callRefresher(c: RefreshCall): Promise<RefreshResult> {
  const params = new URLSearchParams({ grant_type: 'refresh_token' });
  if (c.transport === 'body' && c.refreshToken) params.set('refresh_token', c.refreshToken);
  let last: { error: string; status: number } = { error: 'network_error', status: 0 };
  for (let attempt = 1; attempt <= Math.max(1, c.maxAttempts); attempt++) {
    const ac = new AbortController();
    const timer = setTimeout(() => ac.abort(), c.timeoutMs);
    let res: Response;
    try {
      res = await c.fetch(c.url, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json', ...c.headers },
        body: params.toString(),
        credentials: c.transport === 'cookie' ? 'include' : 'same-origin',
        cache: 'no-store',
        signal: ac.signal,
      });
    } catch (cause) {
      clearTimeout(timer);
      last = { error: 'network_error', status: 0 };
      const wait = attempt < c.maxAttempts ? backoff(c, attempt) : undefined;
      c.onError?.({ error: 'network_error', status: 0, attempt, willRetry: wait !== undefined, retryInMs: wait, cause });
      if (wait === undefined) break;
      await sleep(wait);
      continue;
    }
    const receivedAt = c.now();
    let body: unknown;
    try {
      body = await res.json();
    } catch {
      body = undefined;
    } finally {
      clearTimeout(timer);
    }
    if (res.ok && isTokenResponse(body)) {
      return { ok: true, body, date: res.headers.get('date'), receivedAt };
    }
    const error = errorCode(body) ?? (res.ok ? 'invalid_response' : `http_${res.status}`);
    last = { error, status: res.status };
    // 503 (store unreachable) and 429 say so with Retry-After; other 5xx
    // (a proxy's 502/504 while the refresher restarts) are just as transient.
    // None of them says anything about the refresh token: keep the session.
    const retryable = res.status === 429 || res.status >= 500;
    let wait: number | undefined;
    if (retryable && attempt < c.maxAttempts) {
      wait = retryAfter(res.headers.get('retry-after'), c.now()) ?? backoff(c, attempt);
      wait = Math.min(wait, c.backoffMaxMs);
    }
    c.onError?.({ error, status: res.status, attempt, willRetry: wait !== undefined, retryInMs: wait, cause: body });
    if (wait === undefined) {
      if (retryable) return { ok: false, fatal: false, error, status: res.status };
      return { ok: false, fatal: true, error, status: res.status };
    }
    await sleep(wait);
  }
  // Network failures through every attempt: the refresh failed, the session cannot continue.
  return { ok: false, fatal: last.status === 0 ? true : false, error: last.error, status: last.status };
}

/** retryAfter parses Retry-After (delta-seconds or an HTTP date) into milliseconds from now. */
export function retryAfter(header: string | null, now: number): number | undefined {
  if (!header) return undefined;
  const t = header.trim();
  if (/^\d+$/.test(t)) return Number(t) * 1000;
  const when = Date.parse(t);
  if (Number.isNaN(when)) return undefined;
  return Math.max(0, when - now);
}

function backoff(c: RefreshCall, attempt: number): number {
  const exp = Math.min(c.backoffMaxMs, c.backoffBaseMs * 2 ** (attempt - 1));
  // Full jitter keeps many tabs/users from retrying in lockstep.
  return Math.round(exp / 2 + Math.random() * (exp / 2));
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function errorCode(body: unknown): string | undefined {
  if (typeof body === 'object' && body !== null) {
    const e = (body as { error?: unknown }).error;
    if (typeof e === 'string' && e !== '') return e;
  }
  return undefined;
}

function isTokenResponse(v: unknown): v is TokenResponse {
  return typeof v === 'object' && v !== null && typeof (v as { access_token?: unknown }).access_token === 'string' && (v as { access_token: string }).access_token !== '';
}
