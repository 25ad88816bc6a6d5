import { describe, expect, it } from 'vitest';
import { denialReason, parseWwwAuthenticate } from '../src/index.js';
import { denials } from './harness.js';

describe('denialReason', () => {
  const cases: { name: string; status: number; www?: string; body?: unknown; want: string | undefined }[] = [
    { name: 'json token_expired', status: 401, body: { error: 'token_expired' }, want: 'token_expired' },
    { name: 'json string body', status: 401, body: '{"error":"token_revoked","error_description":"x"}', want: 'token_revoked' },
    { name: 'json wins over header', status: 401, body: { error: 'invalid_token' }, www: 'Bearer error="token_expired"', want: 'invalid_token' },
    { name: 'json unknown error is not ours', status: 401, body: { error: 'something_else' }, www: 'Bearer error="token_expired"', want: undefined },
    { name: 'html body falls back to header', status: 401, body: '<html>401</html>', www: 'Bearer realm="api", error="token_expired"', want: 'token_expired' },
    { name: 'empty body falls back to header', status: 401, body: '', www: 'Bearer error="missing_token"', want: 'missing_token' },
    { name: 'binary body falls back to header', status: 401, body: new ArrayBuffer(4), www: 'Bearer error="token_revoked"', want: 'token_revoked' },
    { name: 'the description never decides: invalid_token that says expired', status: 401, www: 'Bearer error="invalid_token", error_description="The access token expired"', want: 'invalid_token' },
    { name: 'a challenge without the reason attribute is read by its error', status: 401, body: '<html>401</html>', www: 'Bearer realm="tokengate", error="invalid_token", error_description="the token has expired"', want: 'invalid_token' },
    { name: 'reason attribute wins over the description', status: 401, body: '', www: 'Bearer realm="tokengate", error="invalid_token", error_description="whatever the wording", reason="token_expired"', want: 'token_expired' },
    { name: 'reason attribute for a revoked session', status: 401, www: 'Bearer realm="tokengate", error="invalid_token", error_description="x", reason="token_revoked"', want: 'token_revoked' },
    { name: 'unknown reason attribute falls back to the error', status: 401, www: 'Bearer realm="tokengate", error="invalid_token", error_description="x", reason="bogus"', want: 'invalid_token' },
    { name: 'the description never decides: revoked', status: 401, www: 'Bearer realm="tokengate", error="invalid_token", error_description="the session has been revoked"', want: 'invalid_token' },
    { name: 'RFC 6750 invalid_token otherwise', status: 401, www: 'Bearer error="invalid_token", error_description="bad signature"', want: 'invalid_token' },
    { name: 'bare Bearer challenge means no credentials', status: 401, www: 'Bearer realm="api"', want: 'missing_token' },
    { name: 'other scheme first', status: 401, www: 'Basic realm="x", Bearer error="token_expired"', want: 'token_expired' },
    { name: 'basic only is not ours', status: 401, www: 'Basic realm="x"', want: undefined },
    { name: 'nothing at all', status: 401, want: undefined },
    { name: '403 insufficient_scope', status: 403, body: { error: 'insufficient_scope' }, want: 'insufficient_scope' },
    { name: 'a 500 is never a denial', status: 500, body: { error: 'token_expired' }, want: undefined },
    { name: 'json token_unbound', status: 401, body: { error: 'token_unbound' }, want: 'token_unbound' },
    { name: 'reason attribute token_unbound', status: 401, body: '', www: 'Bearer realm="tokengate", error="invalid_token", reason="token_unbound"', want: 'token_unbound' },
    { name: 'a DPoP challenge is read when there is no Bearer one', status: 401, body: '<html>401</html>', www: 'DPoP realm="tokengate", error="invalid_token", reason="token_expired", algs="ES256"', want: 'token_expired' },
    { name: 'a DPoP challenge for an unbound token', status: 401, www: 'DPoP error="invalid_token", reason="token_unbound"', want: 'token_unbound' },
    { name: 'the Bearer challenge wins over a DPoP one', status: 401, www: 'DPoP error="invalid_token", reason="token_revoked", Bearer error="invalid_token", reason="token_expired"', want: 'token_expired' },
    { name: 'invalid_dpop_proof is not a reason the client acts on', status: 401, body: { error: 'invalid_dpop_proof' }, www: 'DPoP error="invalid_dpop_proof"', want: undefined },
    { name: 'use_dpop_nonce is not a reason the client acts on', status: 401, www: 'DPoP error="use_dpop_nonce"', want: undefined },
  ];
  for (const c of cases) {
    it(c.name, () => {
      expect(denialReason(c.status, c.www, c.body)).toBe(c.want);
    });
  }
});

// extauthz's real answers (written from the Go response code by
// extauthz/denials_fixture_test.go): each 401/403 is read as its reason from
// the JSON body and, behind nginx auth_request (an HTML page), from the
// challenge alone; a 503 is not a denial.
describe('extauthz answers from fixtures/denials.json', () => {
  for (const [reason, d] of Object.entries(denials)) {
    // unknown_app (a proxy's app selector naming no app) is a 403 the
    // client does not act on: it reads as no reason, and the app gets it;
    // so are the DPoP answers invalid_dpop_proof and use_dpop_nonce (the
    // DPoP code retries the latter once, before reasons are read).
    const notOurs = ['unknown_app', 'invalid_dpop_proof', 'use_dpop_nonce'];
    const want = (d.status === 401 || d.status === 403) && !notOurs.includes(reason) ? reason : undefined;
    it(`${reason}: JSON body`, () => {
      expect(denialReason(d.status, d.headers['www-authenticate'], d.body)).toBe(want);
      expect(denialReason(d.status, d.headers['www-authenticate'], JSON.stringify(d.body) + '\n')).toBe(want);
    });
    it(`${reason}: HTML body, headers only`, () => {
      expect(denialReason(d.status, d.headers['www-authenticate'], '<html><body>error</body></html>')).toBe(want);
    });
  }
  it('holds every reason the client knows', () => {
    expect(Object.keys(denials)).toEqual(expect.arrayContaining(['missing_token', 'token_expired', 'invalid_token', 'token_revoked', 'insufficient_scope']));
  });
});

describe('parseWwwAuthenticate', () => {
  it('reads quoted values with commas and escapes', () => {
    expect(parseWwwAuthenticate('Bearer realm="a, b", error="token_expired", error_description="said \\"expired\\", twice"')).toEqual({
      error: 'token_expired',
      description: 'said "expired", twice',
    });
  });
  it('reads unquoted values and odd spacing', () => {
    expect(parseWwwAuthenticate('bearer error = invalid_token ,error_description="x"')).toEqual({ error: 'invalid_token', description: 'x' });
  });
  it('ignores the error of another scheme', () => {
    expect(parseWwwAuthenticate('DPoP error="use_dpop_nonce", Bearer realm="x"')).toBeUndefined();
  });
});
