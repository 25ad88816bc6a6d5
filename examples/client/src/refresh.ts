import type { RefreshError } from './errors.js';
import type { ResolvedOptions } from './options.js';
import { errorField } from './reason.js';
import type { TokenResponse } from './session.js';

/** How the refresh token travels: in the JSON body (default) or as the refresher's HttpOnly cookie. */
export type RefreshTransport = 'body' | 'cookie';

/** The outcome of a refresh: a new pair, or why not. */
export type RefreshResult =
  | { ok: true; body: TokenResponse; date: string | null; receivedAt: number }
  /**
   * fatal: the refresher refused the grant (a 4xx, or a 2xx without a token), or could not be reached at all: the session is over.
   * Not fatal: the refresher answered 429 or 5xx through every attempt: keep the session, fail the waiting requests.
   */
  | { ok: false; fatal: boolean; error: string; status: number };

/**
 * formPost is the init of a form POST to the refresher (refresh and revoke):
 * the caller's refreshHeaders last, credentials only with the cookie
 * transport, never cached.
 */
export function formPost(o: ResolvedOptions, body: URLSearchParams, headers?: Record<string, string>, signal?: AbortSignal): RequestInit {
  return {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers, ...o.refreshHeaders },
    body: body.toString(),
    credentials: o.transport === 'cookie' ? 'include' : 'same-origin',
    cache: 'no-store',
    signal,
  };
}

/**
 * callRefresher sends `POST refreshUrl` with `grant_type=refresh_token` (RFC 6749 §6)
 * and retries what is worth retrying, up to refreshAttempts attempts: `503 temporarily_unavailable` and
 * `429 slow_down` after their `Retry-After`, other 5xx answers and network
 * failures after an exponential backoff with jitter (from 500 ms, capped by maxBackoff; Retry-After is capped too).
 * Each attempt is abandoned after refreshTimeout. Retrying the same refresh token is safe:
 * the refresher replays the same new pair within its reuse-grace window.
 *
 * With the cookie transport the request carries credentials and no token
 * (refreshToken is ignored); the refresher reads its HttpOnly cookie and sets the rotated one.
 * onError hears of every failed attempt.
 */
export async function callRefresher(o: ResolvedOptions, refreshToken: string | undefined, onError: (e: RefreshError) => void): Promise<RefreshResult> {
  const params = new URLSearchParams({ grant_type: 'refresh_token' });
  if (o.transport === 'body' && refreshToken) params.set('refresh_token', refreshToken);
  for (let attempt = 1; ; attempt++) {
    const ac = new AbortController();
    const timer = setTimeout(() => ac.abort(), o.refreshTimeoutMs);
    // res stays undefined on a network failure; body is then what fetch threw.
    let res: Response | undefined;
    let body: unknown;
    try {
      res = await o.fetch(o.refreshUrl, formPost(o, params, { accept: 'application/json' }, ac.signal));
    } catch (cause) {
      body = cause;
    }
    const receivedAt = o.now();
    if (res) {
      try {
        body = await res.json();
      } catch {
        // not JSON: read as no body
      }
    }
    clearTimeout(timer);
    if (res?.ok && isTokenResponse(body)) {
      return { ok: true, body, date: res.headers.get('date'), receivedAt };
    }
    const status = res ? res.status : 0;
    const error = !res ? 'network_error' : errorField(body) ?? (res.ok ? 'invalid_response' : `http_${status}`);
    // 503 (store unreachable) and 429 say so with Retry-After; other 5xx
    // (a proxy's 502/504 while the refresher restarts) are just as transient.
    // None of them says anything about the refresh token: keep the session.
    // Network failures are retried too, but when they last the session cannot continue.
    const retryable = !res || status === 429 || status >= 500;
    let wait: number | undefined;
    if (retryable && attempt < o.refreshAttempts) {
      wait = Math.min((res && retryAfter(res.headers.get('retry-after'), o.now())) ?? backoff(o.maxBackoffMs, attempt), o.maxBackoffMs);
    }
    onError({ error, status, attempt, willRetry: wait !== undefined, retryInMs: wait, cause: body });
    if (wait === undefined) return { ok: false, fatal: !res || !retryable, error, status };
    await sleep(wait);
  }
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

function backoff(maxMs: number, attempt: number): number {
  const exp = Math.min(maxMs, 500 * 2 ** (attempt - 1));
  // Full jitter keeps many tabs/users from retrying in lockstep.
  return Math.round(exp / 2 + Math.random() * (exp / 2));
}

/** sleep resolves after ms (a macrotask turn for 0). */
export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function isTokenResponse(v: unknown): v is TokenResponse {
  const t = (v as { access_token?: unknown } | null | undefined)?.access_token;
  return typeof t === 'string' && t !== '';
}
