/**
 * Error codes of the OAuth authorization server. Each token-endpoint code
 * carries the RFC 6749 §5.2 / RFC 8693 §2.2.2 / RFC 9449 §7 `error` value it
 * is answered with ({@link oauthErrorOf}).
 */
import { defineErrorCatalog } from '../../kernel/index.ts';
import type { WritError } from '../../kernel/index.ts';

/** The OAuth context's codes. */
export const oauthErrors = defineErrorCatalog('OAUTH', {
  ERR_OAUTH_INVALID_REQUEST: { status: 400, description: 'OAuth `invalid_request`: a parameter is missing, repeated, malformed or not allowed with this grant' },
  ERR_OAUTH_INVALID_CLIENT: { status: 401, description: 'OAuth `invalid_client`: client authentication failed (unknown client, bad or replayed assertion)' },
  ERR_OAUTH_INVALID_GRANT: { status: 400, description: 'OAuth `invalid_grant`: the subject token, actor token or assertion is invalid, expired, not allowed to act, or the policy refused the grant' },
  ERR_OAUTH_INVALID_TARGET: { status: 400, description: 'OAuth `invalid_target` (RFC 8693, RFC 8707): the audience or resource is missing or not allowed by policy' },
  ERR_OAUTH_INVALID_SCOPE: { status: 400, description: 'OAuth `invalid_scope`: the scope is malformed, wider than the previous hop or the client allows, or refused by policy' },
  ERR_OAUTH_UNAUTHORIZED_CLIENT: { status: 400, description: 'OAuth `unauthorized_client`: the client is not registered for this grant type' },
  ERR_OAUTH_UNSUPPORTED_GRANT_TYPE: { status: 400, description: 'OAuth `unsupported_grant_type`: the grant type is not supported' },
  ERR_OAUTH_UNSUPPORTED_TOKEN_TYPE: { status: 400, description: 'OAuth `unsupported_token_type`: the token type (subject, actor, requested or hint) is not supported' },
  ERR_OAUTH_INVALID_DPOP_PROOF: { status: 400, description: 'OAuth `invalid_dpop_proof` (RFC 9449): the DPoP proof is malformed, badly signed, replayed, stale or for another request' },
  ERR_OAUTH_USE_DPOP_NONCE: { status: 400, description: 'OAuth `use_dpop_nonce` (RFC 9449 §8): the DPoP proof must carry the nonce sent in the `DPoP-Nonce` header' },
  ERR_OAUTH_INVALID_TOKEN: { status: 401, description: 'OAuth `invalid_token` at a resource server (RFC 6750 §3.1, RFC 8705 §3): the access token is bound to a TLS client certificate (`cnf.x5t#S256`) the request did not present' },
  ERR_OAUTH_TEMPORARILY_UNAVAILABLE: { status: 503, description: 'OAuth `temporarily_unavailable`: a lease or audit write failed; retry later' },
  ERR_OAUTH_CLIENT_INVALID: { status: 400, description: 'an OAuth client registration is malformed (keys, jwks_uri, SPIFFE ID, scopes)' },
  ERR_OAUTH_CLIENT_EXISTS: { status: 409, description: 'an OAuth client with this id is already registered' },
  ERR_OAUTH_CLIENT_NOT_FOUND: { status: 404, description: 'no OAuth client with this id is registered' },
});

/** Codes of {@link oauthErrors}. */
export type OAuthErrorCode = keyof typeof oauthErrors.specs;

const OAUTH_ERROR: Readonly<Record<string, string>> = {
  ERR_OAUTH_INVALID_REQUEST: 'invalid_request',
  ERR_OAUTH_INVALID_CLIENT: 'invalid_client',
  ERR_OAUTH_INVALID_GRANT: 'invalid_grant',
  ERR_OAUTH_INVALID_TARGET: 'invalid_target',
  ERR_OAUTH_INVALID_SCOPE: 'invalid_scope',
  ERR_OAUTH_UNAUTHORIZED_CLIENT: 'unauthorized_client',
  ERR_OAUTH_UNSUPPORTED_GRANT_TYPE: 'unsupported_grant_type',
  ERR_OAUTH_UNSUPPORTED_TOKEN_TYPE: 'unsupported_token_type',
  ERR_OAUTH_INVALID_DPOP_PROOF: 'invalid_dpop_proof',
  ERR_OAUTH_USE_DPOP_NONCE: 'use_dpop_nonce',
  ERR_OAUTH_INVALID_TOKEN: 'invalid_token',
  ERR_OAUTH_TEMPORARILY_UNAVAILABLE: 'temporarily_unavailable',
};

/**
 * The OAuth `error` value and HTTP status for any error thrown while serving
 * an OAuth endpoint: an OAuth code maps to its value; a 429 (lease quota) is
 * `temporarily_unavailable` with 429; anything else is `server_error` (500).
 *
 * @example
 * const { error, status } = oauthErrorOf(oauthErrors.error('ERR_OAUTH_INVALID_SCOPE', 'scope `x` is wider'));
 * // error === 'invalid_scope', status === 400
 */
export function oauthErrorOf(e: WritError): { error: string; status: number; description: string } {
  const known = Object.hasOwn(OAUTH_ERROR, e.code) ? OAUTH_ERROR[e.code] : undefined;
  if (known !== undefined) return { error: known, status: e.status, description: e.message };
  if (e.status === 429) return { error: 'temporarily_unavailable', status: 429, description: e.expose ? e.message : 'try again later' };
  if (e.status < 500) return { error: 'invalid_request', status: 400, description: e.expose ? e.message : 'request refused' };
  return { error: 'server_error', status: 500, description: 'internal error; see the server log for this correlation id' };
}
