/**
 * The authorization server's access-token signing key: ES256, its own `kid`,
 * never a JWT-SVID key (STANDARDS.md §8 gotcha 2), published in the AS JWKS.
 */
import { createECDH, hkdfSync } from 'node:crypto';
import { calculateJwkThumbprint, exportJWK, generateKeyPair, importJWK } from 'jose';
import type { JWK } from 'jose';
import type { webcrypto } from 'node:crypto';

type CryptoKey = webcrypto.CryptoKey;

/** A signing key of access tokens. */
export interface AccessTokenKey {
  readonly kid: string;
  readonly alg: 'ES256';
  readonly privateKey: CryptoKey;
  readonly publicKey: CryptoKey;
  /** Public JWK with `kid`, `alg`, `use:"sig"`. */
  readonly publicJwk: Readonly<JWK>;
}

/**
 * Generate an ES256 key; its `kid` is `at-` plus its RFC 7638 thumbprint.
 *
 * @example
 * const key = await generateAccessTokenKey();
 * key.publicJwk.kid.startsWith('at-'); // true
 */
export async function generateAccessTokenKey(): Promise<AccessTokenKey> {
  const { privateKey, publicKey } = await generateKeyPair('ES256', { extractable: false });
  const jwk = await exportJWK(publicKey);
  const kid = `at-${await calculateJwkThumbprint(jwk, 'sha256')}`;
  const publicJwk = Object.freeze({ kty: jwk.kty, crv: jwk.crv, x: jwk.x, y: jwk.y, kid, alg: 'ES256', use: 'sig' } as JWK);
  return Object.freeze({ kid, alg: 'ES256' as const, privateKey, publicKey, publicJwk });
}

/**
 * Derive the ES256 key from a secret every replica shares (the KEK), with
 * HKDF-SHA256 under its own label, so that replicas sign with one key and a
 * restart keeps verifying the tokens it issued. The derived key is never
 * used for anything but access tokens (key separation by the HKDF label).
 *
 * @example
 * const key = await deriveAccessTokenKey(kek);
 */
export async function deriveAccessTokenKey(secret: Uint8Array, label = 'writ/oauth/access-token-signing/v1'): Promise<AccessTokenKey> {
  if (!(secret instanceof Uint8Array) || secret.length < 32) throw new TypeError('the secret to derive the access-token key from must be at least 32 bytes');
  for (let i = 0; i < 8; i++) {
    const d = Buffer.from(hkdfSync('sha256', secret, new Uint8Array(0), `${label}/${i}`, 32));
    const ecdh = createECDH('prime256v1');
    try {
      // Throws for a scalar outside [1, n-1]; then the next counter is tried.
      ecdh.setPrivateKey(d);
    } catch {
      continue;
    }
    const pub = ecdh.getPublicKey();
    const pubJwk = { kty: 'EC', crv: 'P-256', x: pub.subarray(1, 33).toString('base64url'), y: pub.subarray(33, 65).toString('base64url') };
    const privateKey = (await importJWK({ ...pubJwk, d: d.toString('base64url') }, 'ES256', { extractable: false })) as CryptoKey;
    const publicKey = (await importJWK(pubJwk, 'ES256')) as CryptoKey;
    const kid = `at-${await calculateJwkThumbprint(pubJwk, 'sha256')}`;
    const publicJwk = Object.freeze({ ...pubJwk, kid, alg: 'ES256', use: 'sig' } as JWK);
    return Object.freeze({ kid, alg: 'ES256' as const, privateKey, publicKey, publicJwk });
  }
  throw new TypeError('could not derive a P-256 key from the secret');
}
