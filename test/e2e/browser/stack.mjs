// Starts the real pieces of the browser end-to-end test as processes:
// tokengate refresher (bolt store, short access TTL), tokengate extauthz,
// nginx from the system configured by examples/nginx/tokengate.conf, and a
// tiny upstream app (in this process) that echoes the identity headers it
// received and provides the demo's /login backend. Every port comes from the
// kernel; every process is stopped by stop().
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, cpSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';

export const repoRoot = resolve(import.meta.dirname, '../../..');
const clientDir = join(repoRoot, 'examples/client');

/** freePort returns a loopback port that was free a moment ago. */
export function freePort() {
  return new Promise((res, rej) => {
    const s = net.createServer();
    s.on('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => res(port));
    });
  });
}

/** waitFor polls check() until it resolves truthy or the deadline passes. */
export async function waitFor(what, check, timeoutMs = 20_000, everyMs = 50) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    try {
      if (await check()) return;
    } catch (e) {
      last = e;
    }
    await new Promise((r) => setTimeout(r, everyMs));
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${last.message}` : ''}`);
}

async function httpOk(url) {
  const res = await fetch(url);
  return res.ok;
}

let builtBinary;

/** cleanup removes the binary tokengateBinary built, if it built one. */
export function cleanup() {
  if (builtBinary) rmSync(dirname(builtBinary), { recursive: true, force: true });
  builtBinary = undefined;
}
/** tokengateBinary is $TOKENGATE_BIN, or ./cmd/tokengate built once into a temp dir. */
export function tokengateBinary() {
  if (process.env.TOKENGATE_BIN) return process.env.TOKENGATE_BIN;
  if (!builtBinary) {
    const out = join(mkdtempSync(join(tmpdir(), 'tokengate-bin-')), 'tokengate');
    execFileSync('go', ['build', '-o', out, './cmd/tokengate'], { cwd: repoRoot, stdio: 'inherit' });
    builtBinary = out;
  }
  return builtBinary;
}

/** nginxBinary finds Debian's nginx. */
export function nginxBinary() {
  for (const p of [process.env.NGINX_BIN, '/usr/sbin/nginx', '/usr/bin/nginx'].filter(Boolean)) if (existsSync(p)) return p;
  throw new Error('nginx not found; install it with: apt-get install nginx');
}

/** renderTemplate fills ${NAME} placeholders the way envsubst does; an unknown name is an error. */
export function renderTemplate(text, vars) {
  return text.replace(/\$\{([A-Z_][A-Z0-9_]*)\}/g, (_, name) => {
    if (!(name in vars)) throw new Error(`template variable ${name} has no value`);
    return String(vars[name]);
  });
}

/**
 * startStack starts one complete stack. transport is the refresher's
 * --refresh-token-transport. accessTTL is short so tests can wait past it.
 * label names the stack's log folder (default: the transport).
 *
 * dpop (a --dpop mode: 'optional' or 'required') turns on sender-constrained
 * tokens: the refresher accepts the browser's sign-in proof for the demo's
 * /login URL (--dpop-signin-urls) and knows its public origin
 * (--external-url, since nginx passes $host without the port), extauthz pins
 * the same origin, and routes under /api/dpop/ require DPoP. bindNetwork
 * puts the client's address into every token (--bind-network; the login
 * backend passes nginx's X-Real-IP as client_ip) and routes under /api/net/
 * require it.
 */
export async function startStack({ transport = 'body', accessTTL = '4s', reuseGrace = '2s', label = transport, dpop, bindNetwork = false } = {}) {
  const dir = mkdtempSync(join(tmpdir(), `tokengate-e2e-${label}-`));
  chmodSync(dir, 0o755);
  const procs = [];
  const bin = tokengateBinary();
  const logs = join(dir, 'logs');
  mkdirSync(logs);

  const spawnLogged = (name, cmd, args) => {
    const out = openSync(join(logs, `${name}.log`), 'a');
    const p = spawn(cmd, args, { cwd: dir, stdio: ['ignore', out, out] });
    p.name = name;
    procs.push(p);
    p.on('exit', (code, sig) => {
      p.exited = { code, sig };
    });
    return p;
  };
  const mustRun = (p) => () => {
    if (p.exited) throw new Error(`${p.name} exited (${JSON.stringify(p.exited)}):\n${readFileSync(join(logs, `${p.name}.log`), 'utf8').slice(-2000)}`);
    return true;
  };

  // Keys and the admin token, as an operator would provision them.
  const keyFile = join(dir, 'signing-key.jwk');
  execFileSync(bin, ['keygen', '--out', keyFile], { stdio: 'ignore' });
  const adminToken = randomBytes(24).toString('hex');
  const adminTokenFile = join(dir, 'admin-token');
  writeFileSync(adminTokenFile, adminToken, { mode: 0o600 });
  const issuer = 'http://tokengate.e2e.test';
  const audience = 'e2e-api';

  // nginx's port first: the DPoP settings name the public origin.
  const nginxPort = await freePort();
  const base = `http://127.0.0.1:${nginxPort}`;
  const refresherDPoP = [];
  if (dpop) refresherDPoP.push('--dpop', dpop, '--dpop-signin-urls', `${base}/login`, '--external-url', base);
  if (bindNetwork) refresherDPoP.push('--bind-network');

  // refresher
  const refresherPort = await freePort();
  const refresher = spawnLogged('refresher', bin, [
    'refresher',
    '--listen', `127.0.0.1:${refresherPort}`,
    '--store', `bolt://${join(dir, 'tokengate.db')}`,
    '--signing-key', keyFile,
    '--issuer', issuer,
    '--audience', audience,
    '--access-ttl', accessTTL,
    '--reuse-grace', reuseGrace,
    '--admin-token-file', adminTokenFile,
    '--refresh-token-transport', transport,
    '--client-ip-header', 'X-Forwarded-For',
    ...refresherDPoP,
  ]);
  const refresherURL = `http://127.0.0.1:${refresherPort}`;
  await waitFor('refresher /readyz', async () => mustRun(refresher)() && (await httpOk(`${refresherURL}/readyz`)));

  // extauthz: leeway 0 so an access token of a few seconds really expires.
  const authzHttpPort = await freePort();
  const authzGrpcPort = await freePort();
  const config = join(dir, 'extauthz.yaml');
  writeFileSync(
    config,
    [
      'providers:',
      '  - name: refresher',
      `    issuer: ${issuer}`,
      `    audiences: [${audience}]`,
      `    jwks_url: ${refresherURL}/.well-known/jwks.json`,
      '    leeway: 0s',
      // examples/nginx/tokengate.conf sets X-Original-URI/-Method and Host.
      'forward_auth:',
      '  proxy: nginx',
      ...(dpop ? ['dpop:', `  external_origin: ${base}`] : []),
      ...(dpop || bindNetwork ? ['routes:'] : []),
      ...(dpop ? ['  - {path_prefix: /api/dpop/, action: required, dpop: required}'] : []),
      ...(bindNetwork ? ['  - {path_prefix: /api/net/, action: required, bind_network: {ipv4_prefix: 32}}'] : []),
      ...(dpop || bindNetwork ? ['default_action: required'] : []),
      '',
    ].join('\n'),
  );
  // extauthz follows the refresher's revocation feed, so a sign-out is denied at once.
  const authzArgs = [
    'extauthz', '--config', config, '--grpc-listen', `127.0.0.1:${authzGrpcPort}`, '--http-listen', `127.0.0.1:${authzHttpPort}`,
    '--revocations-url', `${refresherURL}/v1/revocations`, '--admin-token-file', adminTokenFile,
  ];
  const extauthz = spawnLogged('extauthz', bin, authzArgs);
  await waitFor('extauthz /readyz', async () => mustRun(extauthz)() && (await httpOk(`http://127.0.0.1:${authzHttpPort}/readyz`)));

  // The upstream app: echoes identity headers, and is the demo's login backend.
  const app = startApp({ refresherURL, adminToken, transport, bindNetwork });
  const appPort = await new Promise((r) => app.server.listen(0, '127.0.0.1', () => r(app.server.address().port)));

  // Static files: the demo page, the built client, axios' ESM build.
  const www = join(dir, 'www');
  cpSync(join(clientDir, 'demo'), www, { recursive: true });
  cpSync(join(clientDir, 'dist/esm'), join(www, 'client'), { recursive: true });
  cpSync(join(clientDir, 'node_modules/axios/dist/esm/axios.js'), join(www, 'axios.js'));
  chmodTree(www);

  // nginx, configured by the shipped example.
  const prefix = join(dir, 'nginx');
  for (const d of ['', 'tmp', 'tmp/body', 'tmp/proxy', 'tmp/fastcgi', 'tmp/uwsgi', 'tmp/scgi']) mkdirSync(join(prefix, d), { recursive: true, mode: 0o777 });
  for (const d of ['tmp', 'tmp/body', 'tmp/proxy', 'tmp/fastcgi', 'tmp/uwsgi', 'tmp/scgi']) chmodSync(join(prefix, d), 0o777);
  const template = readFileSync(join(repoRoot, 'examples/nginx/tokengate.conf'), 'utf8');
  writeFileSync(
    join(prefix, 'tokengate.conf'),
    renderTemplate(template, {
      TOKENGATE_EXTAUTHZ: `127.0.0.1:${authzHttpPort}`,
      TOKENGATE_REFRESHER: `127.0.0.1:${refresherPort}`,
      APP_UPSTREAM: `127.0.0.1:${appPort}`,
      LISTEN: `127.0.0.1:${nginxPort}`,
      STATIC_ROOT: www,
    }),
  );
  const accessLog = join(prefix, 'access.log');
  writeFileSync(
    join(prefix, 'nginx.conf'),
    `daemon off;
worker_processes 1;
pid ${prefix}/nginx.pid;
error_log ${prefix}/error.log warn;
events { worker_connections 512; }
http {
  include /etc/nginx/mime.types;
  default_type application/octet-stream;
  log_format e2e '$request_method $uri $status';
  access_log ${accessLog} e2e;
  client_body_temp_path ${prefix}/tmp/body;
  proxy_temp_path ${prefix}/tmp/proxy;
  fastcgi_temp_path ${prefix}/tmp/fastcgi;
  uwsgi_temp_path ${prefix}/tmp/uwsgi;
  scgi_temp_path ${prefix}/tmp/scgi;
  include ${prefix}/tokengate.conf;
}
`,
  );
  execFileSync(nginxBinary(), ['-t', '-q', '-p', prefix, '-c', join(prefix, 'nginx.conf')], { stdio: 'inherit' });
  const nginx = spawnLogged('nginx', nginxBinary(), ['-p', prefix, '-c', join(prefix, 'nginx.conf')]);
  await waitFor('nginx', async () => mustRun(nginx)() && (await httpOk(`${base}/index.html`)));

  return {
    dir,
    base,
    refresherURL,
    adminToken,
    transport,
    app,
    /** Requests nginx logged, as "METHOD /path STATUS" lines. */
    accessLog: () => (existsSync(accessLog) ? readFileSync(accessLog, 'utf8').split('\n').filter(Boolean) : []),
    /** How many requests nginx logged for method+path (any status, or the given one). */
    count(method, path, status) {
      return this.accessLog().filter((l) => {
        const [m, p, s] = l.split(' ');
        return m === method && p === path && (status === undefined || Number(s) === status);
      }).length;
    },
    /** A counter of the refresher's /metrics (summed over labels). */
    async metric(name) {
      const text = await (await fetch(`${refresherURL}/metrics`)).text();
      let sum = 0;
      for (const line of text.split('\n')) {
        if (line.startsWith('#')) continue;
        const m = /^([a-z_:]+)(\{[^}]*\})?\s+([0-9.eE+-]+)$/.exec(line.trim());
        if (m && m[1] === name) sum += Number(m[3]);
      }
      return sum;
    },
    /** admin calls an admin endpoint of the refresher. */
    admin(method, path) {
      return fetch(`${refresherURL}${path}`, { method, headers: { authorization: `Bearer ${adminToken}` } });
    },
    async stop() {
      await new Promise((r) => app.server.close(r));
      app.server.closeAllConnections?.();
      for (const p of procs.reverse()) {
        if (p.exited) continue;
        const done = new Promise((r) => p.once('exit', r));
        p.kill(p.name === 'nginx' ? 'SIGQUIT' : 'SIGTERM');
        const t = setTimeout(() => p.kill('SIGKILL'), 5000);
        await done;
        clearTimeout(t);
      }
      // Keep the processes' logs with the test output (a CI artifact), drop the rest.
      const keep = join(repoRoot, 'test-output', 'e2e-logs', label);
      mkdirSync(keep, { recursive: true });
      cpSync(logs, keep, { recursive: true });
      for (const f of ['error.log', 'access.log']) if (existsSync(join(prefix, f))) cpSync(join(prefix, f), join(keep, `nginx-${f}`));
      rmSync(dir, { recursive: true, force: true });
    },
    logs: (name) => readFileSync(join(logs, `${name}.log`), 'utf8'),
  };
}

function chmodTree(p) {
  chmodSync(p, 0o755);
  for (const e of readdirSync(p, { withFileTypes: true })) {
    const q = join(p, e.name);
    if (e.isDirectory()) chmodTree(q);
    else chmodSync(q, 0o644);
  }
}

/**
 * startApp is the upstream behind nginx. /api/echo answers with the identity
 * headers it received (x-user-name percent-decoded, as docs/extauthz.md
 * says). /login is the app's login backend: it calls the refresher's
 * POST /v1/sessions with the admin token server-side and hands the browser
 * the token response — with the cookie transport it passes the refresher's
 * Set-Cookie on and leaves the refresh token out of the body. A browser's
 * DPoP proof (signed for this /login URL) is forwarded to the refresher in
 * the DPoP header, which binds the new session to the browser's key; with
 * network binding the client's address (nginx's X-Real-IP) goes along as
 * client_ip.
 */
function startApp({ refresherURL, adminToken, transport, bindNetwork }) {
  const seen = [];
  const server = http.createServer(async (req, res) => {
    const url = new URL(req.url, 'http://app');
    if (url.pathname.startsWith('/api/')) {
      const h = req.headers;
      seen.push({ path: url.pathname, userId: h['x-user-id'], rawName: h['x-user-name'], authorization: h.authorization !== undefined, dpop: h.dpop !== undefined, realIP: h['x-real-ip'] });
      const body = {
        path: url.pathname,
        user: {
          id: h['x-user-id'] ?? null,
          name: h['x-user-name'] !== undefined ? decodeURIComponent(h['x-user-name']) : null,
          rawName: h['x-user-name'] ?? null,
          roles: h['x-user-roles']?.split(',') ?? [],
          session: h['x-session-id'] ?? null,
        },
      };
      res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' });
      res.end(JSON.stringify(body));
      return;
    }
    if (url.pathname === '/login' && req.method === 'POST') {
      let raw = '';
      for await (const chunk of req) raw += chunk;
      const input = raw ? JSON.parse(raw) : {};
      const headers = { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' };
      if (req.headers.dpop !== undefined) headers.dpop = req.headers.dpop;
      const session = { sub: input.sub ?? 'u-1001', claims: { name: '张伟', roles: ['reader', 'writer'] } };
      if (bindNetwork) session.client_ip = req.headers['x-real-ip'];
      const r = await fetch(`${refresherURL}/v1/sessions`, { method: 'POST', headers, body: JSON.stringify(session) });
      const body = await r.json();
      const answer = { 'content-type': 'application/json', 'cache-control': 'no-store' };
      const cookie = r.headers.getSetCookie?.() ?? [];
      if (transport === 'cookie') {
        delete body.refresh_token;
        if (cookie.length) answer['set-cookie'] = cookie;
      }
      res.writeHead(r.status === 201 ? 200 : r.status, answer);
      res.end(JSON.stringify(body));
      return;
    }
    res.writeHead(404, { 'content-type': 'application/json' });
    res.end('{"error":"not_found"}');
  });
  server.keepAliveTimeout = 1000;
  return { server, seen };
}
