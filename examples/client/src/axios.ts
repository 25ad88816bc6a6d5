import type { AxiosError, AxiosInstance, AxiosResponse, InternalAxiosRequestConfig } from 'axios';
import { TokenClient } from './client.js';
import { TokenGateError } from './errors.js';
import type { TokenClientOptions } from './options.js';
import { denialReason } from './reason.js';

/** Per-request bookkeeping, kept on the request config so it survives axios' config merge on retry. */
interface RequestMeta {
  /** The access token this attempt carried (undefined: none). */
  token?: string;
  /** This attempt is the one retry after a refresh. */
  retried: boolean;
  /** DPoP: this attempt is the one retry with the server's nonce. */
  nonced?: boolean;
}

declare module 'axios' {
  interface AxiosRequestConfig {
    /** @internal tokengate's per-request state; do not set. */
    tokengate?: RequestMeta;
    /** Set false to send this request without the access token and without refresh handling. */
    tokengateAuth?: boolean;
  }
}

export interface AttachOptions extends TokenClientOptions {
  /** Share one TokenClient between several axios instances and createFetch. */
  client?: TokenClient;
}

/** What attachTokenRefresh returns: the client (sign-in, sign-out, state) and a way to detach. */
export interface AttachedTokenRefresh {
  client: TokenClient;
  detach(): void;
}

/**
 * attachTokenRefresh installs tokengate's request and response interceptors
 * on an axios instance: each request gets `Authorization: Bearer …` on its
 * own headers (never on defaults), waits for a running refresh, refreshes
 * ahead of expiry; a 401 `token_expired` refreshes once for everyone and
 * retries the request once (awaited, so the caller gets the retried answer);
 * other 401 reasons sign out and reject with a TokenGateError.
 */
export function attachTokenRefresh(instance: AxiosInstance, options: AttachOptions = {}): AttachedTokenRefresh {
  const client = options.client ?? new TokenClient(options);

  const requestId = instance.interceptors.request.use(async (config: InternalAxiosRequestConfig) => {
    const url = fullUrl(instance, config);
    if (config.tokengateAuth === false || !client.shouldAuthorize(url)) return config;
    const { retried = false, nonced } = config.tokengate ?? {};
    const token = await client.beforeRequest();
    if (token) config.headers.set('Authorization', `Bearer ${token}`);
    else config.headers.delete('Authorization');
    const signed = await (await client.dpop())?.sign(config.method ?? 'get', url, token && `Bearer ${token}`);
    if (signed) {
      if (signed.authorization) config.headers.set('Authorization', signed.authorization);
      config.headers.set('DPoP', signed.dpop);
    }
    config.tokengate = { token, retried, nonced };
    return config;
  });

  /**
   * refused handles a 401/403 whether axios rejected it (the default) or
   * resolved it (an app's validateStatus accepting 4xx): retry once, pass
   * it on, or fail with a TokenGateError.
   */
  const refused = async (res: AxiosResponse, meta: RequestMeta, passOn: () => AxiosResponse | Promise<never>, cause: unknown) => {
    const again = await nonceRetry(res, meta);
    if (again) return again;
    if (res.status !== 401 && res.status !== 403) return passOn();
    const reason = denialReason(res.status, headerOf(res.headers, 'www-authenticate'), res.data);
    let action;
    try {
      action = await client.onUnauthorized(reason, meta.token, meta.retried);
    } catch (e) {
      if (e instanceof TokenGateError) throw new TokenGateError(e.code, e.message, { status: e.status ?? res.status, cause });
      throw e;
    }
    if (action === 'pass') return passOn();
    const config = res.config;
    config.tokengate = { token: meta.token, retried: true };
    return instance.request(config);
  };

  /**
   * nonceRetry (DPoP) remembers the server's DPoP-Nonce (and clock); an answer asking
   * for a proof with it is retried once, and that retry's promise returned.
   */
  const nonceRetry = async (res: AxiosResponse, meta: RequestMeta): Promise<AxiosResponse | undefined> => {
    const dpop = await client.dpop();
    if (!dpop) return undefined;
    dpop.rememberClock(headerOf(res.headers, 'cache-control'), headerOf(res.headers, 'date'));
    const nonce = headerOf(res.headers, 'dpop-nonce');
    if (!nonce) return undefined;
    dpop.rememberNonce(fullUrl(instance, res.config), nonce);
    if (meta.nonced || !dpop.isNonceChallenge(res.status, headerOf(res.headers, 'www-authenticate'), res.data)) return undefined;
    res.config.tokengate = { ...meta, nonced: true };
    return instance.request(res.config);
  };

  const responseId = instance.interceptors.response.use(
    async (res: AxiosResponse) => {
      const meta = res.config.tokengate;
      if (!meta) return res;
      if (res.status === 401 || res.status === 403) return refused(res, meta, () => res, res);
      const again = await nonceRetry(res, meta);
      if (again) return again;
      client.afterResponse(meta.token, (name) => headerOf(res.headers, name));
      return res;
    },
    async (error: AxiosError) => {
      const res = error.response;
      const meta = error.config?.tokengate;
      if (!res || !meta) throw error;
      return refused(res, meta, () => Promise.reject(error), error);
    },
  );

  return {
    client,
    detach() {
      instance.interceptors.request.eject(requestId);
      instance.interceptors.response.eject(responseId);
    },
  };
}

function headerOf(headers: unknown, name: string): string | null {
  if (!headers) return null;
  const h = headers as { get?: (n: string) => unknown } & Record<string, unknown>;
  const v = typeof h.get === 'function' ? h.get(name) : h[name] ?? h[name.toLowerCase()];
  if (v === undefined || v === null || v === false) return null;
  return Array.isArray(v) ? v.join(', ') : String(v);
}

function fullUrl(instance: AxiosInstance, config: InternalAxiosRequestConfig): string {
  const url = config.url ?? '';
  const base = config.baseURL ?? instance.defaults.baseURL;
  if (/^[a-z][a-z0-9+.-]*:/i.test(url) || !base) return url;
  return base.replace(/\/+$/, '') + '/' + url.replace(/^\/+/, '');
}
