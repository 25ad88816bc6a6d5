// The browser end-to-end proof of @tokengate/client: real
// tokengate refresher + extauthz, real nginx configured by
// examples/nginx/tokengate.conf, real headless Chromium driving the demo
// page. Run with `make test-e2e` (builds the client first).
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import http from 'node:http';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { chromium } from 'playwright-core';
import { ath, decodeJWT, newKey, proof, proofJKT, reasonOf } from './dpop-node.mjs';
import { startHopProxy } from './hop-proxy.mjs';
import { cleanup, repoRoot, startStack, waitFor } from './stack.mjs';

const CHROMIUM = process.env.CHROMIUM_BIN ?? '/usr/bin/chromium';
const ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];
const outDir = join(repoRoot, 'test-output');

let browser;
before(async () => {
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS, headless: true });
});
after(async () => {
  await browser?.close();
  cleanup();
});

/** openDemo opens the demo page with the given client options and waits for its handle. */
async function openDemo(context, stack, params = {}) {
  const page = await context.newPage();
  page.errors = [];
  page.on('pageerror', (e) => page.errors.push(e));
  await page.goto(`${stack.base}/index.html?${new URLSearchParams(params)}`);
  await page.waitForFunction(() => window.tg?.ready === true);
  return page;
}

/** waitPastExpiry waits (on the page's own estimate) until the access token has expired. */
async function waitPastExpiry(page) {
  await page.waitForFunction(
    () => {
      const s = window.tg.client.session;
      return s !== null && Date.now() > s.expiresAt.getTime() + 300;
    },
    null,
    { timeout: 20_000, polling: 100 },
  );
}

/** serverSaysExpired waits until extauthz refuses the page's current token as expired. */
async function serverSaysExpired(stack, page) {
  const token = await page.evaluate(() => window.tg.client.session.accessToken);
  await waitFor('extauthz to refuse the token as expired', async () => {
    const r = await fetch(`${stack.base}/api/echo`, { headers: { authorization: `Bearer ${token}` } });
    return r.status === 401 && /expired/.test(r.headers.get('www-authenticate') ?? '');
  });
}

const callMany = (page, n) => page.evaluate((n) => Promise.all(Array.from({ length: n }, () => window.tg.call())), n);

describe('body transport', () => {
  let stack;
  before(async () => {
    stack = await startStack({ transport: 'body' });
  });
  after(async () => {
    await stack?.stop();
  });

  test('1. sign in, call the API: identity arrives decoded, a spoofed x-user-id never does', async () => {
    const context = await browser.newContext();
    try {
      const page = await openDemo(context, stack);
      await page.evaluate(() => window.tg.signIn('u-1001'));
      const r = await page.evaluate(() => window.tg.call());
      assert.equal(r.status, 200, JSON.stringify(r));
      assert.deepEqual(r.body.user.id, 'u-1001');
      assert.equal(r.body.user.name, '张伟', `upstream got x-user-name ${r.body.user.rawName}`);
      // extauthz's default header encoding: percent-encoded UTF-8 (docs/extauthz.md).
      assert.equal(r.body.user.rawName, '%E5%BC%A0%E4%BC%9F');
      assert.deepEqual(r.body.user.roles, ['reader', 'writer']);
      assert.ok(r.body.user.session, 'x-session-id');

      const spoofed = await page.evaluate(() => window.tg.call('/api/echo', { 'x-user-id': 'attacker', 'x-user-name': 'attacker' }));
      assert.equal(spoofed.status, 200);
      assert.equal(spoofed.body.user.id, 'u-1001');
      assert.equal(spoofed.body.user.name, '张伟');

      // nginx passes extauthz's x-token-expires-in to the page.
      const left = await page.evaluate(async () => {
        const r = await fetch('/api/echo', { headers: { authorization: `Bearer ${window.tg.client.session.accessToken}` } });
        return r.headers.get('x-token-expires-in');
      });
      assert.match(left ?? '', /^[0-4]$/, `x-token-expires-in: ${left}`);

      // Without a token the spoofed header is refused at nginx: the app never sees the request.
      const before = stack.app.seen.length;
      const anon = await page.evaluate(async () => {
        const r = await fetch('/api/echo', { headers: { 'x-user-id': 'attacker' } });
        return { status: r.status, www: r.headers.get('www-authenticate') };
      });
      assert.equal(anon.status, 401);
      assert.match(anon.www, /^Bearer realm=/);
      assert.equal(stack.app.seen.length, before);
      assert.ok(stack.app.seen.every((s) => s.userId !== 'attacker'), 'a spoofed x-user-id reached the app');

      assert.deepEqual(page.errors, []);
    } finally {
      await context.close();
    }
  });

  for (const adapter of ['fetch', 'axios']) {
    test(`2. (${adapter}) after expiry, 10 parallel calls cause exactly one /v1/token and all succeed`, async (t) => {
      const context = await browser.newContext();
      try {
        const page = await openDemo(context, stack, { adapter, refreshAhead: 0, autoRefresh: false });
        await page.evaluate(() => window.tg.signIn('u-parallel'));
        assert.equal((await page.evaluate(() => window.tg.call())).status, 200);
        await serverSaysExpired(stack, page);
        const tokens0 = stack.count('POST', '/v1/token');
        const rotations0 = await stack.metric('tokengate_refresher_rotations_total');
        const api0 = stack.count('GET', '/api/echo');
        const refused0 = stack.count('GET', '/api/echo', 401);

        const results = await callMany(page, 10);
        assert.deepEqual(results.map((r) => r.status), Array(10).fill(200), JSON.stringify(results));
        assert.equal(stack.count('POST', '/v1/token') - tokens0, 1, 'requests to /v1/token at nginx');
        assert.equal(stack.count('POST', '/v1/token', 200) - tokens0 >= 1, true);
        assert.equal((await stack.metric('tokengate_refresher_rotations_total')) - rotations0, 1, 'rotations');
        // Each refused request was retried exactly once: calls = 10 + refusals.
        const refused = stack.count('GET', '/api/echo', 401) - refused0;
        t.diagnostic(`${refused} of the 10 calls were refused as expired first (the rest waited for the refresh before going out)`);
        assert.equal(stack.count('GET', '/api/echo') - api0, 10 + refused);
        assert.deepEqual(await page.evaluate(() => window.tg.state.signOuts), []);
        assert.deepEqual(page.errors, []);
      } finally {
        await context.close();
      }
    });
  }

  test('3. two tabs both expire and both call: one rotation in total, nobody signed out', async () => {
    const context = await browser.newContext();
    try {
      const params = { refreshAhead: 0, autoRefresh: false };
      const a = await openDemo(context, stack, params);
      await a.evaluate(() => window.tg.signIn('u-tabs'));
      const b = await openDemo(context, stack, params);
      // The new tab learns the session from the open one over BroadcastChannel.
      await b.waitForFunction(() => window.tg.client.session !== null);
      assert.equal(await b.evaluate(() => window.tg.client.session.accessToken), await a.evaluate(() => window.tg.client.session.accessToken));
      await serverSaysExpired(stack, a);
      const tokens0 = stack.count('POST', '/v1/token');
      const rotations0 = await stack.metric('tokengate_refresher_rotations_total');

      const [ra, rb] = await Promise.all([callMany(a, 5), callMany(b, 5)]);
      assert.deepEqual([...ra, ...rb].map((r) => r.status), Array(10).fill(200));
      assert.equal((await stack.metric('tokengate_refresher_rotations_total')) - rotations0, 1, 'rotations');
      assert.equal(stack.count('POST', '/v1/token') - tokens0, 1, 'requests to /v1/token at nginx');
      assert.equal(await a.evaluate(() => window.tg.client.session.accessToken), await b.evaluate(() => window.tg.client.session.accessToken));
      assert.deepEqual(await a.evaluate(() => window.tg.state.signOuts), []);
      assert.deepEqual(await b.evaluate(() => window.tg.state.signOuts), []);
    } finally {
      await context.close();
    }
  });

  test('3b. a tab stuck holding the refresh lock cannot block the others (lock timeout, then steal)', async () => {
    const context = await browser.newContext();
    try {
      const params = { refreshAhead: 0, autoRefresh: false, lockTimeout: 1 };
      const stuck = await openDemo(context, stack, params);
      await stuck.evaluate(() => window.tg.signIn('u-stuck'));
      const b = await openDemo(context, stack, params);
      await b.waitForFunction(() => window.tg.client.session !== null);
      // The stuck tab takes the refresh lock and never lets go (alive but hung).
      await stuck.evaluate(() => new Promise((held) => navigator.locks.request('tokengate:refresh', () => (held(), new Promise(() => {})))));
      await serverSaysExpired(stack, b);
      const tokens0 = stack.count('POST', '/v1/token');
      const started = Date.now();
      const results = await callMany(b, 3);
      assert.deepEqual(results.map((r) => r.status), [200, 200, 200]);
      assert.ok(Date.now() - started >= 1000, 'the tab waited for the lock before stealing it');
      assert.equal(stack.count('POST', '/v1/token') - tokens0, 1);
      assert.deepEqual(await b.evaluate(() => window.tg.state.signOuts), []);
      const held = await b.evaluate(async () => (await navigator.locks.query()).held.map((l) => l.name));
      assert.deepEqual(held, [], 'the lock was released after the steal');
    } finally {
      await context.close();
    }
  });

  test('4. proactive: with refreshAhead above the TTL, requests never see a 401', async () => {
    const context = await browser.newContext();
    try {
      const page = await openDemo(context, stack, { refreshAhead: 600 });
      await page.evaluate(() => window.tg.signIn('u-proactive'));
      const refused0 = stack.count('GET', '/api/echo', 401);
      const tokens0 = stack.count('POST', '/v1/token', 200);
      // Call for three access-token lifetimes (TTL 4 s).
      const results = await page.evaluate(async () => {
        const out = [];
        const end = Date.now() + 12_000;
        while (Date.now() < end) {
          out.push(await window.tg.call());
          await new Promise((r) => setTimeout(r, 300));
        }
        return out;
      });
      assert.ok(results.length > 20);
      assert.deepEqual(results.filter((r) => r.status !== 200), []);
      assert.equal(stack.count('GET', '/api/echo', 401) - refused0, 0, '401s seen at nginx');
      assert.ok(stack.count('POST', '/v1/token', 200) - tokens0 >= 3, 'the token was refreshed ahead, repeatedly');
      // The CI artifact: the demo after a few proactive refreshes (remaining life, last refresh, log).
      mkdirSync(outDir, { recursive: true });
      await page.screenshot({ path: join(outDir, 'e2e-demo.png'), fullPage: true });
      assert.deepEqual(page.errors, []);
    } finally {
      await context.close();
    }
  });

  test('4b. skew: a page clock one hour behind the servers still refreshes ahead and never sees a 401', async () => {
    const context = await browser.newContext();
    try {
      // The page's clock runs an hour slow; without skew correction the client would
      // believe every token valid for an hour more and send expired ones.
      await context.clock.install({ time: new Date(Date.now() - 3_600_000) });
      const page = await openDemo(context, stack, { refreshAhead: 600 });
      assert.ok(Math.abs((await page.evaluate(() => Date.now())) + 3_600_000 - Date.now()) < 60_000, 'the page clock is an hour slow');
      await page.evaluate(() => window.tg.signIn('u-skew'));
      const left = await page.evaluate(() => window.tg.client.session.expiresAt.getTime() - Date.now());
      assert.ok(left > 2_000 && left <= 5_000, `the client's estimate of the 4 s token: ${left} ms left`);
      const refused0 = stack.count('GET', '/api/echo', 401);
      const tokens0 = stack.count('POST', '/v1/token', 200);
      const results = await page.evaluate(async () => {
        const out = [];
        const end = performance.now() + 10_000;
        while (performance.now() < end) {
          out.push(await window.tg.call());
          await new Promise((r) => setTimeout(r, 300));
        }
        return out;
      });
      assert.deepEqual(results.filter((r) => r.status !== 200), []);
      assert.equal(stack.count('GET', '/api/echo', 401) - refused0, 0, '401s seen at nginx');
      assert.ok(stack.count('POST', '/v1/token', 200) - tokens0 >= 2, 'refreshed ahead, repeatedly');
    } finally {
      await context.close();
    }
  });

  test('5. a tampered token signs out with invalid_token and no refresh is attempted', async () => {
    const context = await browser.newContext();
    try {
      const page = await openDemo(context, stack, { storage: 'sessionStorage', autoRefresh: false });
      await page.evaluate(() => window.tg.signIn('u-tamper'));
      assert.equal((await page.evaluate(() => window.tg.call())).status, 200);
      const tokens0 = stack.count('POST', '/v1/token');
      await page.evaluate(() => window.tg.tamper());
      const r = await page.evaluate(() => window.tg.call());
      assert.equal(r.error, 'invalid_token');
      assert.deepEqual(await page.evaluate(() => window.tg.state.signOuts), ['invalid_token']);
      assert.equal(stack.count('POST', '/v1/token'), tokens0, 'a refresh was attempted');
      assert.equal(await page.evaluate(() => sessionStorage.getItem('tokengate.session')), null);
      // Once signed out, further calls fail without asking the refresher and without a second onSignOut.
      const again = await page.evaluate(() => window.tg.call());
      assert.equal(again.status, 401);
      assert.deepEqual(await page.evaluate(() => window.tg.state.signOuts), ['invalid_token']);
      assert.equal(stack.count('POST', '/v1/token'), tokens0);
    } finally {
      await context.close();
    }
  });

  test('6. sign out in one tab: the other tab learns of it', async () => {
    const context = await browser.newContext();
    try {
      const a = await openDemo(context, stack);
      await a.evaluate(() => window.tg.signIn('u-signout'));
      const b = await openDemo(context, stack);
      await b.waitForFunction(() => window.tg.client.session !== null);
      const revokes0 = stack.count('POST', '/v1/revoke', 200);
      await b.evaluate(() => window.tg.client.signOut());
      await a.waitForFunction(() => window.tg.state.signOuts.length > 0);
      assert.deepEqual(await a.evaluate(() => window.tg.state.signOuts), ['signed_out']);
      assert.deepEqual(await b.evaluate(() => window.tg.state.signOuts), ['signed_out']);
      assert.equal(await a.evaluate(() => window.tg.client.session), null);
      assert.equal(stack.count('POST', '/v1/revoke', 200) - revokes0, 1);
    } finally {
      await context.close();
    }
  });

  test('token_revoked: an admin sign-out reaches the page as onSignOut("token_revoked")', async (t) => {
    const context = await browser.newContext();
    try {
      const page = await openDemo(context, stack, { autoRefresh: false });
      await page.evaluate(() => window.tg.signIn('u-revoked'));
      const first = await page.evaluate(() => window.tg.call());
      assert.equal(first.status, 200);
      const res = await stack.admin('DELETE', `/v1/sessions/${encodeURIComponent(first.body.user.session)}`);
      assert.equal(res.status, 200);
      // The feed reaches extauthz within about a second; call until it does.
      await waitFor('the revocation to reach extauthz', async () => (await page.evaluate(() => window.tg.call())).error === 'token_revoked', 10_000, 200);
      assert.deepEqual(await page.evaluate(() => window.tg.state.signOuts), ['token_revoked']);
    } finally {
      await context.close();
    }
  });
});

describe('cookie transport', () => {
  let stack;
  before(async () => {
    stack = await startStack({ transport: 'cookie' });
  });
  after(async () => {
    await stack?.stop();
  });

  test('7. the refresh token stays an HttpOnly cookie the page never sees, and refresh works', async () => {
    const context = await browser.newContext();
    try {
      const params = { transport: 'cookie', refreshAhead: 0, autoRefresh: false };
      const page = await openDemo(context, stack, params);
      await page.evaluate(() => window.tg.signIn('u-cookie'));
      const cookies = await context.cookies();
      const refresh = cookies.find((c) => c.name === 'tokengate_refresh');
      assert.ok(refresh, `the browser holds the refresh cookie (got ${cookies.map((c) => c.name)})`);
      assert.equal(refresh.httpOnly, true);
      assert.equal(refresh.path, '/v1/token');
      assert.equal(await page.evaluate((v) => document.cookie.includes('tokengate_refresh') || document.cookie.includes(v), refresh.value), false);
      assert.equal(await page.evaluate((v) => document.documentElement.outerHTML.includes(v), refresh.value), false);

      assert.equal((await page.evaluate(() => window.tg.call())).status, 200);
      await serverSaysExpired(stack, page);
      const tokens0 = stack.count('POST', '/v1/token', 200);
      const results = await callMany(page, 3);
      assert.deepEqual(results.map((r) => r.status), [200, 200, 200]);
      assert.equal(stack.count('POST', '/v1/token', 200) - tokens0, 1);
      const rotated = (await context.cookies()).find((c) => c.name === 'tokengate_refresh');
      assert.notEqual(rotated.value, refresh.value, 'the cookie was rotated');
      assert.equal(await page.evaluate(() => document.cookie.includes('tokengate_refresh')), false);

      // A reload forgets the in-memory access token; the cookie resumes the session.
      await page.reload();
      await page.waitForFunction(() => window.tg?.ready === true);
      const resumed = await page.evaluate(() => window.tg.call());
      assert.equal(resumed.status, 200);
      assert.equal(resumed.body.user.id, 'u-cookie');

      // Sign-out revokes through /v1/token/revoke, where the cookie is sent, and clears it.
      await page.evaluate(() => window.tg.client.signOut());
      // nginx writes its access-log line after the answer has left: wait for
      // the line, then check its status (the statuses seen are in the message).
      await waitFor('nginx to log the sign-out', async () => stack.count('POST', '/v1/token/revoke') > 0, 5_000);
      const revokes = stack.accessLog().filter((l) => l.startsWith('POST /v1/token/revoke '));
      assert.equal(stack.count('POST', '/v1/token/revoke', 200), 1, `sign-out requests logged: ${JSON.stringify(revokes)}`);
      assert.equal((await context.cookies()).find((c) => c.name === 'tokengate_refresh'), undefined);
      assert.deepEqual(page.errors, []);
    } finally {
      await context.close();
    }
  });

  test('8. CSRF: a page on another origin of the same site can neither refresh nor sign out with the cookie', async () => {
    const context = await browser.newContext();
    const evil = await startForeignSite(stack.base);
    try {
      const page = await openDemo(context, stack, { transport: 'cookie', refreshAhead: 0, autoRefresh: false });
      await page.evaluate(() => window.tg.signIn('u-csrf'));
      const cookie0 = (await context.cookies()).find((c) => c.name === 'tokengate_refresh');
      assert.ok(cookie0, 'signed in with the refresh cookie');
      const rotations0 = await stack.metric('tokengate_refresher_rotations_total');
      const revocations0 = await stack.metric('tokengate_refresher_revocations_total');
      const refused0 = stack.count('POST', '/v1/token', 403);
      const refusedOut0 = stack.count('POST', '/v1/token/revoke', 403);

      // http://127.0.0.1:<other port> is another origin of the same site: SameSite=Strict
      // does not stop the browser from sending the cookie with what that page posts.
      const attacker = await context.newPage();
      for (const path of ['/v1/token', '/v1/token/revoke']) {
        // An auto-submitted form (a top-level navigation, no preflight).
        const [res] = await Promise.all([
          attacker.waitForResponse((r) => r.url() === `${stack.base}${path}`),
          attacker.goto(`${evil.url}/form?path=${encodeURIComponent(path)}`),
        ]);
        assert.equal(res.status(), 403, `form POST ${path} from ${evil.url}: ${res.status()} ${await res.text()}`);
        assert.equal(res.request().headers().origin, evil.url);
      }
      // A no-cors fetch with credentials (simple request, opaque answer).
      await attacker.goto(`${evil.url}/`);
      await attacker.evaluate(async (url) => {
        await fetch(url, {
          method: 'POST',
          mode: 'no-cors',
          credentials: 'include',
          headers: { 'content-type': 'application/x-www-form-urlencoded' },
          body: 'grant_type=refresh_token',
        });
      }, `${stack.base}/v1/token`);

      assert.equal(stack.count('POST', '/v1/token', 403) - refused0, 2, 'refused refreshes at nginx');
      assert.equal(stack.count('POST', '/v1/token/revoke', 403) - refusedOut0, 1, 'refused sign-outs at nginx');
      assert.equal((await stack.metric('tokengate_refresher_rotations_total')) - rotations0, 0, 'rotations caused by the foreign page');
      assert.equal((await stack.metric('tokengate_refresher_revocations_total')) - revocations0, 0, 'sessions revoked by the foreign page');
      const cookie1 = (await context.cookies()).find((c) => c.name === 'tokengate_refresh');
      assert.equal(cookie1?.value, cookie0.value, 'the refresh cookie is untouched');

      // The session is unaffected: the app's own page still refreshes with the cookie.
      await page.reload();
      await page.waitForFunction(() => window.tg?.ready === true);
      const resumed = await page.evaluate(() => window.tg.call());
      assert.equal(resumed.status, 200, JSON.stringify(resumed));
      assert.equal(resumed.body.user.id, 'u-csrf');
      assert.deepEqual(await page.evaluate(() => window.tg.state.signOuts), []);
    } finally {
      await context.close();
      await new Promise((r) => evil.server.close(r));
    }
  });
});

/**
 * startForeignSite serves an attacker's pages on another loopback port:
 * /form?path=P auto-submits a form (grant_type=refresh_token) to target+P;
 * / is an empty page to run fetch() from.
 */
async function startForeignSite(target) {
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://foreign');
    const path = url.searchParams.get('path') ?? '';
    const body =
      url.pathname === '/form'
        ? `<!doctype html><form method="POST" action="${target}${path}"><input type="hidden" name="grant_type" value="refresh_token"></form><script>document.forms[0].submit()</script>`
        : '<!doctype html><title>foreign</title>';
    res.writeHead(200, { 'content-type': 'text/html' });
    res.end(body);
  });
  server.keepAliveTimeout = 1000;
  const port = await new Promise((r) => server.listen(0, '127.0.0.1', () => r(server.address().port)));
  return { server, url: `http://127.0.0.1:${port}` };
}

/**
 * record keeps every request the page sends with a DPoP header (method,
 * URL, proof, Authorization) and every token answer it receives from
 * /login or /v1/token — what an attacker reading the page's traffic would
 * copy. settle() waits for the asynchronous header and body reads.
 */
function record(page) {
  const rec = { proofs: [], tokens: [], pending: [] };
  page.on('request', (r) => {
    rec.pending.push(
      r.allHeaders().then((h) => {
        if (h.dpop !== undefined) rec.proofs.push({ method: r.method(), path: new URL(r.url()).pathname, url: r.url(), dpop: h.dpop, authorization: h.authorization });
      }, () => {}),
    );
  });
  page.on('response', (r) => {
    const path = new URL(r.url()).pathname;
    if (r.request().method() !== 'POST' || (path !== '/login' && path !== '/v1/token')) return;
    rec.pending.push(
      r.json().then((b) => {
        if (b?.access_token) rec.tokens.push({ path, ...b });
      }, () => {}),
    );
  });
  rec.settle = () => Promise.all(rec.pending);
  rec.last = (path) => rec.proofs.filter((p) => p.path === path).at(-1);
  return rec;
}

/**
 * fromNode sends GET path to the stack from Node (a thief's machine),
 * connecting from the loopback address from: its status and denial reason.
 */
function fromNode(stack, path, headers = {}, from = '127.0.0.1') {
  return new Promise((resolve, reject) => {
    const req = http.get(`${stack.base}${path}`, { headers, localAddress: from, agent: false }, (res) => {
      res.resume();
      const www = res.headers['www-authenticate'] ?? null;
      res.on('end', () => resolve({ status: res.statusCode, reason: reasonOf(www), www }));
    });
    req.on('error', reject);
  });
}

/** refreshFromNode presents a refresh token to /v1/token from Node, with the given extra headers. */
async function refreshFromNode(stack, token, headers = {}) {
  const r = await fetch(`${stack.base}/v1/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers },
    body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: token }),
  });
  return { status: r.status, body: await r.json().catch(() => null) };
}

const jktOf = (accessToken) => decodeJWT(accessToken).claims.cnf?.jkt;

/** idbRecords counts the records of every IndexedDB object store of the page's origin. */
const idbRecords = (page) =>
  page.evaluate(async () => {
    const out = {};
    for (const { name } of await indexedDB.databases()) {
      const db = await new Promise((res, rej) => {
        const r = indexedDB.open(name);
        r.onsuccess = () => res(r.result);
        r.onerror = () => rej(r.error);
      });
      for (const store of db.objectStoreNames) {
        out[`${name}/${store}`] = await new Promise((res, rej) => {
          const r = db.transaction(store).objectStore(store).count();
          r.onsuccess = () => res(r.result);
          r.onerror = () => rej(r.error);
        });
      }
      db.close();
    }
    return out;
  });

/** The demo page with the client's dpop option, no timers: the test decides when to refresh. */
const DPOP = { dpop: true, autoRefresh: false, refreshAhead: 0 };

describe('DPoP (sender-constrained tokens)', () => {
  let stack;
  before(async () => {
    // A long access TTL: the tokens copied out below must still be valid when replayed.
    stack = await startStack({ label: 'dpop', dpop: 'optional', accessTTL: '60s' });
  });
  after(async () => {
    await stack?.stop();
  });

  test('D1. sign in with a proof, call, refresh; copied tokens and proofs are refused elsewhere while the page keeps working', async () => {
    const context = await browser.newContext();
    try {
      const page = await openDemo(context, stack, DPOP);
      const rec = record(page);

      // Sign-in: the page signs a proof for /login; the login backend forwards it to the refresher.
      await page.evaluate(() => window.tg.signIn('u-dpop'));
      await rec.settle();
      assert.equal(rec.tokens.find((t) => t.path === '/login')?.token_type, 'DPoP');
      const loginProof = rec.last('/login');
      assert.ok(loginProof, 'the sign-in request carried a DPoP proof');
      assert.equal(decodeJWT(loginProof.dpop).claims.htu, `${stack.base}/login`);
      const jkt = proofJKT(loginProof.dpop);
      const access0 = await page.evaluate(() => window.tg.client.session.accessToken);
      assert.equal(jktOf(access0), jkt, 'cnf.jkt of the first token is the page key');

      // API calls: allowed, the upstream sees the identity; the DPoP-only route too.
      const r1 = await page.evaluate(() => window.tg.call());
      assert.equal(r1.status, 200, JSON.stringify(r1));
      assert.equal(r1.body.user.id, 'u-dpop');
      assert.equal(r1.body.user.name, '张伟');
      const r2 = await page.evaluate(() => window.tg.call('/api/dpop/echo'));
      assert.equal(r2.status, 200, JSON.stringify(r2));
      assert.equal(r2.body.user.id, 'u-dpop');
      await rec.settle();
      const apiProof = rec.last('/api/echo');
      assert.ok(apiProof, 'the API call carried a DPoP proof');
      assert.match(apiProof.authorization, /^DPoP /);
      assert.equal(decodeJWT(apiProof.dpop).claims.ath, ath(access0));

      // Refresh: a proof on /v1/token, the new token bound to the same key.
      const rotations0 = await stack.metric('tokengate_refresher_rotations_total');
      await page.evaluate(() => window.tg.client.refresh());
      const access1 = await page.evaluate(() => window.tg.client.session.accessToken);
      assert.notEqual(access1, access0);
      assert.equal(jktOf(access1), jkt, 'cnf.jkt after the refresh');
      await rec.settle();
      assert.equal(proofJKT(rec.last('/v1/token').dpop), jkt);
      assert.equal(decodeJWT(rec.last('/v1/token').dpop).claims.htu, `${stack.base}/v1/token`);
      const tokenAnswer = rec.tokens.filter((t) => t.path === '/v1/token').at(-1);
      assert.equal(tokenAnswer.token_type, 'DPoP');
      assert.equal((await stack.metric('tokengate_refresher_rotations_total')) - rotations0, 1);
      assert.equal((await page.evaluate(() => window.tg.call())).status, 200);

      // --- the thief: the access token, the refresh token and one of the page's proofs, copied out ---
      await rec.settle();
      const stolenAccess = access1;
      const stolenRefresh = tokenAnswer.refresh_token;
      assert.ok(stolenRefresh, 'the refresh token was read from the page traffic');
      const captured = rec.last('/api/echo');
      assert.equal(captured.authorization, `DPoP ${stolenAccess}`);
      const thief = await newKey();
      const url = `${stack.base}/api/echo`;
      const api0 = stack.app.seen.length;

      const asBearer = await fromNode(stack, '/api/echo', { authorization: `Bearer ${stolenAccess}` });
      assert.deepEqual([asBearer.status, asBearer.reason], [401, 'invalid_dpop_proof'], `as Bearer: ${asBearer.www}`);
      assert.match(asBearer.www, /^DPoP /);
      const noProof = await fromNode(stack, '/api/echo', { authorization: `DPoP ${stolenAccess}` });
      assert.deepEqual([noProof.status, noProof.reason], [401, 'invalid_dpop_proof'], `DPoP without a proof: ${noProof.www}`);
      const otherKey = await fromNode(stack, '/api/echo', {
        authorization: `DPoP ${stolenAccess}`,
        dpop: await proof(thief, 'GET', url, { ath: ath(stolenAccess) }),
      });
      assert.deepEqual([otherKey.status, otherKey.reason], [401, 'invalid_dpop_proof'], `another key's proof: ${otherKey.www}`);
      const replayed = await fromNode(stack, '/api/echo', { authorization: captured.authorization, dpop: captured.dpop });
      assert.deepEqual([replayed.status, replayed.reason], [401, 'invalid_dpop_proof'], `a replayed proof of the page: ${replayed.www}`);
      assert.equal(stack.app.seen.length, api0, 'a stolen token reached the app');

      const rotations1 = await stack.metric('tokengate_refresher_rotations_total');
      const refreshNoProof = await refreshFromNode(stack, stolenRefresh);
      assert.deepEqual([refreshNoProof.status, refreshNoProof.body?.error], [400, 'invalid_grant'], JSON.stringify(refreshNoProof));
      const refreshOtherKey = await refreshFromNode(stack, stolenRefresh, { dpop: await proof(thief, 'POST', `${stack.base}/v1/token`) });
      assert.deepEqual([refreshOtherKey.status, refreshOtherKey.body?.error], [400, 'invalid_grant'], JSON.stringify(refreshOtherKey));
      assert.equal((await stack.metric('tokengate_refresher_rotations_total')) - rotations1, 0, 'rotations caused by the thief');

      // The page is unaffected: calls and a refresh still work, nobody was signed out.
      assert.equal((await page.evaluate(() => window.tg.call())).status, 200);
      await page.evaluate(() => window.tg.client.refresh());
      const access2 = await page.evaluate(() => window.tg.client.session.accessToken);
      assert.notEqual(access2, access1);
      assert.equal(jktOf(access2), jkt);
      const after = await page.evaluate(() => window.tg.call('/api/dpop/echo'));
      assert.equal(after.status, 200, JSON.stringify(after));
      assert.deepEqual(await page.evaluate(() => window.tg.state.signOuts), []);
      assert.deepEqual(page.errors, []);
    } finally {
      await context.close();
    }
  });

  test('D2. the key survives a reload; sign-out deletes it and the next sign-in gets a new one', async () => {
    const context = await browser.newContext();
    try {
      const page = await openDemo(context, stack, { ...DPOP, storage: 'localStorage' });
      const rec = record(page);
      await page.evaluate(() => window.tg.signIn('u-dpop-reload'));
      assert.equal((await page.evaluate(() => window.tg.call())).status, 200);
      await rec.settle();
      const jkt = proofJKT(rec.last('/api/echo').dpop);
      assert.ok(Object.values(await idbRecords(page)).some((n) => n > 0), 'the key is in IndexedDB');

      await page.reload();
      await page.waitForFunction(() => window.tg?.ready === true);
      const resumed = await page.evaluate(() => window.tg.call());
      assert.equal(resumed.status, 200, JSON.stringify(resumed));
      assert.equal(resumed.body.user.id, 'u-dpop-reload');
      await rec.settle();
      assert.equal(proofJKT(rec.last('/api/echo').dpop), jkt, 'the same key signs after the reload');

      await page.evaluate(() => window.tg.client.signOut());
      const stores = await idbRecords(page);
      assert.deepEqual(Object.entries(stores).filter(([, n]) => n > 0), [], `IndexedDB after sign-out: ${JSON.stringify(stores)}`);

      await page.evaluate(() => window.tg.signIn('u-dpop-reload'));
      const access = await page.evaluate(() => window.tg.client.session.accessToken);
      assert.ok(jktOf(access), 'the new session is bound');
      assert.notEqual(jktOf(access), jkt, 'a new key after sign-out');
      assert.equal((await page.evaluate(() => window.tg.call())).status, 200);
      assert.deepEqual(page.errors, []);
    } finally {
      await context.close();
    }
  });

  test('D3. rollout: with dpop optional a Bearer client still works, except on a route that requires DPoP', async () => {
    const context = await browser.newContext();
    try {
      const page = await openDemo(context, stack, { autoRefresh: false });
      await page.evaluate(() => window.tg.signIn('u-bearer'));
      const token = await page.evaluate(() => window.tg.client.session.accessToken);
      assert.equal(jktOf(token), undefined, 'a sign-in without a proof is not bound');
      assert.equal((await page.evaluate(() => window.tg.call())).status, 200);
      const required = await fromNode(stack, '/api/dpop/echo', { authorization: `Bearer ${token}` });
      assert.equal(required.status, 401, `Bearer on a dpop: required route: ${required.www}`);
      // An unbound token where DPoP is required: invalid_token with a DPoP challenge.
      assert.equal(required.reason, 'invalid_token', required.www);
      assert.match(required.www, /^DPoP /);
    } finally {
      await context.close();
    }
  });
});

describe('network binding', () => {
  let stack;
  let hop;
  let proxied;
  before(async () => {
    stack = await startStack({ label: 'network', bindNetwork: true, dpop: 'optional', accessTTL: '60s' });
    // The browser reaches nginx through a proxy whose onward source address the test changes.
    hop = await startHopProxy('127.0.0.2');
    proxied = await chromium.launch({ executablePath: CHROMIUM, args: ARGS, headless: true, proxy: { server: hop.url, bypass: '<-loopback>' } });
  });
  after(async () => {
    await proxied?.close();
    await hop?.close();
    await stack?.stop();
  });

  for (const [scheme, params] of [['Bearer', {}], ['DPoP', { dpop: true }]]) {
    test(`N1. (${scheme}) the network changes: one token_unbound, one refresh, then success; the old token stays refused`, async () => {
      hop.from = '127.0.0.2';
      const context = await proxied.newContext();
      try {
        const page = await openDemo(context, stack, { ...params, autoRefresh: false, refreshAhead: 0 });
        await page.evaluate(() => window.tg.signIn('u-moving'));
        const first = await page.evaluate(() => window.tg.call('/api/net/echo'));
        assert.equal(first.status, 200, JSON.stringify(first));
        assert.equal(first.body.user.id, 'u-moving');
        const token0 = await page.evaluate(() => window.tg.client.session.accessToken);
        assert.equal(decodeJWT(token0).claims.cnf?.ip, '127.0.0.2');

        // The laptop moves to another network.
        hop.from = '127.0.0.3';
        const tokens0 = stack.count('POST', '/v1/token');
        const refused0 = stack.count('GET', '/api/net/echo', 401);
        const moved = await page.evaluate(() => window.tg.call('/api/net/echo'));
        assert.equal(moved.status, 200, JSON.stringify(moved));
        assert.equal(stack.count('GET', '/api/net/echo', 401) - refused0, 1, 'token_unbound answers at nginx');
        assert.equal(stack.count('POST', '/v1/token') - tokens0, 1, 'refreshes');
        const token1 = await page.evaluate(() => window.tg.client.session.accessToken);
        assert.equal(decodeJWT(token1).claims.cnf?.ip, '127.0.0.3');
        assert.deepEqual(await page.evaluate(() => window.tg.state.signOuts), []);
        assert.equal((await page.evaluate(() => window.tg.call('/api/net/echo'))).status, 200);

        // Someone holding only an access token: the old one from the new network,
        // either from a third address, with or without forwarding headers
        // naming the token's own address.
        const thefts = [
          { token: token0, from: '127.0.0.3' },
          { token: token0, from: '127.0.0.4' },
          { token: token1, from: '127.0.0.4' },
        ];
        for (const { token, from } of thefts) {
          const own = decodeJWT(token).claims.cnf.ip;
          for (const forged of [{}, { 'x-real-ip': own, 'x-forwarded-for': own }]) {
            const r = await fromNode(stack, '/api/net/echo', { authorization: `Bearer ${token}`, ...forged }, from);
            // A DPoP-bound token without its proof is refused before its network is looked at.
            const want = scheme === 'Bearer' ? 'token_unbound' : 'invalid_dpop_proof';
            assert.deepEqual([r.status, r.reason], [401, want], `token of ${own} from ${from} ${JSON.stringify(forged)}: ${r.www}`);
          }
        }
        if (scheme === 'Bearer') {
          // The genuine holder's current token from its own network still works.
          assert.equal((await fromNode(stack, '/api/net/echo', { authorization: `Bearer ${token1}` }, '127.0.0.3')).status, 200);
        }
        assert.deepEqual(page.errors, []);
      } finally {
        await context.close();
      }
    });
  }
});
