import type { Dpop } from './dpop.js';
import { TokenGateError, type DenialReason, type SignOutReason } from './errors.js';
import { withLock } from './lock.js';
import { baseHref, resolveOptions, type ResolvedOptions, type TokenClientOptions } from './options.js';
import { callRefresher, formPost, sleep } from './refresh.js';
import { decodeClaims, isSession, sessionFromResponse, type Session, type TokenInfo, type TokenResponse } from './session.js';

type Message =
  | { type: 'tokens'; session: Session }
  | { type: 'signout'; reason: SignOutReason }
  | { type: 'hello' };

/**
 * What an adapter does with a 401/403: retry once with the current token, or leave the answer alone.
 * @internal
 */
export type UnauthorizedAction = 'retry' | 'pass';

/**
 * TokenClient holds one session and keeps its access token usable. The axios
 * interceptor and the fetch wrapper are thin adapters over it; one client can
 * serve both.
 */
export class TokenClient {
  /** Every option, resolved once against defaultOptions. */
  private readonly o: ResolvedOptions;
  private current: Session | null = null;
  private inflight: Promise<Session> | undefined;
  private signedOut = false;
  /** Bumped by every sign-in and sign-out: a refresh that started in an older epoch must not revive a session. */
  private epoch = 0;
  private timer: ReturnType<typeof setTimeout> | undefined;
  /** Stops listening to visibility changes. */
  private unwatch: (() => void) | undefined;
  private lastRefreshAt: number | undefined;
  private closed = false;
  private readonly ready: Promise<void>;
  private dpopState: Promise<Dpop> | undefined;

  constructor(options: TokenClientOptions = {}) {
    this.o = resolveOptions(options);
    // Refresh (and revoke) requests carry a proof too.
    this.o.fetch = this.signing(this.o.fetch);
    this.o.channel?.addEventListener('message', (ev) => this.onMessage(ev.data));
    this.unwatch = this.o.visibility?.subscribe(() => this.schedule());
    this.ready = Promise.resolve()
      .then(() => this.o.storage.get())
      // Storage that cannot be read (blocked by the browser, corrupt) is an empty session, not a broken client.
      .catch(() => null)
      .then((s) => {
        if (s && !this.current) {
          this.current = s;
          this.schedule();
        }
        // Memory storage starts empty in a new tab: ask the open tabs for the session.
        if (!this.current) this.post({ type: 'hello' });
      });
  }

  /** Store the token response of a sign-in (what your login backend got from POST /v1/sessions). */
  async setTokens(res: TokenResponse, init: { date?: string | null } = {}): Promise<void> {
    await this.ready;
    const s = sessionFromResponse(res, init.date, this.o.now());
    this.epoch++;
    await this.adopt(s, 'sign-in', true);
  }

  /** The current access token (refreshing first if it is about to expire), or null when signed out. */
  async getAccessToken(): Promise<string | null> {
    return (await this.beforeRequest()) ?? null;
  }

  /** Refresh now (single flight in this tab and across tabs) and return the new access token. */
  async refresh(): Promise<string> {
    await this.ready;
    return (await this.refreshOnce(this.current?.accessToken)).accessToken;
  }

  /** The session as far as the page may know it (no refresh token), or null. */
  get session(): { accessToken: string; expiresAt: Date; sessionId?: string; claims: Record<string, unknown> } | null {
    return this.current && view(this.current);
  }

  /** When this tab last refreshed successfully. */
  get lastRefresh(): Date | undefined {
    return this.lastRefreshAt === undefined ? undefined : new Date(this.lastRefreshAt);
  }

  /** Whether a refresh is running in this tab. */
  get refreshing(): boolean {
    return this.inflight !== undefined;
  }

  /**
   * Sign out: revoke the refresh token at the refresher (RFC 7009), forget the
   * session here and in every other tab, and call onSignOut('signed_out').
   */
  async signOut(): Promise<void> {
    await this.ready;
    const s = this.current ?? (await this.o.storage.get());
    const body = new URLSearchParams();
    if (this.o.transport === 'body' && s?.refreshToken) {
      body.set('token', s.refreshToken);
      body.set('token_type_hint', 'refresh_token');
    }
    if (body.has('token') || this.o.transport === 'cookie') {
      try {
        await this.o.fetch(this.o.revokeUrl, formPost(this.o, body));
      } catch {
        // Signing out locally must not depend on the network.
      }
    }
    await this.endSession('signed_out', true);
  }

  /** Stop timers and listeners. The client is unusable afterwards. */
  close(): void {
    this.closed = true;
    clearTimeout(this.timer);
    this.unwatch?.();
    this.o.channel?.close();
  }

  // ----- adapter hooks: called by the axios interceptor and the fetch wrapper, not part of the public API -----

  /**
   * This client's DPoP signer (the module `./dpop.js`, loaded on first use); undefined without the dpop option.
   * @internal
   */
  dpop(): Promise<Dpop> | undefined {
    return this.o.dpop ? (this.dpopState ??= import('./dpop.js').then((m) => m.dpopFor(this.o.name))) : undefined;
  }

  /**
   * signing wraps f so that each request carries a DPoP proof (with the dpop option; otherwise f itself).
   * @internal
   */
  signing(f: typeof fetch): typeof fetch {
    return this.o.dpop ? async (input, init) => (await this.dpop())!.fetch(f)(input, init) : f;
  }

  /**
   * Whether a request to url should carry the token.
   * @internal
   */
  shouldAuthorize(url: string): boolean {
    if (sameUrl(url, this.o.refreshUrl) || sameUrl(url, this.o.revokeUrl)) return false;
    return this.o.authorize(url);
  }

  /**
   * beforeRequest returns the token to send: it waits for a running refresh,
   * refreshes first when the token expires within refreshAhead, and with the
   * cookie transport obtains a first token for a fresh tab. undefined = send
   * without a token. Rejects with TokenGateError when the session ended.
   * @internal
   */
  async beforeRequest(): Promise<string | undefined> {
    await this.ready;
    if (this.inflight) {
      try {
        await this.inflight;
      } catch (e) {
        // A transient refresher failure does not stop a request whose token still works.
        const cur = this.current;
        if (!(transient(e) && cur && cur.expiresAt > this.o.now())) throw e;
      }
    }
    let s = await this.load();
    if (!s) {
      if (this.o.transport === 'cookie' && !this.signedOut) {
        s = await this.refreshOnce(undefined);
        return s.accessToken;
      }
      return undefined;
    }
    if (this.expiringSoon(s)) {
      try {
        s = await this.refreshOnce(s.accessToken);
      } catch (e) {
        // The refresher is briefly unavailable but the token still works: use it.
        if (transient(e) && s.expiresAt > this.o.now()) return s.accessToken;
        throw e;
      }
    }
    return s.accessToken;
  }

  /**
   * afterResponse lets a successful answer correct the expiry estimate from
   * its expiresInHeader (`x-token-expires-in`); header reads one response header.
   * @internal
   */
  afterResponse(tokenUsed: string | undefined, header: (name: string) => string | null | undefined): void {
    const cur = this.current;
    if (!tokenUsed || !cur || cur.accessToken !== tokenUsed) return;
    const left = header(this.o.expiresInHeader);
    if (!left) return;
    const secs = Number(left.trim());
    if (!Number.isFinite(secs) || secs < 0) return;
    const expiresAt = this.o.now() + secs * 1000;
    // Sub-second jitter is noise; only move the estimate for a real difference.
    if (Math.abs(expiresAt - cur.expiresAt) < 1000) return;
    this.current = { ...cur, expiresAt, obtainedAt: Math.min(cur.obtainedAt, expiresAt) };
    this.schedule();
  }

  /**
   * onUnauthorized decides what to do with a refused request. token_expired:
   * refresh (joining a running one) and retry once. token_unbound (bound to
   * another network or device): the same once; refused so again, it signs
   * out like the reasons that follow. invalid_token,
   * token_revoked, missing_token: sign out and reject with a TokenGateError —
   * unless the request went out with an older token than the one the client
   * now holds, in which case it is retried once with the newer one.
   * insufficient_scope and answers that are not tokengate's pass through.
   * @internal
   */
  async onUnauthorized(reason: DenialReason | undefined, tokenUsed: string | undefined, retried: boolean): Promise<UnauthorizedAction> {
    await this.ready;
    if (reason === undefined || reason === 'insufficient_scope') return 'pass';
    // token_unbound: a fresh token is bound to where this page is now; refused again, it ends the session below.
    if (reason === 'token_expired' || (reason === 'token_unbound' && !retried)) {
      if (retried) {
        throw new TokenGateError('token_expired', 'the request was refused as expired again after a refresh', { status: 401 });
      }
      if (this.inflight) {
        await this.inflight;
        return 'retry';
      }
      const s = await this.load();
      if (s && s.accessToken !== tokenUsed && s.expiresAt > this.o.now()) return 'retry';
      await this.refreshOnce(tokenUsed);
      return 'retry';
    }
    if (!retried) {
      if (this.inflight) await this.inflight.catch(() => undefined);
      const s = this.current;
      if (s && s.accessToken !== tokenUsed) return 'retry';
    }
    await this.endSession(reason, true);
    throw new TokenGateError(reason, `signed out: ${reason}`, { status: 401 });
  }

  // ----- internals -----

  /** load re-reads storage, keeping this tab's expiry estimate for the same token. */
  private async load(): Promise<Session | null> {
    const stored = await this.o.storage.get();
    const cur = this.current;
    if (!stored) {
      // Storage shared with other tabs (localStorage) may have been cleared by a sign-out there.
      return (this.current = this.o.storageIsMemory ? cur : null);
    }
    if (cur && (cur.accessToken === stored.accessToken || !(stored.obtainedAt >= cur.obtainedAt))) return cur;
    this.current = stored;
    this.signedOut = false;
    this.schedule();
    return stored;
  }

  /** refreshAheadMs is refreshAhead, but never more than half the token's life, so a large refreshAhead does not refresh on every request. */
  private aheadFor(s: Session): number {
    return Math.min(this.o.refreshAheadMs, Math.max(0, (s.expiresAt - s.obtainedAt) / 2));
  }

  private expiringSoon(s: Session): boolean {
    return s.expiresAt - this.o.now() <= this.aheadFor(s);
  }

  /** refreshOnce is the in-tab single flight: every caller during a refresh shares its outcome. */
  private refreshOnce(stale: string | undefined): Promise<Session> {
    if (this.inflight) return this.inflight;
    const p = this.doRefresh(stale).finally(() => {
      if (this.inflight === p) this.inflight = undefined;
    });
    this.inflight = p;
    return p;
  }

  private doRefresh(stale: string | undefined): Promise<Session> {
    const epoch = this.epoch;
    return withLock(this.o.locks, `${this.o.name}:refresh`, this.o.lockTimeoutMs, async () => {
      // Another tab may have refreshed while we waited for the lock; its
      // session is in shared storage or arrived over BroadcastChannel. Give
      // already-delivered messages a turn before deciding.
      if (this.o.channel) await sleep(0);
      const s = await this.load();
      if (s && s.accessToken !== stale && !this.expiringSoon(s)) return s;
      if (!s && this.o.transport === 'body') {
        await this.endSession('missing_token', true);
        throw new TokenGateError('missing_token', 'no session to refresh');
      }
      const r = await callRefresher(this.o, s?.refreshToken, (e) => this.emit(() => this.o.onRefreshError?.(e)));
      if (this.epoch !== epoch) {
        // Signed out (or signed in anew) while the refresher answered: its pair belongs to a session this tab no longer has.
        if (this.current) return this.current;
        throw new TokenGateError('signed_out', 'the session ended while refreshing');
      }
      if (r.ok) {
        const next = sessionFromResponse(r.body, r.date, r.receivedAt, s ?? undefined);
        this.lastRefreshAt = r.receivedAt;
        await this.adopt(next, 'refresh', true);
        return next;
      }
      if (r.fatal) {
        const reason: SignOutReason = r.error === 'invalid_grant' ? 'invalid_grant' : 'refresh_failed';
        await this.endSession(reason, true);
        throw new TokenGateError(reason, `refresh failed: ${r.error}`, { status: r.status || undefined });
      }
      throw new TokenGateError('temporarily_unavailable', `refresher unavailable: ${r.error}`, { status: r.status });
    });
  }

  private async adopt(s: Session, source: TokenInfo['source'], broadcast: boolean): Promise<void> {
    this.current = s;
    this.signedOut = false;
    await this.o.storage.set(s);
    if (broadcast) this.post({ type: 'tokens', session: s });
    this.schedule();
    this.emit(() =>
      this.o.onTokens?.({ ...view(s), source }),
    );
  }

  private async endSession(reason: SignOutReason, broadcast: boolean): Promise<void> {
    const wasSignedOut = this.signedOut;
    const had = this.current;
    this.epoch++;
    this.signedOut = true;
    this.current = null;
    clearTimeout(this.timer);
    await this.o.storage.clear();
    if (wasSignedOut) return;
    // The tab that ended the session deletes the DPoP key (a new sign-in makes a new one); the others
    // forget their copy. A refusal without a session here (a request sent before sign-in) leaves it:
    // a sign-in running meanwhile may have just bound its session to that key. signOut() always deletes.
    await (await this.dpop())?.deleteKey(!broadcast || (!had && reason !== 'signed_out'));
    if (broadcast) this.post({ type: 'signout', reason });
    this.emit(() => this.o.onSignOut?.(reason));
  }

  private onMessage(data: unknown): void {
    if (this.closed || typeof data !== 'object' || data === null) return;
    const m = data as Message;
    switch (m.type) {
      case 'hello':
        if (this.current) this.post({ type: 'tokens', session: this.current });
        return;
      case 'tokens': {
        if (!isSession(m.session)) return;
        const cur = this.current;
        if (cur && (cur.accessToken === m.session.accessToken || cur.obtainedAt > m.session.obtainedAt)) return;
        // Another tab signed in anew: a refresh of the old session here must not overwrite it.
        if (!cur || cur.sessionId !== m.session.sessionId) this.epoch++;
        void this.adopt(m.session, 'other-tab', false);
        return;
      }
      case 'signout':
        if (typeof m.reason === 'string') void this.endSession(m.reason, false);
        return;
    }
  }

  /** schedule arms the proactive refresh timer, only while the page is visible. */
  private schedule(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    const s = this.current;
    if (this.closed || !s || !this.o.autoRefresh || this.hidden()) return;
    const delay = Math.max(0, s.expiresAt - this.aheadFor(s) - this.o.now());
    this.timer = setTimeout(() => {
      this.timer = undefined;
      if (this.hidden()) return;
      this.refreshOnce(s.accessToken).catch((e) => {
        // Errors reached onRefreshError/onSignOut already. A transient one is retried later while the token lasts.
        if (transient(e) && this.current === s) {
          this.timer = setTimeout(() => this.schedule(), 5000);
        }
      });
    }, delay);
  }

  private hidden(): boolean {
    return !!this.o.visibility && !this.o.visibility.visible();
  }

  private post(m: Message): void {
    try {
      this.o.channel?.postMessage(m);
    } catch {
      // A closed channel (page unloading) is not worth failing a request over.
    }
  }

  /** emit runs an app callback; its exceptions must not break the client. */
  private emit(fn: () => void): void {
    try {
      fn();
    } catch (e) {
      queueMicrotask(() => {
        throw e;
      });
    }
  }
}

/** transient: the refresher stayed unavailable, the session is kept. */
function transient(e: unknown): boolean {
  return e instanceof TokenGateError && e.code === 'temporarily_unavailable';
}

/** view is what the page may know of a session (no refresh token). */
function view(s: Session): { accessToken: string; expiresAt: Date; sessionId?: string; claims: Record<string, unknown> } {
  return { accessToken: s.accessToken, expiresAt: new Date(s.expiresAt), sessionId: s.sessionId, claims: decodeClaims(s.accessToken) };
}

function sameUrl(a: string, b: string): boolean {
  const base = baseHref() ?? 'http://localhost/';
  try {
    const x = new URL(a, base);
    const y = new URL(b, base);
    return x.origin === y.origin && x.pathname === y.pathname;
  } catch {
    return false;
  }
}

