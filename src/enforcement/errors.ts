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
  ERR_ENFORCE_POLICY_UNAVAILABLE: { status: 403, description: 'in local PDP mode (`--pdp-mode local`, or `pdp.mode: "local"` in a proxy configuration) the enforcement point holds no compiled policy set yet: the bundle was never fetched from the server (unreachable, credential refused) or never compiled: fail closed' },
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
  ERR_ENFORCE_UPSTREAM_TOKEN: { status: 502, description: '`writ mcp-gateway` could not get a token for the upstream MCP server: Writ\'s token endpoint refused the exchange or could not be reached' },
  ERR_ENFORCE_BUDGET_EXCEEDED: { status: 403, description: '`writ mcp-gateway` refused a tool call past the task\'s call budget (total calls, or calls of one tool)' },
  ERR_ENFORCE_MCP_INVALID: { status: 400, description: '`writ mcp-gateway` received a body that is not one JSON-RPC message, a JSON-RPC batch, or `Mcp-*` headers that contradict the body' },
  ERR_ENFORCE_METHOD_NOT_ALLOWED: { status: 403, description: '`writ mcp-gateway` does not forward this MCP method (not on its allow-list)' },
});

/** An enforcement error code. */
export type EnforcementErrorCode = keyof typeof enforcementErrors.specs;
