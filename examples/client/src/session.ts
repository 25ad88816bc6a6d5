/**
 * The session the client holds: the access token, what it knows about its
 * expiry in local time, and (body transport only) the refresh token.
 */

/** What the refresher answers on `POST /v1/sessions` and `POST /v1/token`. */
export interface TokenResponse {
  access_token: string;
  token_type?: string;
  /** Seconds the access token is valid for. */
  expires_in?: number;
  /** Absent with the cookie transport: the refresh token is an HttpOnly cookie. */
  refresh_token?: string;
  refresh_expires_in?: number;
  session_id?: string;
}

/** The stored session. Times are local epoch milliseconds, already corrected for clock skew. */
export interface Session {
  accessToken: string;
  /** When the access token expires, in this machine's clock. */
  expiresAt: number;
  /** When this client obtained the access token, in this machine's clock. */
  obtainedAt: number;
  /** Body transport: the refresh token. Never present with the cookie transport. */
  refreshToken?: string;
  sessionId?: string;
}

/** What `onTokens` receives. The refresh token is deliberately not part of it. */
export interface TokenInfo {
  accessToken: string;
  expiresAt: Date;
  sessionId?: string;
  /** Claims of the access token (decoded, not verified: for display, never for decisions). */
  claims: Record<string, unknown>;
  /** `refresh` (this tab refreshed), `sign-in` (setTokens), `other-tab` (learned from another tab). */
  source: 'refresh' | 'sign-in' | 'other-tab';
}

/**
 * decodeClaims returns the payload of a JWS compact token, or an empty object
 * for anything else. Nothing here verifies the signature: the client only
 * reads `exp` to plan refreshes, the server decides.
 */
export function decodeClaims(token: string): Record<string, unknown> {
  const parts = token.split('.');
  if (parts.length !== 3) return {};
  try {
    const b64 = parts[1].replace(/-/g, '+').replace(/_/g, '/');
    const bin = atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4));
    const bytes = Uint8Array.from(bin, (c) => c.charCodeAt(0));
    const obj: unknown = JSON.parse(new TextDecoder().decode(bytes));
    return typeof obj === 'object' && obj !== null && !Array.isArray(obj) ? (obj as Record<string, unknown>) : {};
  } catch {
    return {};
  }
}

/**
 * clockSkew is the server's clock minus ours, in milliseconds, from an HTTP
 * `Date` header received at localNow. It is 0 when the header is missing or
 * unparsable (a cross-origin response hides `Date` unless the server exposes
 * it).
 */
export function clockSkew(dateHeader: string | null | undefined, localNow: number): number {
  if (!dateHeader) return 0;
  const server = Date.parse(dateHeader);
  if (Number.isNaN(server)) return 0;
  return server - localNow;
}

/**
 * sessionFromResponse turns a token response received at localNow into a
 * Session. The expiry comes from the token's `exp` converted to local time
 * with the skew from the `Date` header (`exp − skew`). Without a usable
 * `Date` it falls back to `expires_in`, and without `exp` (an opaque token)
 * it uses `expires_in` alone. A Date resolution of one second is fine: the
 * client refreshes well ahead of expiry.
 *
 * previous keeps the refresh token when the response has none (cookie
 * transport never has one; a body-transport response always does).
 */
export function sessionFromResponse(
  res: TokenResponse,
  dateHeader: string | null | undefined,
  localNow: number,
  previous?: Session,
): Session {
  const claims = decodeClaims(res.access_token);
  const exp = typeof claims.exp === 'number' ? claims.exp * 1000 : undefined;
  const ttl = typeof res.expires_in === 'number' && res.expires_in > 0 ? res.expires_in * 1000 : undefined;
  let expiresAt: number;
  const server = dateHeader ? Date.parse(dateHeader) : NaN;
  if (exp !== undefined && !Number.isNaN(server)) {
    expiresAt = exp - (server - localNow);
  } else if (ttl !== undefined) {
    expiresAt = localNow + ttl;
  } else if (exp !== undefined) {
    expiresAt = exp; // nothing better than trusting both clocks agree
  } else {
    expiresAt = localNow + 60_000; // unknown lifetime: treat as short so it gets refreshed on a 401
  }
  const s: Session = { accessToken: res.access_token, expiresAt, obtainedAt: localNow };
  const refresh = res.refresh_token ?? previous?.refreshToken;
  if (refresh) s.refreshToken = refresh;
  const sid = res.session_id ?? (typeof claims.sid === 'string' ? claims.sid : undefined) ?? previous?.sessionId;
  if (sid) s.sessionId = sid;
  return s;
}

/** isSession validates what came out of storage or another tab. */
export function isSession(v: unknown): v is Session {
  // Property reads on a primitive give undefined, so only objects pass.
  const s = v as Record<string, unknown> | null | undefined;
  return (
    typeof s?.accessToken === 'string' &&
    s.accessToken !== '' &&
    typeof s.expiresAt === 'number' &&
    typeof s.obtainedAt === 'number' &&
    (s.refreshToken === undefined || typeof s.refreshToken === 'string') &&
    (s.sessionId === undefined || typeof s.sessionId === 'string')
  );
}
