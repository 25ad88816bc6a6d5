// The demo page: a plain ES module using the built @tokengate/client
// (its ES module build, dist/esm, served at ./client/) and, with
// ?adapter=axios, the package's axios entry (./client/axios.js, the
// @tokengate/client/axios subpath) with axios' own ESM build (served at
// ./axios.js). Query parameters choose the client's options so a person — or
// test/e2e/browser — can click through the scenarios. With ?dpop=true the
// client signs DPoP proofs, and the sign-in request carries one from
// ./client/dpop.js (@tokengate/client/dpop).
import { createFetch, TokenClient, isTokenGateError } from './client/index.js';

const q = new URLSearchParams(location.search);
const adapter = q.get('adapter') ?? 'fetch';
const options = {
  transport: q.get('transport') ?? 'body',
  storage: q.get('storage') ?? 'memory',
  refreshAhead: Number(q.get('refreshAhead') ?? 60),
  autoRefresh: q.get('autoRefresh') !== 'false',
  lockTimeout: Number(q.get('lockTimeout') ?? 10),
  dpop: q.get('dpop') === 'true',
  onTokens: (t) => event('tokens', `${t.source}, expires ${t.expiresAt.toISOString()}`),
  onSignOut: (reason) => {
    state.signOuts.push(reason);
    event('sign-out', reason);
  },
  onRefreshError: (e) => event('refresh-error', `${e.status} ${e.error} (attempt ${e.attempt}${e.willRetry ? `, retry in ${e.retryInMs} ms` : ''})`),
};

const state = { signOuts: [], events: [], requests: [] };
const logEl = document.getElementById('log');

function line(text, cls) {
  const li = document.createElement('li');
  li.textContent = `${new Date().toISOString().slice(11, 23)}  ${text}`;
  li.className = cls;
  logEl.prepend(li);
}

function event(type, detail) {
  state.events.push({ type, detail, at: Date.now() });
  line(`[${type}] ${detail}`, 'event');
  render();
}

const client = new TokenClient(options);
let request;
if (adapter === 'axios') {
  const [{ default: axios }, { attachTokenRefresh }] = await Promise.all([import('./axios.js'), import('./client/axios.js')]);
  const api = axios.create();
  attachTokenRefresh(api, { client });
  request = async (path, headers = {}) => {
    const res = await api.get(path, { headers });
    return { status: res.status, body: res.data };
  };
} else {
  const tgFetch = createFetch({ client });
  request = async (path, headers = {}) => {
    const res = await tgFetch(path, { headers });
    return { status: res.status, body: await res.json().catch(() => null) };
  };
}

/** call performs one API request and logs it; it never throws. */
async function call(path = '/api/echo', headers = {}) {
  const started = performance.now();
  const entry = { path, status: 0, error: undefined, body: undefined };
  try {
    const r = await request(path, headers);
    entry.status = r.status;
    entry.body = r.body;
    line(`GET ${path} → ${r.status} ${r.body?.user?.id ? `as ${r.body.user.id} (${r.body.user.name})` : ''} ${Math.round(performance.now() - started)} ms`, 'ok');
  } catch (e) {
    entry.status = e?.response?.status ?? e?.status ?? 0;
    entry.error = isTokenGateError(e) ? e.code : String(e?.message ?? e);
    line(`GET ${path} → ${entry.error}`, 'err');
  }
  state.requests.push(entry);
  render();
  return entry;
}

async function signIn(sub = 'u-1001') {
  // With DPoP the login backend forwards this proof to the refresher, which binds the session to the key.
  const proof = options.dpop ? await (await import('./client/dpop.js')).dpopHeaders('POST', '/login') : {};
  const res = await fetch('/login', {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...proof },
    body: JSON.stringify({ sub }),
    credentials: 'same-origin',
  });
  if (!res.ok) throw new Error(`login failed: ${res.status}`);
  await client.setTokens(await res.json(), { date: res.headers.get('date') });
}

/** tamper flips one character of the access token's signature where the client stores it. */
async function tamper() {
  const key = 'tokengate.session';
  const area = options.storage === 'localStorage' ? localStorage : sessionStorage;
  const raw = area.getItem(key);
  if (!raw) throw new Error('tamper needs ?storage=sessionStorage or localStorage');
  const s = JSON.parse(raw);
  const last = s.accessToken.at(-2) === 'A' ? 'B' : 'A';
  s.accessToken = s.accessToken.slice(0, -2) + last + s.accessToken.at(-1);
  s.obtainedAt = Date.now();
  area.setItem(key, JSON.stringify(s));
  event('tamper', 'changed one character of the stored access token');
}

function render() {
  const s = client.session;
  document.getElementById('status').textContent = s ? (client.refreshing ? 'refreshing…' : 'signed in') : 'signed out';
  document.getElementById('user').textContent = s ? `${s.claims.sub} (${s.claims.name ?? '—'})` : '—';
  document.getElementById('sid').textContent = s?.sessionId ?? '—';
  const last = client.lastRefresh;
  document.getElementById('last-refresh').textContent = last ? last.toLocaleTimeString() : 'never';
  if (s) {
    const left = Math.max(0, s.expiresAt.getTime() - Date.now());
    const iat = typeof s.claims.iat === 'number' ? s.claims.iat * 1000 : Date.now();
    const life = Math.max(1, (typeof s.claims.exp === 'number' ? s.claims.exp * 1000 : Date.now()) - iat);
    document.getElementById('left').textContent = `${(left / 1000).toFixed(1)} s`;
    document.getElementById('bar').style.width = `${Math.min(100, (left / life) * 100)}%`;
  } else {
    document.getElementById('left').textContent = '—';
    document.getElementById('bar').style.width = '0';
  }
}
setInterval(render, 250);

document.getElementById('config').textContent =
  `adapter=${adapter} transport=${options.transport} storage=${options.storage} refreshAhead=${options.refreshAhead}s autoRefresh=${options.autoRefresh} dpop=${options.dpop}`;
const on = (id, fn) => document.getElementById(id).addEventListener('click', () => fn().catch((e) => line(String(e), 'err')));
on('sign-in', () => signIn());
on('call', () => call());
on('spoof', () => call('/api/echo', { 'x-user-id': 'attacker' }));
on('parallel', () => Promise.all(Array.from({ length: 10 }, () => call())));
on('other-tab', async () => void window.open(location.href, '_blank'));
on('tamper', tamper);
on('sign-out', () => client.signOut());
render();

// The handle test/e2e/browser drives. dpop is @tokengate/client/dpop (dpopProof, dpopHeaders,
// dpopThumbprint, dpopKey, storedDpopKey, deleteDpopKey), the module the client itself uses with ?dpop=true.
window.tg = { client, call, signIn, tamper, state, dpop: options.dpop ? await import('./client/dpop.js') : undefined, ready: true };
