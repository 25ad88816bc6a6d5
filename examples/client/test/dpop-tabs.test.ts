// The DPoP key across page loads and tabs: each fresh copy of the module
// (vi.resetModules) is a page with its own memory; IndexedDB
// (fake-indexeddb) is what they share, as tabs of one origin do. A file of
// its own, because resetting the module registry would give the client under
// test in test/dpop.test.ts another copy of the module than the test's.
import 'fake-indexeddb/auto';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { storedKeys } from './harness.js';

type DpopModule = typeof import('../src/dpop.js');

/** page loads a fresh copy of the DPoP module: a new page (a reload, another tab). */
async function page(): Promise<DpopModule> {
  vi.resetModules();
  return (await import('../src/dpop.js')) as DpopModule;
}

const jwkOf = (proof: string): unknown => JSON.parse(Buffer.from(proof.split('.')[0], 'base64url').toString()).jwk;

afterEach(() => {
  vi.restoreAllMocks();
});

describe('the DPoP key across pages', () => {
  const url = 'https://app.example/api/x';

  it('survives a reload: a new page reads the same key from IndexedDB', async () => {
    const first = await (await page()).dpopProof('GET', url, { name: 'reload' });
    const reloaded = await page();
    const gen = vi.spyOn(crypto.subtle, 'generateKey');
    const again = await reloaded.dpopProof('GET', url, { name: 'reload' });
    expect(jwkOf(again)).toEqual(jwkOf(first));
    expect(gen).not.toHaveBeenCalled();
  });

  it('two tabs starting at once end up with one key', async () => {
    const tab1 = await page();
    const tab2 = await page();
    const gen = vi.spyOn(crypto.subtle, 'generateKey');
    const [a, b] = await Promise.all([tab1.dpopProof('GET', url, { name: 'race' }), tab2.dpopProof('GET', url, { name: 'race' })]);
    // Both made a candidate (neither found one), and both sign with the one that was stored.
    expect(gen).toHaveBeenCalledTimes(2);
    expect(jwkOf(a)).toEqual(jwkOf(b));
    expect(await storedKeys()).toContain('race');
    // A third tab, later, reads it too.
    expect(jwkOf(await (await page()).dpopProof('GET', url, { name: 'race' }))).toEqual(jwkOf(a));
  });
});
