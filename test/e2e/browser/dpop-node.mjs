// DPoP proofs (RFC 9449) signed in Node with WebCrypto: the "other key" a
// thief would have, and the helpers the browser tests use to read proofs
// and tokens.
import { createHash, randomBytes, webcrypto } from 'node:crypto';

const b64url = (buf) => Buffer.from(buf).toString('base64url');
const json64 = (v) => b64url(JSON.stringify(v));

/** thumbprint is the RFC 7638 SHA-256 thumbprint of an EC or RSA or OKP public JWK. */
export function thumbprint(jwk) {
  const members = {
    EC: ['crv', 'kty', 'x', 'y'],
    RSA: ['e', 'kty', 'n'],
    OKP: ['crv', 'kty', 'x'],
  }[jwk.kty];
  if (!members) throw new Error(`thumbprint: kty ${jwk.kty}`);
  const canonical = `{${members.map((m) => `${JSON.stringify(m)}:${JSON.stringify(jwk[m])}`).join(',')}}`;
  return createHash('sha256').update(canonical).digest('base64url');
}

/** newKey makes an ES256 key pair, as the browser client does. */
export async function newKey() {
  const pair = await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign', 'verify']);
  const { kty, crv, x, y } = await webcrypto.subtle.exportKey('jwk', pair.publicKey);
  const jwk = { kty, crv, x, y };
  return { pair, jwk, jkt: thumbprint(jwk) };
}

/** ath is base64url(SHA-256(access token)). */
export const ath = (token) => createHash('sha256').update(token).digest('base64url');

/** proof signs a DPoP proof for method and url with key; extra claims (ath, nonce) are added. */
export async function proof(key, method, url, extra = {}) {
  const header = { typ: 'dpop+jwt', alg: 'ES256', jwk: key.jwk };
  const claims = { jti: b64url(randomBytes(16)), htm: method, htu: url, iat: Math.floor(Date.now() / 1000), ...extra };
  const input = `${json64(header)}.${json64(claims)}`;
  const sig = await webcrypto.subtle.sign({ name: 'ECDSA', hash: 'SHA-256' }, key.pair.privateKey, Buffer.from(input));
  return `${input}.${b64url(sig)}`;
}

/** decodeJWT returns a compact JWT's header and claims (no verification). */
export function decodeJWT(token) {
  const [h, c] = token.split('.');
  return { header: JSON.parse(Buffer.from(h, 'base64url')), claims: JSON.parse(Buffer.from(c, 'base64url')) };
}

/** proofJKT is the thumbprint of the key a proof carries in its jwk header. */
export const proofJKT = (p) => thumbprint(decodeJWT(p).header.jwk);

/** reasonOf reads tokengate's denial reason from a WWW-Authenticate value (error, or the reason attribute). */
export function reasonOf(www) {
  if (!www) return undefined;
  const reason = /reason="([^"]*)"/.exec(www);
  if (reason) return reason[1];
  return /error="([^"]*)"/.exec(www)?.[1];
}
