import { describe, expect, it } from 'vitest';
import { clockSkew, sessionFromResponse } from '../src/index.js';
import { jwt } from './harness.js';

describe('skew correction', () => {
  const local = Date.UTC(2026, 0, 1, 12, 0, 0);
  const cases: { name: string; serverOffsetMs: number; date: boolean; expiresIn?: number; exp?: boolean; want: number }[] = [
    { name: 'clocks agree', serverOffsetMs: 0, date: true, exp: true, want: local + 300_000 },
    { name: 'server one hour ahead', serverOffsetMs: 3_600_000, date: true, exp: true, want: local + 300_000 },
    { name: 'server ten minutes behind', serverOffsetMs: -600_000, date: true, exp: true, want: local + 300_000 },
    { name: 'no Date header: expires_in', serverOffsetMs: 3_600_000, date: false, exp: true, expiresIn: 300, want: local + 300_000 },
    { name: 'opaque token: expires_in', serverOffsetMs: 3_600_000, date: true, exp: false, expiresIn: 300, want: local + 300_000 },
  ];
  for (const c of cases) {
    it(c.name, () => {
      const server = local + c.serverOffsetMs;
      const token = c.exp ? jwt({ exp: server / 1000 + 300, sid: 's' }) : 'opaque';
      const s = sessionFromResponse(
        { access_token: token, expires_in: c.expiresIn, refresh_token: 'r' },
        c.date ? new Date(server).toUTCString() : null,
        local,
      );
      expect(s.expiresAt).toBe(c.want);
      expect(s.obtainedAt).toBe(local);
      expect(s.refreshToken).toBe('r');
    });
  }

  it('clockSkew is server minus local', () => {
    expect(clockSkew(new Date(local + 5000).toUTCString(), local)).toBe(5000);
    expect(clockSkew('not a date', local)).toBe(0);
    expect(clockSkew(null, local)).toBe(0);
  });

  it('keeps the previous refresh token when the response has none (cookie transport)', () => {
    const prev = sessionFromResponse({ access_token: 'a', expires_in: 10, refresh_token: 'r1', session_id: 's1' }, null, local);
    const next = sessionFromResponse({ access_token: 'b', expires_in: 10 }, null, local, prev);
    expect(next.refreshToken).toBe('r1');
    expect(next.sessionId).toBe('s1');
  });
});
