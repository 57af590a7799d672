/**
 * Error codes of node attestation (join tokens, OIDC/JWT tokens), of the
 * node API's request authentication, and of issuance to nodes. Every
 * rejection a test table names has its own code.
 */
import { defineErrorCatalog } from '../../kernel/index.ts';

export const attestationErrors = defineErrorCatalog('ATTEST', {
  ERR_ATTEST_REQUEST_INVALID: { status: 400, description: 'an attestation or node API request is malformed: unknown method, missing token, or a public key that is not an EC P-256/P-384 or RSA SPKI key' },
  // Join tokens
  ERR_ATTEST_JOIN_TOKEN_INVALID: { status: 401, description: 'the join token is not one the server issued' },
  ERR_ATTEST_JOIN_TOKEN_USED: { status: 401, description: 'the join token was already used: join tokens are single-use (a replay)' },
  ERR_ATTEST_JOIN_TOKEN_EXPIRED: { status: 401, description: 'the join token is past its expiry' },
  // OIDC / JWT attestation
  ERR_ATTEST_OIDC_MALFORMED: { status: 401, description: 'the attestation token is not a signed JWT with the claims attestation needs (`iss`, `exp`, the node id claim)' },
  ERR_ATTEST_OIDC_ISSUER_UNKNOWN: { status: 401, description: 'the attestation token\'s `iss` is not a configured issuer (`identity.oidcIssuers`)' },
  ERR_ATTEST_OIDC_AUDIENCE_MISMATCH: { status: 401, description: 'the attestation token\'s `aud` does not hold the audience configured for its issuer' },
  ERR_ATTEST_OIDC_EXPIRED: { status: 401, description: 'the attestation token is past its `exp`, or not yet valid' },
  ERR_ATTEST_OIDC_TTL_TOO_LONG: { status: 401, description: 'the attestation token lives longer than the issuer\'s `maxTokenTtlSeconds`; long-lived tokens are refused' },
  ERR_ATTEST_OIDC_KEY_UNKNOWN: { status: 401, description: 'no key of the issuer\'s JWKS matches the attestation token\'s `kid` and `alg`' },
  ERR_ATTEST_OIDC_SIGNATURE_INVALID: { status: 401, description: 'the attestation token\'s signature does not verify with the issuer\'s key' },
  ERR_ATTEST_OIDC_REPLAYED: { status: 401, description: 'the attestation token was already used to attest a node (a replay)' },
  ERR_ATTEST_OIDC_JWKS_UNAVAILABLE: { status: 503, description: 'the issuer\'s JWKS could not be fetched; attestation by that issuer is unavailable' },
  ERR_ATTEST_OIDC_CONFIG_INVALID: { status: 500, description: '`identity.oidcIssuers` is not a valid list of issuers; the message names the problem' },
  // Node API
  ERR_ATTEST_NODE_UNAUTHENTICATED: { status: 401, description: 'a node API request carries no valid node signature: missing, malformed, expired, replayed, not bound to this request, or not signed by a current node SVID of this trust domain' },
  ERR_ATTEST_NODE_EVICTED: { status: 403, description: 'the node was evicted and gets nothing more from the server' },
  ERR_ATTEST_NODE_UNKNOWN: { status: 401, description: 'the node SVID names a node the server has no record of' },
  ERR_ATTEST_NODE_NOT_FOUND: { status: 404, description: 'no node has this id' },
  ERR_ATTEST_NOT_ENTITLED: { status: 404, description: 'the node asked for an SVID of an entry that does not exist or that it may not serve (another node is its parent, or the node lacks its node selectors); both read the same' },
});

/** Every attestation error code. */
export type AttestationErrorCode = keyof typeof attestationErrors.specs;
