import { TokenClient } from './client.js';
import { TokenGateError } from './errors.js';
import { boundFetch, type TokenClientOptions } from './options.js';
import { denialReason } from './reason.js';

export interface CreateFetchOptions extends TokenClientOptions {
  /** Share one TokenClient with attachTokenRefresh or another fetch. */
  client?: TokenClient;
  /** The fetch to wrap. Default globalThis.fetch. */
  fetch?: typeof fetch;
}

/** A fetch with tokengate's behaviour, and its client. */
export type TokenFetch = ((input: RequestInfo | URL, init?: RequestInit) => Promise<Response>) & { client: TokenClient };

/**
 * createFetch returns a fetch that behaves like attachTokenRefresh's axios
 * instance: Authorization on each request, waiting for a running refresh,
 * proactive refresh, one refresh and one retry on 401 `token_expired`,
 * sign-out and a TokenGateError rejection on the other 401 reasons. Other
 * answers (including 403 insufficient_scope) are returned as usual.
 *
 * The request is cloned before it is sent so that a body can be sent again
 * on the retry.
 */
export function createFetch(options: CreateFetchOptions = {}): TokenFetch {
  const client = options.client ?? new TokenClient(options);
  const raw = boundFetch(options.fetch);
  const signed = client.signing(raw);

  const send = async (request: Request, retried: boolean): Promise<Response> => {
    if (!client.shouldAuthorize(request.url)) return raw(request);
    const spare = retried ? undefined : request.clone();
    const token = await client.beforeRequest();
    const headers = new Headers(request.headers);
    if (token) headers.set('Authorization', `Bearer ${token}`);
    else headers.delete('Authorization');
    const res = await signed(new Request(request, { headers }));
    if (res.status !== 401 && res.status !== 403) {
      if (res.ok) client.afterResponse(token, (name) => res.headers.get(name));
      return res;
    }
    const reason = denialReason(res.status, res.headers.get('www-authenticate'), await readBody(res));
    let action;
    try {
      action = await client.onUnauthorized(reason, token, retried);
    } catch (e) {
      if (e instanceof TokenGateError) throw new TokenGateError(e.code, e.message, { status: e.status ?? res.status, cause: res });
      throw e;
    }
    if (action === 'pass' || !spare) return res;
    return send(spare, true);
  };

  const f = ((input: RequestInfo | URL, init?: RequestInit) => send(new Request(input, init), false)) as TokenFetch;
  f.client = client;
  return f;
}

/** readBody reads a JSON answer from a clone, leaving the original readable for the caller. */
async function readBody(res: Response): Promise<unknown> {
  const type = res.headers.get('content-type') ?? '';
  if (!/json/i.test(type)) return undefined;
  try {
    return await res.clone().json();
  } catch {
    return undefined;
  }
}
