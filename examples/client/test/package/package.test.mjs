// The package as users get it: the tarball `npm pack` makes, installed into
// throwaway projects outside the repository, and the two ways of installing
// from source (a directory, a git URL). Run with `npm run test:package`
// (make test-client); needs `npm ci` in examples/client first.
//
// - the tarball holds dist (ES modules and CommonJS, declarations, source
//   maps whose sources are in it too), src, README and LICENSE;
// - a project without axios installs it, type-checks the root entry with
//   skipLibCheck false under node16, bundler and node10 resolution, and runs
//   it through require() and import;
// - a project with axios type-checks and runs @tokengate/client/axios;
// - @tokengate/client/dpop type-checks the same way, and dpop: true signs
//   requests under require() and import (the proof's signature verified);
// - each entry point's size, minified and gzipped (code split: the DPoP
//   chunk the client loads lazily counts apart), matches the table in
//   docs/client.md, and createFetch alone stays under its budget;
// - npm install <directory> and npm install git+file://…#<sha>::path:… run
//   the prepare script, which builds dist.
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join, posix, resolve } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';

const pkgDir = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const repoRoot = resolve(pkgDir, '../..');
const require = createRequire(import.meta.url);
const tsc = require.resolve('typescript/bin/tsc');
const esbuild = require('esbuild');
const pkg = JSON.parse(readFileSync(join(pkgDir, 'package.json'), 'utf8'));
const axiosVersion = JSON.parse(readFileSync(join(pkgDir, 'node_modules/axios/package.json'), 'utf8')).version;

/**
 * createFetch alone, minified and gzipped, must stay within 5 KB: a fetch-only
 * app pays this much for the whole client (single flight, cross-tab, proactive
 * refresh, denial reasons).
 */
const createFetchLimit = 5 * 1024;

/** label is how docs/client.md's size table names an entry: `createFetch`, or the DPoP chunk `dpop: true` loads. */
const label = (name) => (name.startsWith('createFetch, ') ? '`dpop: true` chunk (loaded on first use)' : `\`${name}\``);

// Child npm processes must not inherit the npm_* variables of the
// `npm run` that started this file (its config, its package).
const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.toLowerCase().startsWith('npm_')));

/** run runs a command and returns its stdout; a failure throws with both outputs. */
function run(cmd, args, cwd) {
  const r = spawnSync(cmd, args, { cwd, env, encoding: 'utf8', maxBuffer: 64 << 20 });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} (in ${cwd}) failed (${r.status ?? r.signal}):\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

/** typecheck runs tsc --noEmit in dir with the given compiler options and files; it returns tsc's exit status and output. */
function typecheck(dir, name, compilerOptions, files) {
  const config = join(dir, `tsconfig.${name}.json`);
  const options = { strict: true, skipLibCheck: false, noEmit: true, target: 'ES2020', lib: ['ES2020', 'DOM', 'DOM.Iterable'], types: [], ...compilerOptions };
  writeFileSync(config, JSON.stringify({ compilerOptions: options, files }, null, 2));
  const r = spawnSync(process.execPath, [tsc, '-p', config], { cwd: dir, env, encoding: 'utf8' });
  return { status: r.status, output: `${r.stdout}${r.stderr}` };
}

function mustTypecheck(dir, name, compilerOptions, files) {
  const r = typecheck(dir, name, compilerOptions, files);
  assert.equal(r.status, 0, `tsc (${name}: ${JSON.stringify(compilerOptions)}) failed:\n${r.output}`);
}

/** project makes an empty npm project in a temp dir (outside the repository, so nothing resolves from its node_modules). */
function project(name, type) {
  const dir = mkdtempSync(join(tmpdir(), `tokengate-client-${name}-`));
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: `tokengate-client-${name}`, private: true, type }, null, 2));
  return dir;
}

// An unsigned JWT is all the client needs: it reads exp for display and timing, never verifies.
const smokeBody = `
const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
const jwt = (n) => [b64({ alg: 'none' }), b64({ sub: 'u-1', exp: Math.floor(Date.now() / 1000) + 300, n }), 'sig'].join('.');
const pair = (n) => ({ access_token: jwt(n), token_type: 'Bearer', expires_in: 300, refresh_token: 'r' + n, refresh_expires_in: 3600, session_id: 's' });
const seen = [];
let refreshes = 0;
const fake = async (input, init) => {
  const url = typeof input === 'string' ? input : input instanceof URL ? input.href : input.url;
  if (url.endsWith('/v1/token')) {
    refreshes++;
    return new Response(JSON.stringify(pair(2)), { status: 200, headers: { 'content-type': 'application/json' } });
  }
  const auth = new Headers(init?.headers ?? input.headers).get('authorization');
  seen.push(auth);
  if (seen.length === 1) return new Response(JSON.stringify({ error: 'token_expired' }), { status: 401, headers: { 'content-type': 'application/json', 'www-authenticate': 'Bearer error="invalid_token", reason="token_expired"' } });
  return new Response('{"ok":true}', { status: 200, headers: { 'content-type': 'application/json' } });
};
const opts = { fetch: fake, locks: null, channel: null, visibility: null, autoRefresh: false, authorize: () => true };
const f = tg.createFetch(opts);
await f.client.setTokens(pair(1));
const res = await f('http://app.test/api');
f.client.close();
const claims = seen.map((a) => JSON.parse(Buffer.from(a.split(' ')[1].split('.')[1], 'base64url').toString()).n);
console.log(JSON.stringify({ status: res.status, refreshes, claims, isError: tg.isTokenGateError(new tg.TokenGateError('signed_out', 'x')) }));
`;
const smokeWant = { status: 200, refreshes: 1, claims: [1, 2], isError: true };

describe('@tokengate/client as a package', () => {
  let work;
  let tarball;
  let files;
  let unpacked;
  let fetchOnly;

  before(() => {
    work = mkdtempSync(join(tmpdir(), 'tokengate-client-pack-'));
    run('npm', ['run', 'build'], pkgDir);
    const out = JSON.parse(run('npm', ['pack', '--json', '--ignore-scripts', '--pack-destination', work], pkgDir));
    tarball = join(work, out[0].filename);
    files = out[0].files.map((f) => f.path).sort();
    unpacked = join(work, 'unpacked');
    mkdirSync(unpacked);
    run('tar', ['-xzf', tarball, '-C', unpacked, '--strip-components=1'], work);

    fetchOnly = project('fetch-only', 'module');
    run('npm', ['install', tarball, '--offline', '--no-audit', '--no-fund'], fetchOnly);
  });
  after(() => {
    for (const d of [work, fetchOnly]) if (d) rmSync(d, { recursive: true, force: true });
  });

  test('the tarball holds dist (ESM and CommonJS), types, source maps with their sources, README and LICENSE', () => {
    const want = ['LICENSE', 'README.md', 'package.json', 'axios/package.json', 'dpop/package.json', 'dist/cjs/package.json'];
    for (const format of ['esm', 'cjs']) {
      for (const entry of ['index', 'axios', 'dpop']) {
        for (const ext of ['.js', '.js.map', '.d.ts', '.d.ts.map']) want.push(`dist/${format}/${entry}${ext}`);
      }
    }
    for (const f of readdirSync(join(pkgDir, 'src'))) want.push(`src/${f}`);
    for (const f of want) assert.ok(files.includes(f), `${f} is not in the tarball: ${files.join(', ')}`);
    const allowed = /^(dist\/(esm|cjs)\/[a-z]+\.(js|js\.map|d\.ts|d\.ts\.map)|dist\/cjs\/package\.json|src\/[a-z]+\.ts|LICENSE|README\.md|package\.json|(axios|dpop)\/package\.json)$/;
    for (const f of files) assert.match(f, allowed, `${f} should not be in the tarball`);

    // Every source map names sources that ship (or carries them inline); every .js and .d.ts points at its map.
    let maps = 0;
    for (const f of files.filter((f) => f.endsWith('.map'))) {
      const map = JSON.parse(readFileSync(join(unpacked, f), 'utf8'));
      map.sources.forEach((s, i) => {
        if (map.sourcesContent?.[i] != null) return;
        const p = posix.normalize(posix.join(posix.dirname(f), map.sourceRoot ?? '', s));
        assert.ok(files.includes(p), `${f} names ${s} (${p}), which is not in the tarball`);
      });
      const generated = f.slice(0, -'.map'.length);
      assert.ok(readFileSync(join(unpacked, generated), 'utf8').includes(`sourceMappingURL=${posix.basename(f)}`), `${generated} does not point at ${f}`);
      maps++;
    }
    assert.ok(maps >= 8, `only ${maps} source maps`);

    assert.equal(readFileSync(join(unpacked, 'LICENSE'), 'utf8'), readFileSync(join(repoRoot, 'LICENSE'), 'utf8'), 'the package LICENSE differs from the repository LICENSE');
    assert.equal(readFileSync(join(pkgDir, 'LICENSE'), 'utf8'), readFileSync(join(repoRoot, 'LICENSE'), 'utf8'), 'examples/client/LICENSE differs from the repository LICENSE');
    assert.match(readFileSync(join(unpacked, 'LICENSE'), 'utf8'), /Apache License\s+Version 2\.0, January 2004/);
    assert.equal(pkg.license, 'Apache-2.0');
    assert.equal(JSON.parse(readFileSync(join(unpacked, 'dist/cjs/package.json'), 'utf8')).type, 'commonjs');
  });

  test('every path package.json names (exports, main, module, types, the axios/ stub) is in the tarball', () => {
    const targets = [];
    const walk = (v) => (typeof v === 'string' ? targets.push(v) : Object.values(v).forEach(walk));
    walk(pkg.exports);
    targets.push(pkg.main, pkg.module, pkg.types);
    for (const sub of ['axios', 'dpop']) {
      const stub = JSON.parse(readFileSync(join(unpacked, `${sub}/package.json`), 'utf8'));
      for (const k of ['main', 'module', 'types']) targets.push(posix.join(sub, stub[k]));
    }
    for (const t of targets) assert.ok(files.includes(posix.normalize(t)), `${t} is not in the tarball`);
    for (const entry of ['.', './axios', './dpop']) {
      for (const cond of ['import', 'require']) assert.ok(pkg.exports[entry][cond].types, `exports["${entry}"].${cond} has no types`);
    }
    assert.equal(pkg.peerDependenciesMeta?.axios?.optional, true, 'axios must be an optional peer dependency');
    assert.equal(pkg.dependencies, undefined, 'the package has no runtime dependencies');
  });

  test('a project without axios installs it and type-checks the root entry with skipLibCheck false', () => {
    assert.ok(!existsSync(join(fetchOnly, 'node_modules/axios')), 'axios was installed into a fetch-only project');
    const use = (from) => `
${from}
const f = createFetch({ refreshAhead: 30, onSignOut: (reason: SignOutReason) => void reason });
const c: TokenClient = f.client;
export const check = async (): Promise<number> => (await f('/api/orders')).status + (c.session?.expiresAt.getTime() ?? 0);
export const isDenied = (e: unknown): boolean => isTokenGateError(e) && e instanceof TokenGateError;
`;
    const names = 'createFetch, isTokenGateError, TokenGateError, TokenClient, type SignOutReason';
    writeFileSync(join(fetchOnly, 'esm.mts'), use(`import { ${names} } from '@tokengate/client';`));
    writeFileSync(join(fetchOnly, 'cjs.cts'), use(`import tg = require('@tokengate/client');\nconst { createFetch, isTokenGateError, TokenGateError } = tg;\ntype TokenClient = tg.TokenClient;\ntype SignOutReason = tg.SignOutReason;`));
    writeFileSync(join(fetchOnly, 'app.ts'), use(`import { ${names} } from '@tokengate/client';`));
    mustTypecheck(fetchOnly, 'node16', { module: 'Node16', moduleResolution: 'Node16' }, ['esm.mts', 'cjs.cts']);
    mustTypecheck(fetchOnly, 'bundler', { module: 'ESNext', moduleResolution: 'Bundler' }, ['app.ts']);
    mustTypecheck(fetchOnly, 'node10', { module: 'CommonJS', moduleResolution: 'Node10' }, ['app.ts']);

    // The axios subpath does need axios: proves the check above is not vacuous.
    writeFileSync(join(fetchOnly, 'needs-axios.ts'), `import { attachTokenRefresh } from '@tokengate/client/axios';\nexport const a = attachTokenRefresh;\n`);
    const r = typecheck(fetchOnly, 'needs-axios', { module: 'ESNext', moduleResolution: 'Bundler' }, ['needs-axios.ts']);
    assert.notEqual(r.status, 0, 'the axios entry type-checked without axios installed');
    assert.match(r.output, /Cannot find module 'axios'/);
  });

  test('require() gets the CommonJS build and import the ES module build; both run a refresh', () => {
    writeFileSync(join(fetchOnly, 'smoke.cjs'), `const tg = require('@tokengate/client');\nif (!require.resolve('@tokengate/client').endsWith('/dist/cjs/index.js')) throw new Error(require.resolve('@tokengate/client'));\n(async () => {${smokeBody}})().catch((e) => { console.error(e); process.exit(1); });\n`);
    writeFileSync(join(fetchOnly, 'smoke.mjs'), `import * as tg from '@tokengate/client';\nif (!import.meta.resolve('@tokengate/client').endsWith('/dist/esm/index.js')) throw new Error(import.meta.resolve('@tokengate/client'));\n${smokeBody}`);
    for (const file of ['smoke.cjs', 'smoke.mjs']) {
      assert.deepEqual(JSON.parse(run(process.execPath, [file], fetchOnly)), smokeWant, file);
    }
    const names = run(process.execPath, ['-e', "console.log(Object.keys(require('@tokengate/client')).sort().join(','))"], fetchOnly).trim();
    const esmNames = run(process.execPath, ['--input-type=module', '-e', "import * as tg from '@tokengate/client'; console.log(Object.keys(tg).sort().join(','))"], fetchOnly).trim();
    assert.equal(names, esmNames, 'the CommonJS and ES module builds export different names');
    assert.ok(names.split(',').includes('createFetch'));
    assert.ok(!names.split(',').includes('attachTokenRefresh'), 'the root entry still exports the axios adapter');
  });

  test('@tokengate/client/dpop type-checks with skipLibCheck false, and dpop: true signs requests under require() and import', () => {
    const use = (from) => `
${from}
const f = createFetch({ dpop: true });
export const login = async (): Promise<Response> => fetch('/login', { method: 'POST', headers: { ...(await dpopHeaders('POST', '/login')) } });
export const proof = (): Promise<string> => dpopProof('GET', 'https://api.example/x', { accessToken: 't', nonce: 'n', name: 'tokengate' });
export const jkt = (): Promise<string> => dpopThumbprint();
export const out = (): Promise<void> => deleteDpopKey();
export const stored = async (): Promise<boolean> => (await storedDpopKey()) !== undefined;
export const status = async (): Promise<number> => (await f('/api')).status;
`;
    const names = 'dpopHeaders, dpopProof, dpopThumbprint, deleteDpopKey, storedDpopKey';
    writeFileSync(join(fetchOnly, 'dpop-esm.mts'), use(`import { createFetch } from '@tokengate/client';\nimport { ${names} } from '@tokengate/client/dpop';`));
    writeFileSync(join(fetchOnly, 'dpop-cjs.cts'), use(`import tg = require('@tokengate/client');\nimport dp = require('@tokengate/client/dpop');\nconst { createFetch } = tg;\nconst { ${names} } = dp;`));
    writeFileSync(join(fetchOnly, 'dpop-app.ts'), use(`import { createFetch } from '@tokengate/client';\nimport { ${names} } from '@tokengate/client/dpop';`));
    mustTypecheck(fetchOnly, 'dpop-node16', { module: 'Node16', moduleResolution: 'Node16' }, ['dpop-esm.mts', 'dpop-cjs.cts']);
    mustTypecheck(fetchOnly, 'dpop-bundler', { module: 'ESNext', moduleResolution: 'Bundler' }, ['dpop-app.ts']);
    mustTypecheck(fetchOnly, 'dpop-node10', { module: 'CommonJS', moduleResolution: 'Node10' }, ['dpop-app.ts']);

    // Node has WebCrypto and no IndexedDB: the key lives in memory, which is all this needs.
    const body = `
const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
const token = [b64({ alg: 'none' }), b64({ sub: 'u-1', exp: Math.floor(Date.now() / 1000) + 300, cnf: { jkt: 'k' } }), 'sig'].join('.');
const seen = [];
const fake = async (input, init) => {
  const h = new Headers(init?.headers ?? input.headers);
  seen.push({ auth: h.get('authorization'), dpop: h.get('dpop') });
  return new Response('{}', { status: 200, headers: { 'content-type': 'application/json' } });
};
const f = tg.createFetch({ fetch: fake, dpop: true, locks: null, channel: null, visibility: null, autoRefresh: false, authorize: () => true });
await f.client.setTokens({ access_token: token, token_type: 'DPoP', expires_in: 300 });
await f('http://app.test/api/items?q=1');
const login = (await dp.dpopHeaders('POST', 'http://app.test/login')).DPoP;
f.client.close();
const [h, c, sig] = seen[0].dpop.split('.');
const header = JSON.parse(Buffer.from(h, 'base64url'));
const claims = JSON.parse(Buffer.from(c, 'base64url'));
const key = await crypto.subtle.importKey('jwk', header.jwk, { name: 'ECDSA', namedCurve: 'P-256' }, false, ['verify']);
const verified = await crypto.subtle.verify({ name: 'ECDSA', hash: 'SHA-256' }, key, Buffer.from(sig, 'base64url'), Buffer.from(h + '.' + c));
const loginJwk = JSON.parse(Buffer.from(login.split('.')[0], 'base64url')).jwk;
console.log(JSON.stringify({ scheme: seen[0].auth.split(' ')[0], typ: header.typ, htu: claims.htu, verified, sameKey: JSON.stringify(loginJwk) === JSON.stringify(header.jwk) }));
`;
    const want = { scheme: 'DPoP', typ: 'dpop+jwt', htu: 'http://app.test/api/items', verified: true, sameKey: true };
    writeFileSync(join(fetchOnly, 'dpop-smoke.cjs'), `const tg = require('@tokengate/client');\nconst dp = require('@tokengate/client/dpop');\nif (!require.resolve('@tokengate/client/dpop').endsWith('/dist/cjs/dpop.js')) throw new Error('not the CommonJS build');\n(async () => {${body}})().catch((e) => { console.error(e); process.exit(1); });\n`);
    writeFileSync(join(fetchOnly, 'dpop-smoke.mjs'), `import * as tg from '@tokengate/client';\nimport * as dp from '@tokengate/client/dpop';\nif (!import.meta.resolve('@tokengate/client/dpop').endsWith('/dist/esm/dpop.js')) throw new Error('not the ES module build');\n${body}`);
    for (const file of ['dpop-smoke.cjs', 'dpop-smoke.mjs']) assert.deepEqual(JSON.parse(run(process.execPath, [file], fetchOnly)), want, file);
  });

  test('a project with axios type-checks and runs @tokengate/client/axios (ESM and CommonJS)', () => {
    const dir = project('axios', 'module');
    try {
      run('npm', ['install', tarball, `axios@${axiosVersion}`, '--prefer-offline', '--no-audit', '--no-fund'], dir);
      const use = (from) => `
${from}
const api = axios.create({ baseURL: '/api' });
const { client, detach } = attachTokenRefresh(api, { onSignOut: (reason) => void reason });
export const load = async (): Promise<unknown> => (await api.get('/orders', { tokengateAuth: false })).data;
export const shared = (c: TokenClient): void => { attachTokenRefresh(axios.create(), { client: c }); detach(); void client; };
`;
      writeFileSync(join(dir, 'esm.mts'), use(`import axios from 'axios';\nimport { attachTokenRefresh } from '@tokengate/client/axios';\nimport type { TokenClient } from '@tokengate/client';`));
      writeFileSync(join(dir, 'cjs.cts'), use(`import axios = require('axios');\nimport tga = require('@tokengate/client/axios');\nimport tg = require('@tokengate/client');\nconst { attachTokenRefresh } = tga;\ntype TokenClient = tg.TokenClient;`));
      writeFileSync(join(dir, 'app.ts'), use(`import axios from 'axios';\nimport { attachTokenRefresh } from '@tokengate/client/axios';\nimport type { TokenClient } from '@tokengate/client';`));
      mustTypecheck(dir, 'node16', { module: 'Node16', moduleResolution: 'Node16' }, ['esm.mts', 'cjs.cts']);
      mustTypecheck(dir, 'bundler', { module: 'ESNext', moduleResolution: 'Bundler' }, ['app.ts']);
      mustTypecheck(dir, 'node10', { module: 'CommonJS', moduleResolution: 'Node10', esModuleInterop: true }, ['app.ts']);

      const body = `
const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
const jwt = [b64({ alg: 'none' }), b64({ sub: 'u-1', exp: Math.floor(Date.now() / 1000) + 300 }), 'sig'].join('.');
const seen = [];
const api = axios.create({ adapter: async (config) => { seen.push(String(config.headers.Authorization)); return { data: {}, status: 200, statusText: 'OK', headers: {}, config, request: {} }; } });
const { client } = attachTokenRefresh(api, { locks: null, channel: null, visibility: null, autoRefresh: false, authorize: () => true });
await client.setTokens({ access_token: jwt, token_type: 'Bearer', expires_in: 300 });
await api.get('http://app.test/api');
client.close();
console.log(JSON.stringify({ bearer: seen[0] === 'Bearer ' + jwt }));
`;
      writeFileSync(join(dir, 'smoke.cjs'), `const axios = require('axios');\nconst { attachTokenRefresh } = require('@tokengate/client/axios');\nif (!require.resolve('@tokengate/client/axios').endsWith('/dist/cjs/axios.js')) throw new Error('not the CommonJS build');\n(async () => {${body}})().catch((e) => { console.error(e); process.exit(1); });\n`);
      writeFileSync(join(dir, 'smoke.mjs'), `import axios from 'axios';\nimport { attachTokenRefresh } from '@tokengate/client/axios';\nif (!import.meta.resolve('@tokengate/client/axios').endsWith('/dist/esm/axios.js')) throw new Error('not the ES module build');\n${body}`);
      for (const file of ['smoke.cjs', 'smoke.mjs']) assert.deepEqual(JSON.parse(run(process.execPath, [file], dir)), { bearer: true }, file);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('bundle size of each entry point (minified + gzip) matches docs/client.md; createFetch alone stays under its budget', async () => {
    const entries = [
      ['createFetch', "export { createFetch } from '@tokengate/client';"],
      ['TokenClient', "export { TokenClient } from '@tokengate/client';"],
      ['@tokengate/client', "export * from '@tokengate/client';"],
      ['@tokengate/client/axios', "export * from '@tokengate/client/axios';"],
      ['@tokengate/client/dpop', "export * from '@tokengate/client/dpop';"],
    ];
    const measured = {};
    for (const [name, contents] of entries) {
      // Code splitting, as an app's bundler does: what the client loads only
      // with the dpop option (a dynamic import) is a chunk of its own, not
      // part of what every page downloads.
      const out = await esbuild.build({
        stdin: { contents, resolveDir: fetchOnly, loader: 'js' },
        absWorkingDir: fetchOnly,
        bundle: true,
        minify: true,
        format: 'esm',
        splitting: true,
        outdir: join(fetchOnly, 'out'),
        metafile: true,
        platform: 'browser',
        target: 'es2020',
        external: ['axios'],
        write: false,
        logLevel: 'silent',
      });
      const outputs = out.metafile.outputs;
      const code = (file) => out.outputFiles.find((f) => f.path === join(fetchOnly, file)).contents;
      const size = (files) => ({ min: files.reduce((n, f) => n + code(f).length, 0), gzip: files.reduce((n, f) => n + gzipSync(code(f), { level: 9 }).length, 0) });
      // The entry and the chunks it imports statically: what the page loads.
      const entry = Object.keys(outputs).find((f) => outputs[f].entryPoint === '<stdin>');
      const loaded = [entry];
      for (let i = 0; i < loaded.length; i++) {
        for (const imp of outputs[loaded[i]].imports) if (imp.kind === 'import-statement' && !imp.external && !loaded.includes(imp.path)) loaded.push(imp.path);
      }
      measured[name] = size(loaded);
      // What the dpop option loads on first use.
      const lazy = Object.keys(outputs).filter((f) => f.endsWith('.js') && !loaded.includes(f));
      if (name === 'createFetch') {
        assert.equal(lazy.length, 1, `createFetch should have one lazily loaded chunk (the DPoP code): ${Object.keys(outputs).join(', ')}`);
        measured['createFetch, dpop: true (loaded on first use)'] = size(lazy);
      }
    }
    const table = Object.entries(measured).map(([name, s]) => `| ${label(name)} | ${s.min} | ${s.gzip} |`).join('\n');
    console.log(`bundle sizes (bytes, esbuild --minify, gzip -9):\n${table}`);
    assert.ok(measured.createFetch.gzip <= createFetchLimit, `createFetch alone is ${measured.createFetch.gzip} bytes gzipped, over ${createFetchLimit}`);

    // docs/client.md's table says the same, within 10 %.
    const docs = readFileSync(join(repoRoot, 'docs/client.md'), 'utf8');
    const header = '| import | minified | minified + gzip |';
    assert.ok(docs.includes(header), `docs/client.md has no size table (${header})`);
    const rows = docs.slice(docs.indexOf(header)).split('\n\n')[0].split('\n');
    for (const [name, s] of Object.entries(measured)) {
      const row = rows.find((l) => l.startsWith(`| ${label(name)} |`));
      assert.ok(row, `docs/client.md has no size row for ${name}; the measured table:\n${table}`);
      const [min, gzip] = row.split('|').slice(-3, -1).map((c) => Number(c.replace(/\D/g, '')));
      for (const [what, doc, got] of [['minified', min, s.min], ['gzip', gzip, s.gzip]]) {
        assert.ok(Math.abs(doc - got) <= got * 0.1, `docs/client.md says ${name} is ${doc} bytes ${what}, measured ${got}; update the table:\n${table}`);
      }
    }
  });

  test('npm install <directory> links it and runs prepare, which builds dist', () => {
    const dir = project('path', 'commonjs');
    try {
      const before = statSync(join(pkgDir, 'dist/esm/index.js')).mtimeMs;
      run('npm', ['install', pkgDir, '--offline', '--no-audit', '--no-fund'], dir);
      assert.ok(statSync(join(pkgDir, 'dist/esm/index.js')).mtimeMs > before, 'prepare did not rebuild dist');
      const out = run(process.execPath, ['-e', "console.log(typeof require('@tokengate/client').createFetch)"], dir).trim();
      assert.equal(out, 'function');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('npm install git+file://…#<sha>::path:examples/client clones, runs prepare and installs the build', () => {
    // A repository holding exactly the package's current files (committed or
    // not, minus ignored ones), so the test covers the working tree.
    const repo = mkdtempSync(join(tmpdir(), 'tokengate-client-repo-'));
    const dir = project('git', 'commonjs');
    try {
      const list = execFileSync('git', ['ls-files', '-z', '-co', '--exclude-standard', '--', 'examples/client', 'LICENSE'], { cwd: repoRoot, env });
      execFileSync('tar', ['-cf', join(repo, '.src.tar'), '--null', '-T', '-'], { cwd: repoRoot, input: list });
      run('tar', ['-xf', '.src.tar'], repo);
      rmSync(join(repo, '.src.tar'));
      assert.ok(!existsSync(join(repo, 'examples/client/dist')), 'dist must come from prepare, not from the copy');
      const git = (...args) => run('git', ['-c', 'user.name=test', '-c', 'user.email=test@example.invalid', '-c', 'commit.gpgsign=false', ...args], repo);
      git('init', '-q');
      git('add', '-A');
      git('commit', '-q', '-m', 'package');
      const sha = git('rev-parse', 'HEAD').trim();
      run('npm', ['install', `git+file://${repo}#${sha}::path:examples/client`, '--prefer-offline', '--no-audit', '--no-fund'], dir);
      const installed = join(dir, 'node_modules/@tokengate/client');
      for (const f of ['dist/esm/index.js', 'dist/cjs/index.js', 'dist/cjs/package.json', 'dist/esm/axios.d.ts', 'LICENSE']) {
        assert.ok(existsSync(join(installed, f)), `${f} missing from the git install`);
      }
      const out = run(process.execPath, ['-e', "console.log(typeof require('@tokengate/client').createFetch)"], dir).trim();
      assert.equal(out, 'function');
    } finally {
      rmSync(repo, { recursive: true, force: true });
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
