import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import type { AttachOptions } from '../src/axios.js';
import type { CreateFetchOptions } from '../src/index.js';
import { defaultOptions, resolveOptions } from '../src/options.js';
import { FakeLocks } from './harness.js';

const fetchStub: typeof fetch = async () => new Response(null);
const edges = { fetch: fetchStub, locks: null, channel: null, visibility: null };

describe('resolveOptions', () => {
  it('resolves every option from the defaults table', () => {
    const o = resolveOptions(edges);
    expect(o).toMatchObject({
      refreshUrl: '/v1/token',
      revokeUrl: '/v1/revoke',
      transport: 'body',
      storageIsMemory: true,
      refreshAheadMs: 60_000,
      autoRefresh: true,
      name: 'tokengate',
      lockTimeoutMs: 10_000,
      refreshTimeoutMs: 10_000,
      refreshAttempts: 4,
      maxBackoffMs: 30_000,
      refreshHeaders: {},
      expiresInHeader: 'x-token-expires-in',
    });
    expect(o.authorize).toBe(defaultOptions.authorize);
  });

  it('takes the default for an option set to undefined or null', () => {
    const o = resolveOptions({ ...edges, refreshAhead: undefined, name: undefined, transport: undefined, expiresInHeader: null as unknown as string });
    expect([o.refreshAheadMs, o.name, o.transport, o.expiresInHeader]).toEqual([60_000, 'tokengate', 'body', 'x-token-expires-in']);
  });

  it('uses what the caller sets', () => {
    const authorize = () => false;
    const o = resolveOptions({ ...edges, refreshAhead: 5, maxBackoff: 2, expiresInHeader: 'x-left', autoRefresh: false, authorize, storage: 'sessionStorage' });
    expect([o.refreshAheadMs, o.maxBackoffMs, o.expiresInHeader, o.autoRefresh, o.authorize, o.storageIsMemory]).toEqual([5000, 2000, 'x-left', false, authorize, false]);
  });

  it('derives revokeUrl from the cookie transport and refreshUrl', () => {
    expect(resolveOptions({ ...edges, transport: 'cookie', refreshUrl: '/auth/token/' }).revokeUrl).toBe('/auth/token/revoke');
    expect(resolveOptions({ ...edges, transport: 'cookie', revokeUrl: '/out' }).revokeUrl).toBe('/out');
    expect(resolveOptions({ ...edges, transport: 'body', refreshUrl: '/auth/token' }).revokeUrl).toBe('/v1/revoke');
  });

  it('crossTab false drops the lock manager and the channel', () => {
    const locks = new FakeLocks();
    expect(resolveOptions({ ...edges, locks }).locks).toBe(locks);
    expect(resolveOptions({ ...edges, locks, crossTab: false }).locks).toBeUndefined();
  });
});

// Every option, by where its default lives: the table, or derived in resolveOptions.
const derived = ['revokeUrl', 'onTokens', 'onSignOut', 'onRefreshError', 'fetch', 'locks', 'channel', 'visibility', 'now', 'client'] as const;
type Listed = keyof typeof defaultOptions | (typeof derived)[number];
// A new option fails the typecheck until it is listed here (and so checked in the docs below).
const everyOptionListed: [Exclude<keyof AttachOptions | keyof CreateFetchOptions, Listed>] extends [never] ? true : false = true;

describe('the docs list every option with its default', () => {
  const root = new URL('../', import.meta.url);
  for (const [file, heading] of [
    ['README.md', '### Options'],
    ['../../docs/client.md', '## Options'],
  ] as const) {
    it(file, () => {
      expect(everyOptionListed).toBe(true);
      const text = readFileSync(new URL(file, root), 'utf8');
      const start = text.indexOf(`\n${heading}\n`);
      expect(start).toBeGreaterThan(-1);
      const section = text.slice(start + heading.length + 2).split(/\n##+ /)[0];
      const rows = new Map([...section.matchAll(/^\| `(\w+)` \| ([^|]+) \|/gm)].map((m) => [m[1], m[2]]));
      expect([...rows.keys()].sort()).toEqual([...Object.keys(defaultOptions), ...derived].sort());
      for (const [key, value] of Object.entries(defaultOptions)) {
        if (typeof value === 'object' || typeof value === 'function') continue;
        expect(rows.get(key), key).toContain(`\`${value}\``);
      }
    });
  }
});
