/**
 * Pieces of `WWW-Authenticate` challenges (RFC 6750 §3, RFC 9449 §7.1)
 * shared by the enforcement points.
 */

/**
 * A value fit for a challenge's quoted `error_description`: RFC 6750 §3
 * limits it to %x20-21 / %x23-5B / %x5D-7E; anything else becomes a space.
 *
 * @example
 * challengeText('proof "iat" is stale'); // 'proof  iat  is stale'
 */
export function challengeText(s: string): string {
  return s.replace(/[^\x20-\x21\x23-\x5b\x5d-\x7e]/g, ' ').slice(0, 200);
}
