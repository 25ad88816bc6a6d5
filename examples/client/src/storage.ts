import { isSession, type Session } from './session.js';

/**
 * TokenStorage keeps the session of this tab. It may be synchronous or
 * asynchronous. The client re-reads it after taking the cross-tab lock, so a
 * storage shared by tabs (localStorage) lets a tab see another tab's refresh
 * at once; with the default memory storage the other tab's new session
 * arrives over BroadcastChannel instead.
 */
export interface TokenStorage {
  get(): Session | null | Promise<Session | null>;
  set(session: Session): void | Promise<void>;
  clear(): void | Promise<void>;
}

/** memoryStorage keeps the session in this tab's memory only (the default). */
export function memoryStorage(): TokenStorage {
  let current: Session | null = null;
  return {
    get: () => current,
    set: (s) => {
      current = s;
    },
    clear: () => {
      current = null;
    },
  };
}

/**
 * webStorage keeps the session in a Web Storage area (`sessionStorage` or
 * `localStorage`) under key. Opt-in: anything that runs script on the page can
 * read it, and localStorage survives the browser session.
 */
export function webStorage(area: Storage, key = 'tokengate.session'): TokenStorage {
  return {
    get: () => {
      const raw = area.getItem(key);
      if (raw === null) return null;
      try {
        const v: unknown = JSON.parse(raw);
        return isSession(v) ? v : null;
      } catch {
        return null;
      }
    },
    set: (s) => area.setItem(key, JSON.stringify(s)),
    clear: () => area.removeItem(key),
  };
}
