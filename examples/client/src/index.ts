/**
 * @tokengate/client keeps tokengate's short-lived access tokens usable in a
 * browser app: single-flight refresh in a tab and across tabs, proactive
 * refresh, and sign-out on exactly the answers that mean "sign in again".
 *
 * This entry has no dependency on axios; the axios adapter is the subpath
 * `@tokengate/client/axios` (src/axios.ts).
 */
export { createFetch, type CreateFetchOptions, type TokenFetch } from './fetch.js';
export { TokenClient } from './client.js';
export { type TokenClientOptions, type ChannelLike, type VisibilitySource } from './options.js';
export { TokenGateError, isTokenGateError, type DenialReason, type SignOutReason, type TokenGateErrorCode, type RefreshError } from './errors.js';
export { denialReason, parseWwwAuthenticate } from './reason.js';
export { clockSkew, decodeClaims, sessionFromResponse, type Session, type TokenInfo, type TokenResponse } from './session.js';
export { memoryStorage, webStorage, type TokenStorage } from './storage.js';
export { withLock, type LockManagerLike, type LockOutcome } from './lock.js';
export { retryAfter, type RefreshTransport } from './refresh.js';
