import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { withLock } from '../src/index.js';
import { FakeLocks } from './harness.js';

describe('withLock', () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('runs without a lock manager', async () => {
    await expect(withLock(undefined, 'l', 1000, async (o) => o)).resolves.toBe('none');
  });

  it('serialises holders', async () => {
    const locks = new FakeLocks();
    const order: string[] = [];
    let releaseFirst!: () => void;
    const first = withLock(locks, 'l', 10_000, async () => {
      order.push('first start');
      await new Promise<void>((r) => (releaseFirst = r));
      order.push('first end');
    });
    const second = withLock(locks, 'l', 10_000, async (o) => {
      order.push(`second ${o}`);
    });
    await vi.advanceTimersByTimeAsync(5000);
    expect(order).toEqual(['first start']);
    releaseFirst();
    await Promise.all([first, second]);
    expect(order).toEqual(['first start', 'first end', 'second acquired']);
    expect(locks.steals).toBe(0);
  });

  it('steals from a holder that never finishes after the timeout', async () => {
    const locks = new FakeLocks();
    const release = locks.hold('l'); // a hung tab
    let ran: string | undefined;
    const p = withLock(locks, 'l', 3000, async (o) => {
      ran = o;
      return 42;
    });
    await vi.advanceTimersByTimeAsync(2999);
    expect(ran).toBeUndefined();
    await vi.advanceTimersByTimeAsync(1);
    await expect(p).resolves.toBe(42);
    expect(ran).toBe('stolen');
    expect(locks.steals).toBe(1);
    release();
  });

  it('does not steal when the holder finishes in time', async () => {
    const locks = new FakeLocks();
    const release = locks.hold('l');
    const p = withLock(locks, 'l', 3000, async (o) => o);
    await vi.advanceTimersByTimeAsync(1000);
    release();
    await expect(p).resolves.toBe('acquired');
    await vi.advanceTimersByTimeAsync(5000);
    expect(locks.steals).toBe(0);
  });

  it('passes on errors of the callback without stealing', async () => {
    const locks = new FakeLocks();
    const e = new Error('boom');
    e.name = 'AbortError'; // even one that looks like an abort
    await expect(withLock(locks, 'l', 3000, async () => Promise.reject(e))).rejects.toBe(e);
    expect(locks.steals).toBe(0);
  });
});
