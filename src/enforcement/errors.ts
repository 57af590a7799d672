import { defineErrorCatalog } from '../kernel/index.ts';

/**
 * The enforcement context's error codes. Every deny an enforcement point
 * answers carries one of these as its reason code.
 *
 * @example
 * throw enforcementErrors.error('ERR_ENFORCE_UNAUTHENTICATED', 'no caller identity: send a JWT-SVID bearer or an X.509-SVID');
 */
export const enforcementErrors = defineErrorCatalog('ENFORCE', {
  ERR_ENFORCE_UNAUTHENTICATED: { status: 401, description: 'the request carries no caller identity (no bearer JWT-SVID, no X.509-SVID)' },
  ERR_ENFORCE_CREDENTIAL_INVALID: { status: 401, description: 'the caller credential (JWT-SVID or X.509-SVID) does not validate against the trust bundle: bad signature, expired, wrong audience, unknown key or trust domain' },
  ERR_ENFORCE_BUNDLE_UNAVAILABLE: { status: 401, description: 'the enforcement point holds no current trust bundle (never fetched, or expired past its refresh hint and the server is unreachable), so no caller can be authenticated: fail closed' },
  ERR_ENFORCE_DENIED: { status: 403, description: 'the policy decision point denied the request' },
  ERR_ENFORCE_PDP_UNAVAILABLE: { status: 403, description: 'the policy decision point could not be asked (unreachable, timeout, non-200 answer): fail closed' },
  ERR_ENFORCE_PDP_MALFORMED: { status: 403, description: 'the policy decision point answered something that is not an AuthZEN decision: fail closed' },
  ERR_ENFORCE_UPSTREAM: { status: 502, description: '`writ proxy` allowed the request but its upstream did not answer' },
  ERR_ENFORCE_WORKLOAD_API: { status: 502, description: 'the SDK\'s Workload API client could not get an SVID from the agent socket (unreachable, no entitlement, malformed answer)' },
  ERR_ENFORCE_PROXY_CONFIG: { status: 400, description: 'the `writ proxy` configuration file is invalid; the message names the field' },
  ERR_ENFORCE_ROUTE_NOT_FOUND: { status: 404, description: '`writ proxy` has no route for the request\'s method and path, so it goes nowhere' },
  ERR_ENFORCE_AUTH_MODE: { status: 401, description: 'the caller presented a credential of a kind the route does not accept (mTLS, JWT-SVID or access token)' },
  ERR_ENFORCE_DPOP_INVALID: { status: 401, description: 'a DPoP-bound access token came without a valid DPoP proof (RFC 9449 §7): missing, wrong key, method, URL, `ath`, replayed or outside its time window' },
  ERR_ENFORCE_CREDENTIAL_REVOKED: { status: 401, description: 'the caller\'s credential, lease or SPIFFE ID has been revoked' },
  ERR_ENFORCE_REVOCATION_STALE: { status: 403, description: 'the enforcement point has not heard from the revocation stream within its staleness bound, so it cannot vouch that the caller is not revoked: fail closed' },
  ERR_ENFORCE_INJECTION_FAILED: { status: 503, description: '`writ proxy` could not obtain the credential it injects for the upstream (token exchange refused or the server unreachable); the request is not forwarded' },
  ERR_ENFORCE_REQUEST_INVALID: { status: 403, description: 'the request to authorize is missing its method or path, or has a path that cannot be mapped to a resource' },
});

/** An enforcement error code. */
export type EnforcementErrorCode = keyof typeof enforcementErrors.specs;
