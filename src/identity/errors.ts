/**
 * The identity context's closed catalogue of error codes: CA keys, X.509-SVIDs,
 * JWT-SVIDs and trust bundles.
 */
import { defineErrorCatalog } from '../kernel/index.ts';

export const identityErrors = defineErrorCatalog('IDENTITY', {
  // CA and key slots
  ERR_IDENTITY_KEK_INVALID: { status: 500, description: 'the key-encryption key is not 32 bytes (AES-256)' },
  ERR_IDENTITY_KEY_UNWRAP_FAILED: { status: 500, description: 'a stored CA private key could not be decrypted: wrong key-encryption key or tampered record' },
  ERR_IDENTITY_KEY_STATE_INVALID: { status: 409, description: 'a CA key slot step was asked for out of order (prepare, prove, activate, retire)' },
  ERR_IDENTITY_KEY_NOT_PROVED: { status: 409, description: 'activation of a CA key that has not passed its trial signature was refused' },
  ERR_IDENTITY_KEY_PROOF_FAILED: { status: 500, description: 'the trial SVID signed by a prepared CA key did not verify against the trust bundle' },
  ERR_IDENTITY_CA_NOT_READY: { status: 503, description: 'the CA has no active signing key for the trust domain' },
  ERR_IDENTITY_CA_EXPIRED: { status: 503, description: 'the active signing CA has expired or expires too soon to sign anything' },
  ERR_IDENTITY_UPSTREAM_INVALID: { status: 400, description: 'the upstream CA key and chain given to the CA manager are unusable; the message names the reason' },
  ERR_IDENTITY_STORE_INCONSISTENT: { status: 500, description: 'the stored CA keys of a trust domain break an invariant (for example two active keys of one kind)' },
  // Issuance
  ERR_IDENTITY_SVID_REQUEST_INVALID: { status: 400, description: 'an SVID request is not allowed: a trust-domain or path-less SPIFFE ID, a foreign trust domain, an invalid DNS name, TTL or audience' },
  ERR_IDENTITY_SVID_FORBIDDEN: { status: 403, description: 'a `forbid` policy matches `credential/issue` of the workload by itself (a failed posture, a raised risk, an offboarded owner): no SVID is issued until it stops matching' },
  ERR_IDENTITY_SVID_POLICY_UNAVAILABLE: { status: 503, description: 'the policy decision point could not say whether a `forbid` policy matches the workload\'s SVID issuance (engine error, timeout, no policy set); no SVID is issued (fail closed)' },
  // X.509-SVID validation (X509-SVID §4, §5)
  ERR_IDENTITY_X509_SVID_MALFORMED: { status: 401, description: 'a certificate chain presented as an X.509-SVID could not be parsed' },
  ERR_IDENTITY_X509_SVID_INVALID: { status: 401, description: 'an X.509-SVID breaks a rule of the X509-SVID specification; the message names the rule' },
  ERR_IDENTITY_X509_SVID_EXPIRED: { status: 401, description: 'a certificate of an X.509-SVID chain is expired or not yet valid' },
  ERR_IDENTITY_X509_SVID_UNTRUSTED: { status: 401, description: 'an X.509-SVID does not chain to an authority of its trust domain bundle' },
  // JWT-SVID validation (JWT-SVID §3, §4, §7)
  ERR_IDENTITY_JWT_SVID_MALFORMED: { status: 401, description: 'a JWT-SVID is not a JWS compact token with the required header and claims' },
  ERR_IDENTITY_JWT_SVID_ALG_NOT_ALLOWED: { status: 401, description: 'a JWT-SVID is signed with an algorithm outside the JWT-SVID allow-list' },
  ERR_IDENTITY_JWT_SVID_EXPIRED: { status: 401, description: 'a JWT-SVID is past its `exp`' },
  ERR_IDENTITY_JWT_SVID_AUDIENCE_MISMATCH: { status: 401, description: 'a JWT-SVID `aud` does not contain the audience of the validator' },
  ERR_IDENTITY_JWT_SVID_TRUST_DOMAIN_UNKNOWN: { status: 401, description: 'there is no bundle for the trust domain of a JWT-SVID `sub`' },
  ERR_IDENTITY_JWT_SVID_KEY_UNKNOWN: { status: 401, description: 'the `kid` of a JWT-SVID is not a JWT authority of its trust domain bundle' },
  ERR_IDENTITY_JWT_SVID_SIGNATURE_INVALID: { status: 401, description: 'the signature of a JWT-SVID does not verify with the key its `kid` names' },
  // Bundles (SPIFFE Trust Domain and Bundle §4)
  ERR_IDENTITY_BUNDLE_INVALID: { status: 400, description: 'a SPIFFE bundle document breaks a rule of the bundle format; the message names the rule' },
  ERR_IDENTITY_BUNDLE_NOT_FOUND: { status: 401, description: 'there is no trust bundle for the trust domain of an SVID' },
});

/** Every identity error code. */
export type IdentityErrorCode = keyof typeof identityErrors.specs;
