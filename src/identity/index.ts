/**
 * Identity context (layer 1): the CA manager with its key slots, X.509-SVID
 * and JWT-SVID issuance and validation, and SPIFFE trust bundles.
 */
export { identityErrors } from './errors.ts';
export type { IdentityErrorCode } from './errors.ts';
export { CaManager } from './ca.ts';
export type { CaManagerOptions, UpstreamCa, StepContext, DueStep, CaKeyInfo } from './ca.ts';
export { KEY_SLOT_STATES, KEY_SLOT_ACTIONS, nextSlotState } from './key-slots.ts';
export type { KeySlotState, KeySlotStep } from './key-slots.ts';
export { KeyEncryptionKey } from './envelope.ts';
export type { WrappedKey } from './envelope.ts';
export { JWT_SVID_ALGS, X509_CA_ALGS, generateSigningKeyPair, fingerprint } from './keys.ts';
export type { JwtSvidAlg, X509CaAlg, GeneratedKeyPair } from './keys.ts';
export { TrustBundle, bundleSet } from './bundle.ts';
export type { BundleLookup, JwtAuthority, SpiffeBundleDocument, SpiffeBundleKey, OidcJwk } from './bundle.ts';
export {
  signX509Svid,
  validateX509Svid,
  certificatesToPem,
  pemToCertificates,
  DEFAULT_X509_SVID_TTL_MS,
  DEFAULT_X509_SVID_MAX_TTL_MS,
} from './x509-svid.ts';
export type { X509Authority, X509Svid, X509SvidRequest, X509SvidLimits, ValidatedX509Svid } from './x509-svid.ts';
export { signJwtSvid, validateJwtSvid, DEFAULT_JWT_SVID_TTL_MS, DEFAULT_JWT_SVID_MAX_TTL_MS, MAX_JWT_SVID_BYTES } from './jwt-svid.ts';
export type { JwtSigner, JwtSvid, JwtSvidRequest, JwtSvidLimits, ValidatedJwtSvid } from './jwt-svid.ts';
export type {
  CaKeyStore,
  StoredCaKey,
  CaKeyKind,
  EntryStore,
  JoinTokenStore,
  JoinTokenRecord,
  ConsumeJoinTokenResult,
  NodeStore,
  NodeRecord,
  ReplayCache,
  IdentityStore,
} from './ports.ts';
export { entryErrors } from './entry-errors.ts';
export type { EntryErrorCode } from './entry-errors.ts';
export {
  normalizeEntrySpec,
  patchEntrySpec,
  entryAppliesToNode,
  nodeSpiffeId,
  nodeIdOf,
  serverSpiffeId,
  checkSelector,
  ENTRY_FIELDS,
  NODE_PATH_PREFIX,
  SERVER_PATH,
  RESERVED_PATH_PREFIX,
} from './entries.ts';
export type { EntrySpec, EntryOwner, EntryLimits, RegistrationEntry, NodeIdentity } from './entries.ts';
export { kekErrors, decodeKek, kekModeIsInsecure } from './kek.ts';
export type { KekErrorCode } from './kek.ts';
export { attestationErrors } from './attestation/errors.ts';
export type { AttestationErrorCode } from './attestation/errors.ts';
export { newJoinToken, parseJoinToken, hashJoinToken } from './attestation/join-token.ts';
export { OidcAttestor, parseOidcIssuers } from './attestation/oidc.ts';
export type { OidcIssuerConfig, OidcAttestation } from './attestation/oidc.ts';
export { signNodeRequest, verifyNodeRequest, bodyHash, NODE_AUTH_SCHEME, NODE_REQUEST_TYP, MAX_NODE_REQUEST_TTL_S } from './attestation/node-request.ts';
export type { NodeRequestSigner, AuthenticatedNode } from './attestation/node-request.ts';
export { IdentityIssuer } from './issuer.ts';
export type { IdentityIssuerOptions, IssuerContext, SvidIssuanceGate, AttestRequest, NodeSvidResult, WorkloadX509Result } from './issuer.ts';
export * from './agent/index.ts';
