/**
 * OAuth authorization server of the credentials context: token exchange,
 * client credentials, jwt-bearer, sender-constrained `at+jwt` access tokens,
 * delegation chains, introspection, revocation and metadata.
 */
export { oauthErrors, oauthErrorOf } from './errors.ts';
export type { OAuthErrorCode } from './errors.ts';
export { FormParams, parseScope } from './params.ts';
export { generateAccessTokenKey, deriveAccessTokenKey } from './keys.ts';
export type { AccessTokenKey } from './keys.ts';
export { DpopNonces, verifyDpopProof, memoryJtiCache, DPOP_ALGS } from './dpop.ts';
export type { JtiCache, DpopCheck, VerifiedDpopProof } from './dpop.ts';
export { GRANT_TYPES, memoryClientStore, normalizeClient, clientJson } from './clients.ts';
export type { OAuthClient, OAuthClientStore } from './clients.ts';
export { AuthorizationServer, TOKEN_TYPES, ASSERTION_TYPES, actChain } from './authorization-server.ts';
export type { AuthorizationServerOptions, OAuthRequest, AuthenticatedClient, ActClaim, AccessTokenClaims, DecideFn, TaskLookup, TaskView, GrantTrace } from './authorization-server.ts';
export { certificateThumbprint, checkCertificateBinding } from './mtls.ts';
export type { CertificateBoundClaims } from './mtls.ts';
export { MemoryLeaseManager } from './memory-leases.ts';
