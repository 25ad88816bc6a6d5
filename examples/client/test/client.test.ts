import axios, { type AxiosInstance } from 'axios';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { attachTokenRefresh } from '../src/axios.js';
import { TokenClient, TokenGateError, createFetch, retryAfter, type SignOutReason, type TokenClientOptions } from '../src/index.js';
import { ChannelHub, FakeLocks, FakeTokengate, Visibility, axiosAdapter, denials } from './harness.js';

const API = 'http://app.test/api/items';

/** settle runs due fake timers until p settles (the cross-tab path yields one macrotask before deciding; fake timers delay a zero timeout set during a tick by 1 ms). */
async function settle<T>(p: Promise<T>): Promise<T> {
  let done = false;
  const q = p.finally(() => {
    done = true;
  });
  for (let i = 0; i < 1000 && !done; i++) await vi.advanceTimersByTimeAsync(1);
  if (!done) throw new Error('did not settle');
  return q;
}

interface Api {
  name: string;
  /** get performs one API call, resolving to the JSON body. */
  get(): Promise<{ ok: boolean; token: string }>;
  client: TokenClient;
}

type Maker = (fake: FakeTokengate, o: TokenClientOptions) => Api;

const makers: Record<string, Maker> = {
  fetch: (fake, o) => {
    const f = createFetch({ ...o, fetch: fake.fetch });
    return {
      name: 'fetch',
      client: f.client,
      get: async () => {
        const r = await f(API);
        if (!r.ok) throw Object.assign(new Error(`status ${r.status}`), { status: r.status });
        return r.json();
      },
    };
  },
  axios: (fake, o) => {
    const inst: AxiosInstance = axios.create({ baseURL: 'http://app.test', adapter: axiosAdapter(fake) });
    const { client } = attachTokenRefresh(inst, { ...o, fetch: fake.fetch });
    return { name: 'axios', client, get: async () => (await inst.get('/api/items')).data };
  },
};

function baseOptions(extra: Partial<TokenClientOptions> = {}): TokenClientOptions & { signOuts: SignOutReason[] } {
  const signOuts: SignOutReason[] = [];
  return {
    refreshUrl: 'http://app.test/v1/token',
    revokeUrl: 'http://app.test/v1/revoke',
    locks: null,
    channel: null,
    visibility: null,
    autoRefresh: false,
    refreshAhead: 0,
    onSignOut: (r) => signOuts.push(r),
    ...extra,
    signOuts,
  };
}

for (const [kind, make] of Object.entries(makers)) {
  describe(`${kind}: single flight and retries`, () => {
    let fake: FakeTokengate;
    beforeEach(() => {
      vi.useFakeTimers({ now: Date.UTC(2026, 0, 1) });
      fake = new FakeTokengate();
    });
    afterEach(() => {
      vi.useRealTimers();
    });

    it('queues 10 requests refused as expired behind one refresh and retries each once', async () => {
      const o = baseOptions();
      const api = make(fake, o);
      const s = fake.signIn();
      await api.client.setTokens(s.body, { date: s.date });
      fake.expireAll(); // the server says expired while the client still believes the token is fresh
      const results = await Promise.all(Array.from({ length: 10 }, () => api.get()));
      expect(fake.count('/v1/token')).toBe(1);
      expect(results.every((r) => r.ok)).toBe(true);
      const newToken = api.client.session!.accessToken;
      expect(results.every((r) => r.token === newToken)).toBe(true);
      expect(fake.count('/api/items')).toBe(20); // ten refused, ten retried, no more
      expect(o.signOuts).toEqual([]);
    });

    it('rejects a request refused as expired again instead of looping', async () => {
      const o = baseOptions();
      const api = make(fake, o);
      const s = fake.signIn();
      await api.client.setTokens(s.body, { date: s.date });
      fake.refuseAll = 'token_expired'; // even a freshly refreshed token is refused as expired
      const err = await api.get().catch((e: unknown) => e);
      expect(err).toBeInstanceOf(TokenGateError);
      expect((err as TokenGateError).code).toBe('token_expired');
      expect(fake.count('/v1/token')).toBe(1);
      expect(fake.count('/api/items')).toBe(2);
      expect(o.signOuts).toEqual([]);
    });

    for (const reason of ['invalid_token', 'token_revoked'] as const) {
      it(`signs out once on ${reason} and rejects every request with a typed error, without refreshing`, async () => {
        const o = baseOptions();
        const api = make(fake, o);
        const s = fake.signIn();
        await api.client.setTokens(s.body, { date: s.date });
        fake.refuse.set(s.body.access_token, reason);
        const results = await Promise.allSettled(Array.from({ length: 5 }, () => api.get()));
        for (const r of results) {
          expect(r.status).toBe('rejected');
          const e = (r as PromiseRejectedResult).reason as TokenGateError;
          expect(e).toBeInstanceOf(TokenGateError);
          expect(e.code).toBe(reason);
          expect(e.signedOut).toBe(true);
        }
        expect(o.signOuts).toEqual([reason]);
        expect(fake.count('/v1/token')).toBe(0);
        expect(api.client.session).toBeNull();
      });
    }

    it('reads the reason from www-authenticate when the body is an HTML page', async () => {
      fake.jsonDenials = false;
      const o = baseOptions();
      const api = make(fake, o);
      const s = fake.signIn();
      await api.client.setTokens(s.body, { date: s.date });
      fake.expireAll();
      await expect(api.get()).resolves.toMatchObject({ ok: true });
      expect(fake.count('/v1/token')).toBe(1);
    });

    it('signs out on invalid_grant and rejects the queued requests', async () => {
      const o = baseOptions();
      const api = make(fake, o);
      const s = fake.signIn();
      await api.client.setTokens(s.body, { date: s.date });
      fake.expireAll();
      fake.tokenFailures.push({ status: 400, body: { error: 'invalid_grant' } });
      const results = await Promise.allSettled(Array.from({ length: 4 }, () => api.get()));
      expect(results.map((r) => r.status === 'rejected' && (r.reason as TokenGateError).code)).toEqual(Array(4).fill('invalid_grant'));
      expect(o.signOuts).toEqual(['invalid_grant']);
      expect(fake.count('/v1/token')).toBe(1);
    });

    it('retries a 503 from the refresher after Retry-After', async () => {
      const errors: string[] = [];
      const o = baseOptions({ onRefreshError: (e) => errors.push(`${e.status} ${e.error} retry=${e.willRetry} in=${e.retryInMs}`) });
      const api = make(fake, o);
      const s = fake.signIn();
      await api.client.setTokens(s.body, { date: s.date });
      fake.expireAll();
      fake.tokenFailures.push({ status: 503, body: { error: 'temporarily_unavailable' }, headers: { 'retry-after': '7' } });
      let done = false;
      const p = api.get().then((r) => {
        done = true;
        return r;
      });
      await vi.advanceTimersByTimeAsync(6900);
      expect(done).toBe(false);
      expect(fake.count('/v1/token')).toBe(1);
      await vi.advanceTimersByTimeAsync(200);
      await expect(p).resolves.toMatchObject({ ok: true });
      expect(fake.count('/v1/token')).toBe(2);
      expect(errors).toEqual(['503 temporarily_unavailable retry=true in=7000']);
      expect(o.signOuts).toEqual([]);
    });

    it('keeps the session when the refresher stays unavailable', async () => {
      const o = baseOptions({ refreshAttempts: 2 });
      const api = make(fake, o);
      const s = fake.signIn();
      await api.client.setTokens(s.body, { date: s.date });
      fake.expireAll();
      fake.tokenFailures.push(
        { status: 503, body: { error: 'temporarily_unavailable' }, headers: { 'retry-after': '1' } },
        { status: 503, body: { error: 'temporarily_unavailable' }, headers: { 'retry-after': '1' } },
      );
      const p = api.get().catch((e: unknown) => e);
      await vi.advanceTimersByTimeAsync(1000);
      const err = (await p) as TokenGateError;
      expect(err.code).toBe('temporarily_unavailable');
      expect(o.signOuts).toEqual([]);
      expect(api.client.session).not.toBeNull();
    });

    it('signs out with refresh_failed when the network fails through every attempt', async () => {
      const o = baseOptions({ refreshAttempts: 2 });
      const api = make(fake, o);
      const s = fake.signIn();
      await api.client.setTokens(s.body, { date: s.date });
      fake.expireAll();
      fake.tokenFailures.push({ status: 0, network: true }, { status: 0, network: true });
      const p = api.get().catch((e: unknown) => e);
      await vi.advanceTimersByTimeAsync(5000);
      expect(((await p) as TokenGateError).code).toBe('refresh_failed');
      expect(o.signOuts).toEqual(['refresh_failed']);
    });

    it('refreshes ahead of expiry before a request, so the request never sees a 401', async () => {
      const o = baseOptions({ refreshAhead: 60 });
      fake.ttlSeconds = 120;
      const api = make(fake, o);
      const s = fake.signIn();
      await api.client.setTokens(s.body, { date: s.date });
      await api.get();
      expect(fake.count('/v1/token')).toBe(0);
      vi.setSystemTime(Date.now() + 61_000); // 59 s left < refreshAhead
      await api.get();
      expect(fake.count('/v1/token')).toBe(1);
      expect(fake.calls.filter((c) => c.path === '/api/items').length).toBe(2);
    });

    it('uses the server clock: a client clock one hour behind still refreshes in time', async () => {
      fake.serverOffsetMs = 3_600_000;
      fake.ttlSeconds = 120;
      const o = baseOptions({ refreshAhead: 30 });
      const api = make(fake, o);
      const s = fake.signIn();
      await api.client.setTokens(s.body, { date: s.date });
      expect(api.client.session!.expiresAt.getTime()).toBe(Date.now() + 120_000);
      vi.setSystemTime(Date.now() + 100_000); // 20 s left
      await api.get();
      expect(fake.count('/v1/token')).toBe(1);
      expect(fake.count('/api/items')).toBe(1); // no 401 first
    });
  });
}

/** statusOf is the HTTP status a failed get() carries (the fetch maker's error or an AxiosError). */
function statusOf(e: unknown): number | undefined {
  return (e as { response?: { status?: number } }).response?.status ?? (e as { status?: number }).status;
}

// Every answer extauthz gives (fixtures/denials.json, written from the Go
// response code), as JSON and as nginx auth_request passes it on (an HTML
// page with extauthz's headers), over both adapters.
for (const [kind, make] of Object.entries(makers)) {
  for (const jsonDenials of [true, false]) {
    describe(`${kind}: extauthz's answers, ${jsonDenials ? 'JSON body' : 'HTML body behind nginx'}`, () => {
      let fake: FakeTokengate;
      beforeEach(() => {
        vi.useFakeTimers({ now: Date.UTC(2026, 0, 1) });
        fake = new FakeTokengate();
        fake.jsonDenials = jsonDenials;
      });
      afterEach(() => {
        vi.useRealTimers();
      });

      for (const [reason, d] of Object.entries(denials)) {
        // token_expired and token_unbound refresh and retry: the single-flight tests above and test/dpop.test.ts.
        if (reason === 'token_expired' || reason === 'token_unbound') continue;
        // A refused DPoP proof or a nonce request is the app's to see (the nonce retry is in test/dpop.test.ts).
        const signsOut = d.status === 401 && reason !== 'invalid_dpop_proof' && reason !== 'use_dpop_nonce';
        it(`${reason} (${d.status}): ${signsOut ? 'signs out once, without refreshing' : 'passed to the app, session kept'}`, async () => {
          const o = baseOptions();
          const api = make(fake, o);
          const s = fake.signIn();
          await api.client.setTokens(s.body, { date: s.date });
          fake.refuse.set(s.body.access_token, reason);
          const err = await api.get().catch((e: unknown) => e);
          expect(fake.count('/v1/token')).toBe(0);
          expect(fake.count('/api/items')).toBe(1);
          if (signsOut) {
            expect(err).toBeInstanceOf(TokenGateError);
            expect((err as TokenGateError).code).toBe(reason);
            expect((err as TokenGateError).status).toBe(401);
            expect(o.signOuts).toEqual([reason]);
            expect(api.client.session).toBeNull();
          } else {
            expect(err).not.toBeInstanceOf(TokenGateError);
            expect(statusOf(err)).toBe(d.status);
            expect(o.signOuts).toEqual([]);
            expect(api.client.session?.accessToken).toBe(s.body.access_token);
          }
        });
      }
    });

    // Network or device binding (with or without DPoP): extauthz's real token_unbound answer.
    describe(`${kind}: token_unbound, ${jsonDenials ? 'JSON body' : 'HTML body behind nginx'}`, () => {
      let fake: FakeTokengate;
      beforeEach(() => {
        vi.useFakeTimers({ now: Date.UTC(2026, 0, 1) });
        fake = new FakeTokengate();
        fake.jsonDenials = jsonDenials;
      });
      afterEach(() => {
        vi.useRealTimers();
      });

      it('refreshes once and retries: the new token is bound to where the page is now', async () => {
        const o = baseOptions();
        const api = make(fake, o);
        const s = fake.signIn();
        await api.client.setTokens(s.body, { date: s.date });
        fake.refuse.set(s.body.access_token, 'token_unbound');
        const body = await settle(api.get());
        expect(body.ok).toBe(true);
        expect(body.token).not.toBe(s.body.access_token);
        expect(fake.count('/v1/token')).toBe(1);
        expect(fake.count('/api/items')).toBe(2);
        expect(o.signOuts).toEqual([]);
      });

      it('refused as unbound again after the refresh: signs out, never a second refresh', async () => {
        const o = baseOptions();
        const api = make(fake, o);
        const s = fake.signIn();
        await api.client.setTokens(s.body, { date: s.date });
        fake.refuseAll = 'token_unbound';
        const err = await settle(api.get().catch((e: unknown) => e));
        expect(err).toBeInstanceOf(TokenGateError);
        expect((err as TokenGateError).code).toBe('token_unbound');
        expect(fake.count('/v1/token')).toBe(1);
        expect(fake.count('/api/items')).toBe(2);
        expect(o.signOuts).toEqual(['token_unbound']);
        expect(api.client.session).toBeNull();
      });
    });
  }

  describe(`${kind}: expiresInHeader`, () => {
    beforeEach(() => {
      vi.useFakeTimers({ now: Date.UTC(2026, 0, 1) });
    });
    afterEach(() => {
      vi.useRealTimers();
    });

    for (const [name, option, moves] of [
      ['a renamed header is read when the option names it', 'x-left', true],
      ['a renamed header is ignored by the default option', undefined, false],
    ] as const) {
      it(name, async () => {
        const fake = new FakeTokengate();
        fake.ttlSeconds = 300;
        fake.expiresInHeader = 'x-left';
        const api = make(fake, baseOptions({ expiresInHeader: option }));
        const s = fake.signIn();
        await api.client.setTokens(s.body, { date: null });
        fake.serverOffsetMs = 200_000; // the server says 100 s are left, the client believes 300
        await api.get();
        expect(api.client.session!.expiresAt.getTime()).toBe(Date.now() + (moves ? 100_000 : 300_000));
      });
    }
  });
}

describe('x-token-expires-in', () => {
  beforeEach(() => {
    vi.useFakeTimers({ now: Date.UTC(2026, 0, 1) });
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('updates the expiry estimate from a successful answer', async () => {
    const fake = new FakeTokengate();
    fake.ttlSeconds = 300;
    const f = createFetch({ ...baseOptions(), fetch: fake.fetch });
    const s = fake.signIn();
    await f.client.setTokens({ ...(s.body), access_token: s.body.access_token }, { date: null });
    // The server says the token has less left than the client believes (e.g. it was minted a while ago).
    fake.serverOffsetMs = 200_000;
    await f(API);
    expect(f.client.session!.expiresAt.getTime()).toBe(Date.now() + 100_000);
  });
});

describe('proactive timer', () => {
  beforeEach(() => {
    vi.useFakeTimers({ now: Date.UTC(2026, 0, 1) });
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('refreshes while visible and never in a hidden tab', async () => {
    const fake = new FakeTokengate();
    fake.ttlSeconds = 120;
    const vis = new Visibility();
    const client = new TokenClient({ ...baseOptions({ refreshAhead: 60, autoRefresh: true, visibility: vis }), fetch: fake.fetch });
    const s = fake.signIn();
    await client.setTokens(s.body, { date: s.date });
    vis.set(false);
    await vi.advanceTimersByTimeAsync(110_000);
    expect(fake.count('/v1/token')).toBe(0);
    vis.set(true); // 10 s left: refresh at once
    await vi.advanceTimersByTimeAsync(10);
    expect(fake.count('/v1/token')).toBe(1);
    await vi.advanceTimersByTimeAsync(59_000);
    expect(fake.count('/v1/token')).toBe(1);
    await vi.advanceTimersByTimeAsync(2_000); // the new token's refresh point (60 s ahead of its 120 s life)
    expect(fake.count('/v1/token')).toBe(2);
    client.close();
  });

  it('never refreshes in the first half of a token’s life, even with refreshAhead above the TTL', async () => {
    const fake = new FakeTokengate();
    fake.ttlSeconds = 4;
    const client = new TokenClient({ ...baseOptions({ refreshAhead: 600, autoRefresh: true }), fetch: fake.fetch });
    const s = fake.signIn();
    await client.setTokens(s.body, { date: s.date });
    await vi.advanceTimersByTimeAsync(1900);
    expect(fake.count('/v1/token')).toBe(0);
    await vi.advanceTimersByTimeAsync(200);
    expect(fake.count('/v1/token')).toBe(1);
    client.close();
  });
});

describe('across tabs', () => {
  beforeEach(() => {
    vi.useFakeTimers({ now: Date.UTC(2026, 0, 1) });
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  function tabs(fake: FakeTokengate, n: number, extra: Partial<TokenClientOptions> = {}) {
    const locks = new FakeLocks();
    const hub = new ChannelHub();
    const signOuts: SignOutReason[][] = [];
    const list = Array.from({ length: n }, (_, i) => {
      signOuts.push([]);
      return createFetch({ ...baseOptions(), locks, channel: hub.channel(), onSignOut: (r) => signOuts[i].push(r), fetch: fake.fetch, ...extra });
    });
    return { locks, list, signOuts };
  }

  it('a new tab gets the session from an open tab', async () => {
    const fake = new FakeTokengate();
    const locks = new FakeLocks();
    const hub = new ChannelHub();
    const a = createFetch({ ...baseOptions(), locks, channel: hub.channel(), fetch: fake.fetch });
    const s = fake.signIn();
    await a.client.setTokens(s.body, { date: s.date });
    const b = createFetch({ ...baseOptions(), locks, channel: hub.channel(), fetch: fake.fetch });
    await vi.advanceTimersByTimeAsync(0);
    expect(b.client.session?.accessToken).toBe(s.body.access_token);
  });

  it('two tabs refused as expired refresh once in total', async () => {
    const fake = new FakeTokengate();
    const { list, signOuts } = tabs(fake, 2);
    const s = fake.signIn();
    await list[0].client.setTokens(s.body, { date: s.date });
    await vi.advanceTimersByTimeAsync(0);
    fake.expireAll();
    const all = await settle(Promise.all(list.flatMap((f) => [f(API), f(API), f(API)])));
    expect(all.map((r) => r.status)).toEqual(Array(6).fill(200));
    expect(fake.count('/v1/token')).toBe(1);
    expect(list[0].client.session!.accessToken).toBe(list[1].client.session!.accessToken);
    expect(signOuts).toEqual([[], []]);
  });

  it('a tab whose lock holder hangs steals the lock after lockTimeout and refreshes', async () => {
    const fake = new FakeTokengate();
    const { locks, list } = tabs(fake, 1, { lockTimeout: 5 });
    const s = fake.signIn();
    await list[0].client.setTokens(s.body, { date: s.date });
    fake.expireAll();
    const release = locks.hold('tokengate:refresh');
    let status = 0;
    const p = list[0](API).then((r) => (status = r.status));
    await vi.advanceTimersByTimeAsync(4900);
    expect(status).toBe(0);
    await vi.advanceTimersByTimeAsync(200);
    await p;
    expect(status).toBe(200);
    expect(locks.steals).toBe(1);
    release();
  });

  it('sign-out in one tab reaches the others', async () => {
    const fake = new FakeTokengate();
    const { list, signOuts } = tabs(fake, 3);
    const s = fake.signIn();
    await list[0].client.setTokens(s.body, { date: s.date });
    await vi.advanceTimersByTimeAsync(0);
    await list[1].client.signOut();
    await vi.advanceTimersByTimeAsync(0);
    expect(signOuts).toEqual([['signed_out'], ['signed_out'], ['signed_out']]);
    expect(list.map((f) => f.client.session)).toEqual([null, null, null]);
    const revoke = fake.calls.find((c) => c.path === '/v1/revoke');
    expect(new URLSearchParams(revoke!.body).get('token')).toBe(s.body.refresh_token);
  });

  it('without Web Locks and BroadcastChannel a tab still single-flights', async () => {
    const fake = new FakeTokengate();
    const f = createFetch({ ...baseOptions(), crossTab: false, fetch: fake.fetch });
    const s = fake.signIn();
    await f.client.setTokens(s.body, { date: s.date });
    fake.expireAll();
    const all = await Promise.all(Array.from({ length: 5 }, () => f(API)));
    expect(all.every((r) => r.status === 200)).toBe(true);
    expect(fake.count('/v1/token')).toBe(1);
  });
});

describe('requests that are not ours', () => {
  it('never sends the token to another origin and never to the refresh endpoint', async () => {
    const fake = new FakeTokengate();
    vi.stubGlobal('location', { href: 'http://app.test/page' });
    try {
      const f = createFetch({ ...baseOptions(), fetch: fake.fetch });
      const s = fake.signIn();
      await f.client.setTokens(s.body, { date: s.date });
      await f('http://elsewhere.test/x');
      await f('http://app.test/api/items');
      expect(fake.calls.map((c) => [c.path, c.auth !== null])).toEqual([
        ['/x', false],
        ['/api/items', true],
      ]);
    } finally {
      vi.unstubAllGlobals();
    }
  });
});

describe('shared storage and events', () => {
  beforeEach(() => {
    vi.useFakeTimers({ now: Date.UTC(2026, 0, 1) });
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  /** sharedStorage is what localStorage is to two tabs: one store both read and write. */
  function sharedStorage() {
    let v: import('../src/index.js').Session | null = null;
    return { get: () => v, set: (s: import('../src/index.js').Session) => void (v = s), clear: () => void (v = null) };
  }

  it('re-reads the stored session after taking the lock and skips a refresh another tab already did', async () => {
    const fake = new FakeTokengate();
    const locks = new FakeLocks();
    const storage = sharedStorage();
    // No BroadcastChannel: only the storage tells tab b about tab a's refresh.
    const a = createFetch({ ...baseOptions(), locks, storage, fetch: fake.fetch });
    const b = createFetch({ ...baseOptions(), locks, storage, fetch: fake.fetch });
    const s = fake.signIn();
    await a.client.setTokens(s.body, { date: s.date });
    await b.client.getAccessToken(); // b now holds the same session
    fake.expireAll();
    const all = await Promise.all([a(API), b(API), a(API), b(API)]);
    expect(all.map((r) => r.status)).toEqual([200, 200, 200, 200]);
    expect(fake.count('/v1/token')).toBe(1);
  });

  it('reports where each token came from', async () => {
    const fake = new FakeTokengate();
    const hub = new ChannelHub();
    const seen: string[][] = [[], []];
    const mk = (i: number) =>
      createFetch({ ...baseOptions(), locks: new FakeLocks(), channel: hub.channel(), onTokens: (t) => seen[i].push(`${t.source} ${t.claims.jti}`), fetch: fake.fetch });
    const a = mk(0);
    const b = mk(1);
    const s = fake.signIn();
    await a.client.setTokens(s.body, { date: s.date });
    await settle(a.client.refresh());
    await vi.advanceTimersByTimeAsync(0);
    expect(seen).toEqual([['sign-in j1', 'refresh j2'], ['other-tab j1', 'other-tab j2']]);
    expect(b.client.session?.accessToken).toBe(a.client.session?.accessToken);
  });
});

describe('cookie transport', () => {
  it('never handles a refresh token: refresh and revoke go with credentials to the cookie path', async () => {
    const sent: { url: string; body: string; credentials?: RequestCredentials }[] = [];
    const fakeFetch = async (input: RequestInfo | URL, init?: RequestInit): Promise<Response> => {
      sent.push({ url: String(input), body: String(init?.body ?? ''), credentials: init?.credentials });
      if (String(input).endsWith('/v1/token')) {
        return new Response(JSON.stringify({ access_token: 'at2', token_type: 'Bearer', expires_in: 60, session_id: 's' }), {
          status: 200,
          headers: { 'content-type': 'application/json' },
        });
      }
      return new Response('{}', { status: 200, headers: { 'content-type': 'application/json' } });
    };
    const client = new TokenClient({ ...baseOptions(), refreshUrl: 'http://app.test/v1/token', revokeUrl: undefined, transport: 'cookie', fetch: fakeFetch });
    // A fresh tab with no access token resumes from the cookie.
    expect(await client.getAccessToken()).toBe('at2');
    await client.signOut();
    expect(sent).toEqual([
      { url: 'http://app.test/v1/token', body: 'grant_type=refresh_token', credentials: 'include' },
      { url: 'http://app.test/v1/token/revoke', body: '', credentials: 'include' },
    ]);
  });
});

describe('waiting and passing through', () => {
  beforeEach(() => {
    vi.useFakeTimers({ now: Date.UTC(2026, 0, 1) });
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('holds new requests while a refresh runs and sends them with the new token', async () => {
    const fake = new FakeTokengate();
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const slow: typeof fetch = async (input, init) => {
      if ((input instanceof Request ? input.url : String(input)).endsWith('/v1/token')) await gate;
      return fake.fetch(input, init);
    };
    const f = createFetch({ ...baseOptions(), fetch: slow });
    const s = fake.signIn();
    await f.client.setTokens(s.body, { date: s.date });
    const refreshing = f.client.refresh();
    const req = f(API);
    await vi.advanceTimersByTimeAsync(1000);
    expect(fake.count('/api/items')).toBe(0);
    release();
    const [token, res] = await Promise.all([refreshing, req]);
    expect(res.status).toBe(200);
    expect(fake.calls.find((c) => c.path === '/api/items')!.auth).toBe(`Bearer ${token}`);
    expect(token).not.toBe(s.body.access_token);
  });

  it('leaves 403 insufficient_scope and 401s that are not tokengate’s to the app', async () => {
    const answers = [
      new Response('{"error":"insufficient_scope"}', { status: 403, headers: { 'content-type': 'application/json', 'www-authenticate': 'Bearer error="insufficient_scope"' } }),
      new Response('{"message":"login to the legacy app"}', { status: 401, headers: { 'content-type': 'application/json' } }),
    ];
    const fake = new FakeTokengate();
    const f = createFetch({ ...baseOptions(), fetch: async (i, init) => ((i instanceof Request ? i.url : String(i)).includes('/api/') ? answers.shift()! : fake.fetch(i, init)) });
    const s = fake.signIn();
    await f.client.setTokens(s.body, { date: s.date });
    expect((await f(API)).status).toBe(403);
    expect((await f(API)).status).toBe(401);
    expect(f.client.session).not.toBeNull();
    expect(fake.count('/v1/token')).toBe(0);
  });
});

describe('retryAfter', () => {
  const now = Date.UTC(2026, 0, 1);
  const cases: [string | null, number | undefined][] = [
    ['7', 7000],
    ['0', 0],
    [new Date(now + 3000).toUTCString(), 3000],
    [new Date(now - 3000).toUTCString(), 0],
    ['soon', undefined],
    [null, undefined],
  ];
  for (const [h, want] of cases) {
    it(`${h} → ${want}`, () => {
      expect(retryAfter(h, now)).toBe(want);
    });
  }
});

describe('axios with validateStatus accepting 4xx', () => {
  it('still refreshes on token_expired and retries once', async () => {
    const fake = new FakeTokengate();
    const inst = axios.create({ baseURL: 'http://app.test', adapter: axiosAdapter(fake), validateStatus: () => true });
    const { client } = attachTokenRefresh(inst, { ...baseOptions(), fetch: fake.fetch });
    const s = fake.signIn();
    await client.setTokens(s.body, { date: s.date });
    fake.expireAll();
    const res = await inst.get('/api/items');
    expect(res.status).toBe(200);
    expect(fake.count('/v1/token')).toBe(1);
    expect(fake.count('/api/items')).toBe(2);
  });
});

describe('refresher answers that say nothing about the token', () => {
  beforeEach(() => {
    vi.useFakeTimers({ now: Date.UTC(2026, 0, 1) });
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('retries a 502 from a proxy with backoff and keeps the session', async () => {
    const fake = new FakeTokengate();
    const o = baseOptions();
    const f = createFetch({ ...o, fetch: fake.fetch });
    const s = fake.signIn();
    await f.client.setTokens(s.body, { date: s.date });
    fake.expireAll();
    fake.tokenFailures.push({ status: 502, body: '<html>Bad Gateway</html>' as never });
    const p = f(API);
    await vi.advanceTimersByTimeAsync(1000); // first backoff: 250–500 ms
    expect((await p).status).toBe(200);
    expect(fake.count('/v1/token')).toBe(2);
    expect(o.signOuts).toEqual([]);
  });
});

describe('sign-out during a refresh', () => {
  it('does not let the refresh revive the session', async () => {
    const fake = new FakeTokengate();
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const slow: typeof fetch = async (input, init) => {
      if ((input instanceof Request ? input.url : String(input)).endsWith('/v1/token')) await gate;
      return fake.fetch(input, init);
    };
    const tokens: string[] = [];
    const o = baseOptions({ onTokens: (t) => tokens.push(t.source) });
    const f = createFetch({ ...o, fetch: slow });
    const s = fake.signIn();
    await f.client.setTokens(s.body, { date: s.date });
    const refreshing = f.client.refresh().catch((e: unknown) => e);
    await f.client.signOut();
    release();
    const err = (await refreshing) as TokenGateError;
    expect(err).toBeInstanceOf(TokenGateError);
    expect(err.code).toBe('signed_out');
    expect(f.client.session).toBeNull();
    expect(tokens).toEqual(['sign-in']);
    expect(o.signOuts).toEqual(['signed_out']);
  });
});
