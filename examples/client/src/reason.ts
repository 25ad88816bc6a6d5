import type { DenialReason } from './errors.js';

const KNOWN: ReadonlySet<string> = new Set<DenialReason>([
  'missing_token',
  'token_expired',
  'invalid_token',
  'token_revoked',
  'insufficient_scope',
  'token_unbound',
]);

/**
 * parseWwwAuthenticate reads the `error` (and `error_description`, and
 * tokengate's extension attribute `reason`) of a `Bearer` challenge
 * (RFC 6750 §3). Other schemes in the same header are
 * skipped. It returns undefined when there is no Bearer challenge with an
 * error. With want `dpop` it reads the `DPoP` challenge instead (RFC 9449
 * §7.1, how a DPoP-bound token is refused).
 */
export function parseWwwAuthenticate(header: string | null | undefined, want: 'bearer' | 'dpop' = 'bearer'): { error: string; description?: string; reason?: string } | undefined {
  let scheme: string | undefined;
  let params: Record<string, string> = {};
  const bearerError = () => (scheme === want && params.error ? { error: params.error, description: params.error_description, reason: params.reason } : undefined);
  // The comma-separated items, split only outside quoted strings (in which a
  // backslash escapes the next character; an unclosed quote runs to the end).
  for (let item of header?.match(/(?:[^,"]|"(?:\\[^]|[^"\\])*(?:"|\\?$))+/g) ?? []) {
    item = item.trim();
    // "Scheme param=value" starts a challenge; "param=value" continues one.
    const m = /^([A-Za-z0-9!#$%&'*+.^_`|~-]+)(?:\s+(.*))?$/s.exec(item);
    if (m && !/^\s*=/.test(item.slice(m[1].length))) {
      // The first Bearer challenge with an error is the answer.
      const found = bearerError();
      if (found) return found;
      scheme = m[1].toLowerCase();
      params = {};
      item = m[2] ?? '';
    }
    const p = /^([A-Za-z0-9!#$%&'*+.^_`|~-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|(\S*))$/s.exec(item.trim());
    if (p && scheme) {
      const key = p[1].toLowerCase();
      if (!(key in params)) params[key] = p[2] !== undefined ? p[2].replace(/\\(.)/gs, '$1') : p[3];
    }
  }
  return bearerError();
}

/**
 * denialReason decides why a 401/403 happened, from what the answer carries:
 * the JSON body's `error` first; when the body is unreadable (HTML error page
 * of a proxy, binary, empty), the `www-authenticate` Bearer challenge, or
 * else its DPoP challenge.
 *
 * extauthz's challenge follows RFC 6750: `error="invalid_token"` for expired
 * and revoked tokens too, and tokengate's extension attribute `reason` (for
 * example `reason="token_expired"`) says which — all a proxy such as nginx
 * `auth_request` passes on. A bare `Bearer` challenge (no `error`) means no
 * token was sent: `missing_token`. The `error_description` is prose for
 * people and never decides. Anything unrecognised returns undefined: the
 * answer is not tokengate's, and the client leaves it alone.
 *
 * body may be a parsed object (axios), a string, or anything else (treated as
 * unreadable).
 */
export function denialReason(status: number, wwwAuthenticate: string | null | undefined, body: unknown): DenialReason | undefined {
  if (status !== 401 && status !== 403) return undefined;
  const fromBody = bodyError(body);
  if (fromBody !== undefined) return KNOWN.has(fromBody) ? (fromBody as DenialReason) : undefined;
  const challenge = parseWwwAuthenticate(wwwAuthenticate) ?? parseWwwAuthenticate(wwwAuthenticate, 'dpop');
  if (!challenge) {
    // A bare "Bearer" challenge without an error is RFC 6750's "no credentials".
    if (status === 401 && wwwAuthenticate && /^\s*bearer\b/i.test(wwwAuthenticate)) return 'missing_token';
    return undefined;
  }
  if (!KNOWN.has(challenge.error)) return undefined;
  if (challenge.reason !== undefined && KNOWN.has(challenge.reason)) return challenge.reason as DenialReason;
  return challenge.error as DenialReason;
}

/** bodyError returns the JSON `error` string of body, or undefined when body is not such JSON. */
function bodyError(body: unknown): string | undefined {
  let obj: unknown = body;
  if (typeof body === 'string') {
    const t = body.trim();
    if (!t.startsWith('{')) return undefined;
    try {
      obj = JSON.parse(t);
    } catch {
      return undefined;
    }
  }
  return errorField(obj);
}

/**
 * errorField returns the non-empty string `error` of a parsed JSON object
 * (not an array), or undefined. Anything else has no such field: binary data
 * (ArrayBuffer, typed arrays, Blob — what axios hands over for
 * `responseType: 'arraybuffer'` or `'blob'`) included.
 */
export function errorField(obj: unknown): string | undefined {
  const e = Array.isArray(obj) ? undefined : (obj as { error?: unknown } | null | undefined)?.error;
  return typeof e === 'string' && e !== '' ? e : undefined;
}
