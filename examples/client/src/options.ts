import type { RefreshError, SignOutReason } from './errors.js';
import type { LockManagerLike } from './lock.js';
import type { RefreshTransport } from './refresh.js';
import type { TokenInfo } from './session.js';
import { memoryStorage, webStorage, type TokenStorage } from './storage.js';

/** The part of BroadcastChannel the client uses. */
export interface ChannelLike {
  postMessage(message: unknown): void;
  addEventListener(type: 'message', listener: (ev: { data: unknown }) => void): void;
  close(): void;
}

/** Tells whether the page is visible and when that changes (document.visibilityState by default). */
export interface VisibilitySource {
  visible(): boolean;
  subscribe(onChange: () => void): () => void;
}

/** The options of a TokenClient (and of attachTokenRefresh and createFetch). Every default is in {@link defaultOptions}. */
export interface TokenClientOptions {
  /** The refresher's token endpoint as the browser reaches it. Default `/v1/token`. */
  refreshUrl?: string;
  /** The refresher's revocation endpoint, used by signOut(). Default `/v1/revoke`; with the cookie transport `<refreshUrl>/revoke` (`/v1/token/revoke`), where the cookie is sent. */
  revokeUrl?: string;
  /**
   * `body` (default): the refresh token comes in the token response and is sent in the form body.
   * `cookie`: the refresher keeps it in an HttpOnly cookie (`--refresh-token-transport=cookie`);
   * the client never sees it and sends the refresh request with credentials.
   */
  transport?: RefreshTransport;
  /** Where this tab keeps the session. Default `memory` (mirrored to other tabs over BroadcastChannel). */
  storage?: 'memory' | 'sessionStorage' | 'localStorage' | TokenStorage;
  /** Refresh before a request (and on a timer) when the access token expires within this many seconds. Default 60. */
  refreshAhead?: number;
  /** Refresh on a timer, refreshAhead before expiry, while the page is visible. Default true; false refreshes only around requests. */
  autoRefresh?: boolean;
  /** Coordinate with other tabs (Web Locks + BroadcastChannel) when the browser has them. Default true. */
  crossTab?: boolean;
  /** Name of the Web Lock and the BroadcastChannel. Default `tokengate`. */
  name?: string;
  /** Seconds to wait for another tab's refresh before stealing the lock. Default 10. */
  lockTimeout?: number;
  /** Seconds before one refresh attempt is abandoned. Default 10. */
  refreshTimeout?: number;
  /** Attempts per refresh for 429, 5xx and network failures. Default 4. */
  refreshAttempts?: number;
  /** Upper bound of one backoff wait (seconds), also caps Retry-After. Default 30. */
  maxBackoff?: number;
  /** Extra headers on the refresh and revoke requests (e.g. a CSRF header your proxy requires). Default none. */
  refreshHeaders?: Record<string, string>;
  /**
   * The response header in which extauthz tells how many seconds the access
   * token has left (extauthz's `headers.expires_in_header`). Default
   * `x-token-expires-in`.
   */
  expiresInHeader?: string;
  /**
   * Whether a request to url gets the access token. Default: relative URLs and
   * the page's own origin only, so the token never leaks to third parties.
   * The refresh and revoke endpoints never get it.
   */
  authorize?: (url: string) => boolean;
  /**
   * DPoP (RFC 9449): keep a non-extractable ECDSA P-256 key in IndexedDB and
   * sign a `DPoP` proof for every request this client sends (API calls,
   * refreshes), retry once with the server's nonce on `use_dpop_nonce`, and
   * delete the key when the session ends. The code is loaded on first use
   * (the `@tokengate/client/dpop` module). Default false.
   */
  dpop?: boolean;
  /** A new access token: after sign-in, a refresh here, or a refresh in another tab. */
  onTokens?: (tokens: TokenInfo) => void;
  /** The session ended; called once per session, in every tab. */
  onSignOut?: (reason: SignOutReason) => void;
  /** One refresh attempt failed (whether or not it is retried). */
  onRefreshError?: (error: RefreshError) => void;

  // Process edges, replaceable for tests and unusual hosts.
  /** Used for refresh and revoke calls (and wrapped by createFetch). Default globalThis.fetch. */
  fetch?: typeof fetch;
  /** Default navigator.locks; null disables cross-tab locking. */
  locks?: LockManagerLike | null;
  /** Default `new BroadcastChannel(name)`; null disables cross-tab messages. */
  channel?: ChannelLike | null;
  /** Default from document.visibilityState; null means always visible. */
  visibility?: VisibilitySource | null;
  /** Clock, epoch milliseconds. Default Date.now. */
  now?: () => number;
}

/**
 * defaultOptions is the one table of defaults: resolveOptions merges the
 * caller's options over it once, when a client is made. Two defaults depend
 * on other options and are derived there: `revokeUrl` (from `transport` and
 * `refreshUrl`) and the process edges (`fetch`, `locks`, `channel`,
 * `visibility`, `now`: the browser's, unless `crossTab` is false).
 */
export const defaultOptions = {
  refreshUrl: '/v1/token',
  transport: 'body' as RefreshTransport,
  storage: 'memory' as NonNullable<TokenClientOptions['storage']>,
  refreshAhead: 60,
  autoRefresh: true,
  crossTab: true,
  name: 'tokengate',
  lockTimeout: 10,
  refreshTimeout: 10,
  refreshAttempts: 4,
  maxBackoff: 30,
  refreshHeaders: {} as Record<string, string>,
  expiresInHeader: 'x-token-expires-in',
  authorize: sameOrigin as (url: string) => boolean,
  dpop: false,
};

/** The settings a TokenClient runs on: every option resolved, durations in milliseconds. */
export interface ResolvedOptions {
  refreshUrl: string;
  revokeUrl: string;
  transport: RefreshTransport;
  storage: TokenStorage;
  /** The storage is this tab's memory: an empty read does not mean another tab signed out. */
  storageIsMemory: boolean;
  refreshAheadMs: number;
  autoRefresh: boolean;
  name: string;
  lockTimeoutMs: number;
  refreshTimeoutMs: number;
  refreshAttempts: number;
  maxBackoffMs: number;
  refreshHeaders: Record<string, string>;
  expiresInHeader: string;
  authorize: (url: string) => boolean;
  dpop: boolean;
  onTokens?: (tokens: TokenInfo) => void;
  onSignOut?: (reason: SignOutReason) => void;
  onRefreshError?: (error: RefreshError) => void;
  fetch: typeof fetch;
  locks?: LockManagerLike;
  channel?: ChannelLike;
  visibility?: VisibilitySource;
  now: () => number;
}

/**
 * resolveOptions merges options over defaultOptions (an option left out,
 * undefined or null takes the default) and derives what depends on other
 * options. It runs once per client.
 */
export function resolveOptions(options: TokenClientOptions): ResolvedOptions {
  const o = mergeOptions(defaultOptions, options);
  const fetch = boundFetch(options.fetch);
  // The merged table first (so an option left out takes its default), then
  // what is derived; fields the table keeps under another unit (refreshAhead…) ride along unused.
  return {
    ...o,
    // The refresh cookie is scoped to the token endpoint's path, so with the
    // cookie transport sign-out goes to the revocation endpoint below it.
    revokeUrl: options.revokeUrl ?? (o.transport === 'cookie' ? `${o.refreshUrl.replace(/\/+$/, '')}/revoke` : '/v1/revoke'),
    storage: pickStorage(o.storage, o.name),
    storageIsMemory: o.storage === 'memory',
    refreshAheadMs: o.refreshAhead * 1000,
    lockTimeoutMs: o.lockTimeout * 1000,
    refreshTimeoutMs: o.refreshTimeout * 1000,
    maxBackoffMs: o.maxBackoff * 1000,
    onTokens: options.onTokens,
    onSignOut: options.onSignOut,
    onRefreshError: options.onRefreshError,
    fetch,
    locks: o.crossTab ? (options.locks === undefined ? defaultLocks() : options.locks ?? undefined) : undefined,
    channel: o.crossTab ? (options.channel === undefined ? defaultChannel(o.name) : options.channel ?? undefined) : undefined,
    visibility: options.visibility === undefined ? defaultVisibility() : options.visibility ?? undefined,
    now: options.now ?? (() => Date.now()),
  };
}

/** boundFetch is f, or the global fetch, bound to globalThis; it throws when there is none. */
export function boundFetch(f: typeof fetch | undefined): typeof fetch {
  f ??= globalThis.fetch;
  if (!f) throw new Error('@tokengate/client: no fetch available; pass options.fetch');
  return f.bind(globalThis);
}

/** mergeOptions is defaults overlaid with the options that are set (neither undefined nor null). */
function mergeOptions<D extends object>(defaults: D, options: Partial<{ [K in keyof D]: D[K] | null }>): D {
  const out = { ...defaults };
  for (const key of Object.keys(defaults) as (keyof D)[]) {
    const v = options[key];
    if (v !== undefined && v !== null) out[key] = v;
  }
  return out;
}

function pickStorage(s: NonNullable<TokenClientOptions['storage']>, name: string): TokenStorage {
  if (s === 'memory') return memoryStorage();
  if (s === 'sessionStorage' || s === 'localStorage') return webStorage(globalThis[s], `${name}.session`);
  return s;
}

function defaultLocks(): LockManagerLike | undefined {
  const n = (globalThis as { navigator?: { locks?: LockManagerLike } }).navigator;
  return n?.locks ?? undefined;
}

function defaultChannel(name: string): ChannelLike | undefined {
  if (typeof BroadcastChannel === 'undefined') return undefined;
  try {
    return new BroadcastChannel(name) as unknown as ChannelLike;
  } catch {
    return undefined;
  }
}

function defaultVisibility(): VisibilitySource | undefined {
  const d = (globalThis as { document?: Document }).document;
  if (!d || typeof d.addEventListener !== 'function') return undefined;
  return {
    visible: () => d.visibilityState !== 'hidden',
    subscribe: (cb) => {
      d.addEventListener('visibilitychange', cb);
      return () => d.removeEventListener('visibilitychange', cb);
    },
  };
}

/** baseHref is the page's address, when there is a page. */
export function baseHref(): string | undefined {
  const loc = (globalThis as { location?: { href?: string } }).location;
  return loc?.href;
}

/** sameOrigin is the default authorize: relative URLs and the page's own origin. */
function sameOrigin(url: string): boolean {
  const base = baseHref();
  if (!base) return true;
  try {
    return new URL(url, base).origin === new URL(base).origin;
  } catch {
    return false;
  }
}
