// The page test/e2e/browser drives for sender-constrained tokens: the built
// @tokengate/client (served at ./client/) with dpop: true, signing in
// through the demo's /login backend with a DPoP proof for that URL, which
// the backend forwards to the refresher (the proof comes from the package's
// @tokengate/client/dpop entry, served at ./client/dpop.js). Query parameters: storage,
// refreshAhead, autoRefresh (as on the demo page).
import * as tokengate from './client/index.js';

const { createFetch, TokenClient, isTokenGateError } = tokengate;
const q = new URLSearchParams(location.search);
const state = { signOuts: [], events: [], requests: [] };
const logEl = document.getElementById('log');
const log = (text) => {
  logEl.textContent = `${new Date().toISOString().slice(11, 23)}  ${text}\n${logEl.textContent}`;
};
const event = (type, detail) => {
  state.events.push({ type, detail, at: Date.now() });
  log(`[${type}] ${detail}`);
};

const client = new TokenClient({
  dpop: true,
  transport: 'body',
  storage: q.get('storage') ?? 'localStorage',
  refreshAhead: Number(q.get('refreshAhead') ?? 0),
  autoRefresh: q.get('autoRefresh') === 'true',
  onTokens: (t) => event('tokens', `${t.source}, expires ${t.expiresAt.toISOString()}`),
  onSignOut: (reason) => {
    state.signOuts.push(reason);
    event('sign-out', reason);
  },
  onRefreshError: (e) => event('refresh-error', `${e.status} ${e.error}`),
});
const tgFetch = createFetch({ client });

/** call performs one API request through the client; it never throws. */
async function call(path = '/api/echo', headers = {}) {
  const entry = { path, status: 0, error: undefined, body: undefined };
  try {
    const res = await tgFetch(path, { headers });
    entry.status = res.status;
    entry.body = await res.json().catch(() => null);
    entry.www = res.headers.get('www-authenticate');
  } catch (e) {
    entry.status = e?.status ?? 0;
    entry.error = isTokenGateError(e) ? e.code : String(e?.message ?? e);
  }
  log(`GET ${path} → ${entry.status} ${entry.error ?? ''}`);
  state.requests.push(entry);
  return entry;
}

/** loginProof signs the DPoP proof for the sign-in request with the client's key (@tokengate/client/dpop). */
async function loginProof(url) {
  const { dpopHeaders } = await import('./client/dpop.js');
  return (await dpopHeaders('POST', url)).DPoP;
}

/** signIn posts to the login backend with a proof for its URL and hands the answer to the client. */
async function signIn(sub = 'u-1001') {
  const url = new URL('/login', location.href).href;
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', dpop: await loginProof(url) },
    body: JSON.stringify({ sub }),
    credentials: 'same-origin',
  });
  if (!res.ok) throw new Error(`login failed: ${res.status} ${await res.text()}`);
  const body = await res.json();
  await client.setTokens(body, { date: res.headers.get('date') });
  return { tokenType: body.token_type };
}

/** refresh forces one refresh through the client. */
async function refresh() {
  await client.refresh();
  return client.session?.accessToken;
}

/** keyStores counts the records of every IndexedDB store of this origin. */
async function keyStores() {
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
}

window.tg = { client, call, signIn, refresh, keyStores, state, tokengate, ready: true };
