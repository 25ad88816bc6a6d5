/**
 * The vocabulary of outcomes shared with the tokengate services: the JSON
 * `error` of an extauthz denial and of a refresher error.
 */

/** Why extauthz refused a request (its JSON `error`, or `error=` in `www-authenticate`). */
export type DenialReason =
  | 'missing_token'
  | 'token_expired'
  | 'invalid_token'
  | 'token_revoked'
  | 'insufficient_scope'
  /** The token is bound to a network or device this request does not come from: the client refreshes once. */
  | 'token_unbound';

/**
 * Why the client signed the user out. `onSignOut(reason)` receives one of these:
 * - `missing_token`, `invalid_token`, `token_revoked`: extauthz refused the token;
 * - `token_unbound`: extauthz refused the token as bound elsewhere (network, device) again after one refresh;
 * - `invalid_grant`: the refresher refused the refresh token (expired, revoked, reused);
 * - `refresh_failed`: the refresh failed otherwise (network, unexpected answer) after its retries;
 * - `signed_out`: the app called `signOut()` (in this tab or another).
 */
export type SignOutReason =
  | 'missing_token'
  | 'invalid_token'
  | 'token_revoked'
  | 'token_unbound'
  | 'invalid_grant'
  | 'refresh_failed'
  | 'signed_out';

/** The `code` of a {@link TokenGateError}. */
export type TokenGateErrorCode =
  | SignOutReason
  /** The request was retried once after a refresh and was refused again as expired. */
  | 'token_expired'
  /** The refresher stayed unavailable (503/429) through every retry; the session is kept. */
  | 'temporarily_unavailable';

/**
 * TokenGateError is how a request fails because of authentication: it is
 * thrown (rejected) by the axios interceptor and by the fetch wrapper for the
 * request that was refused and for every request queued behind a failed
 * refresh.
 */
export class TokenGateError extends Error {
  readonly name = 'TokenGateError';
  /** What went wrong; see {@link TokenGateErrorCode}. */
  readonly code: TokenGateErrorCode;
  /** HTTP status of the answer that caused this, when there was one. */
  readonly status?: number;
  /** The original failure: an AxiosError, a fetch Response, a network error. */
  readonly cause?: unknown;

  constructor(code: TokenGateErrorCode, message: string, init: { status?: number; cause?: unknown } = {}) {
    super(message);
    this.code = code;
    this.status = init.status;
    this.cause = init.cause;
  }

  /** True when the session is over and the user has to sign in again. */
  get signedOut(): boolean {
    return this.code !== 'token_expired' && this.code !== 'temporarily_unavailable';
  }
}

/** isTokenGateError narrows an unknown rejection. */
export function isTokenGateError(e: unknown): e is TokenGateError {
  return e instanceof TokenGateError || (typeof e === 'object' && e !== null && (e as { name?: unknown }).name === 'TokenGateError');
}

/**
 * RefreshError describes one failed call to the refresher's `/v1/token`; it
 * is what `onRefreshError` receives. `willRetry` says whether the client
 * tries again (503 and 429 honour `Retry-After`; network errors back off).
 */
export interface RefreshError {
  /** The refresher's JSON `error` (`invalid_grant`, `temporarily_unavailable`, `slow_down`…), or `network_error`. */
  error: string;
  /** HTTP status, 0 for a network error. */
  status: number;
  /** Attempt number, from 1. */
  attempt: number;
  /** Whether another attempt follows. */
  willRetry: boolean;
  /** Milliseconds until that attempt. */
  retryInMs?: number;
  cause?: unknown;
}
