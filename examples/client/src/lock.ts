/**
 * The subset of the Web Locks API (`navigator.locks`) the client uses. Tests
 * and unusual hosts can pass their own.
 */
export interface LockManagerLike {
  request<T>(name: string, options: { signal?: AbortSignal; steal?: boolean; mode?: 'exclusive' }, callback: () => Promise<T>): Promise<T>;
}

/** What withLock reports about how it got the lock, for logs and tests. */
export type LockOutcome = 'acquired' | 'stolen' | 'none';

/**
 * withLock runs fn while holding the exclusive Web Lock `name`, so that one
 * tab refreshes while the others wait.
 *
 * A lock holder that never finishes (a hung tab, a refresh that never
 * settles) would block every other tab forever — the deadlock class seen in
 * other auth clients. So waiting is bounded: after timeoutMs the waiter
 * aborts its request and takes the lock with `steal: true`, which releases
 * the holder's lock (its callback keeps running but no longer excludes
 * anyone). A tab that crashed releases its locks on its own; steal covers the
 * tab that is alive but stuck.
 *
 * Without a lock manager fn simply runs (the caller's in-tab single flight
 * still applies).
 */
export async function withLock<T>(
  locks: LockManagerLike | undefined,
  name: string,
  timeoutMs: number,
  fn: (outcome: LockOutcome) => Promise<T>,
): Promise<T> {
  if (!locks) return fn('none');
  const ac = new AbortController();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    ac.abort();
  }, timeoutMs);
  try {
    return await locks.request(name, { signal: ac.signal, mode: 'exclusive' }, () => {
      clearTimeout(timer);
      return fn('acquired');
    });
  } catch (e) {
    clearTimeout(timer);
    if (!timedOut || !isAbort(e)) throw e;
    return locks.request(name, { steal: true, mode: 'exclusive' }, () => fn('stolen'));
  }
}

function isAbort(e: unknown): boolean {
  return typeof e === 'object' && e !== null && (e as { name?: unknown }).name === 'AbortError';
}
