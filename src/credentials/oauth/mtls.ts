/**
 * RFC 8705 §3: certificate-bound access tokens. The authorization server
 * puts `cnf: {"x5t#S256": <base64url SHA-256 of the client certificate DER>}`
 * in a token requested over mutual TLS; a resource server accepts the token
 * only on a connection presenting that same certificate.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { oauthErrors } from './errors.ts';

/**
 * The RFC 8705 §3.1 thumbprint of a certificate: base64url SHA-256 of its DER.
 *
 * @example
 * certificateThumbprint(der); // 'bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2'
 */
export function certificateThumbprint(der: Uint8Array): string {
  return createHash('sha256').update(der).digest('base64url');
}

/** What the check reads of a verified access token. */
export interface CertificateBoundClaims {
  readonly cnf?: { readonly 'x5t#S256'?: string; readonly jkt?: string };
}

/**
 * The resource-server check of a certificate-bound token (RFC 8705 §3):
 * when the token carries `cnf.x5t#S256`, the TLS client certificate of the
 * request must be the one it names; with `required`, a token that is not
 * certificate-bound is refused too. Any mismatch is `invalid_token` (401);
 * the comparison is constant-time. Call it after the token's signature,
 * issuer, audience and expiry were verified.
 *
 * @example
 * checkCertificateBinding(claims, tlsSocket.getPeerCertificate().raw);
 * checkCertificateBinding(claims, undefined); // throws ERR_OAUTH_INVALID_TOKEN when claims are bound
 */
export function checkCertificateBinding(claims: CertificateBoundClaims, clientCertDer: Uint8Array | undefined, options: { readonly required?: boolean } = {}): void {
  const want = claims.cnf?.['x5t#S256'];
  if (want === undefined) {
    if (options.required === true) throw oauthErrors.error('ERR_OAUTH_INVALID_TOKEN', 'access token is not bound to a TLS client certificate (`cnf.x5t#S256`), and this resource requires one');
    return;
  }
  if (typeof want !== 'string' || !/^[A-Za-z0-9_-]{43}$/.test(want)) throw oauthErrors.error('ERR_OAUTH_INVALID_TOKEN', 'access token has a malformed `cnf.x5t#S256`');
  if (clientCertDer === undefined || clientCertDer.length === 0) throw oauthErrors.error('ERR_OAUTH_INVALID_TOKEN', 'access token is bound to a TLS client certificate, and the request presented none');
  const got = Buffer.from(certificateThumbprint(clientCertDer), 'utf8');
  // Allow is the only explicit branch.
  if (timingSafeEqual(got, Buffer.from(want, 'utf8'))) return;
  throw oauthErrors.error('ERR_OAUTH_INVALID_TOKEN', 'access token is bound to another TLS client certificate (`cnf.x5t#S256` mismatch)');
}
