/**
 * DPoP proofs at the token endpoint (RFC 9449 §4.3) and stateless nonces
 * (§8): a nonce is an HMAC of the current time window, so any replica that
 * shares the secret accepts it without storage.
 */
import { createHash, createHmac, randomBytes } from 'node:crypto';
import { calculateJwkThumbprint, compactVerify, importJWK } from 'jose';
import type { JWK } from 'jose';
import type { Clock } from '../../kernel/index.ts';
import { constantTimeEqual } from '../../kernel/index.ts';
import { oauthErrors } from './errors.ts';

/** Asymmetric algorithms accepted for proofs (RFC 9449 §4.2: no `none`, no MAC). */
export const DPOP_ALGS = ['ES256', 'ES384', 'PS256', 'RS256', 'EdDSA'] as const;
const ALGS: ReadonlySet<string> = new Set(DPOP_ALGS);
const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'k'];
const MAX_PROOF_BYTES = 8 * 1024;

/** Single-use store of proof `jti`s (the identity ReplayCache has this shape). */
export interface JtiCache {
  /** False when `key` is already recorded and not expired at `now`. */
  remember(key: string, expiresAt: string, now: string): Promise<boolean>;
}

/** What a proof is checked against. */
export interface DpopCheck {
  readonly method: string;
  /** The endpoint URL without query and fragment (§4.3 check 9). */
  readonly url: string;
  /** Seconds a proof's `iat` may lie in the past; the future allowance is a tenth of it (min 5 s). */
  readonly iatWindowSeconds: number;
  /** When set, a proof without the current nonce is `use_dpop_nonce`. */
  readonly nonces?: DpopNonces;
  /** Access-token hash `ath` the proof must carry (resource-server use). */
  readonly accessToken?: string;
}

/** A verified proof. */
export interface VerifiedDpopProof {
  /** RFC 7638 SHA-256 thumbprint of the proof key: the token's `cnf.jkt`. */
  readonly jkt: string;
  readonly jti: string;
}

function bad(message: string): Error {
  return oauthErrors.error('ERR_OAUTH_INVALID_DPOP_PROOF', `DPoP proof ${message}`);
}

function segment(s: string, what: string): Record<string, unknown> {
  let v: unknown;
  try {
    v = JSON.parse(Buffer.from(s, 'base64url').toString('utf8'));
  } catch {
    throw bad(`${what} is not JSON`);
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw bad(`${what} is not a JSON object`);
  return v as Record<string, unknown>;
}

/** Strip query and fragment (RFC 9449 §4.3 check 9, RFC 3986 §6.2 normalization by the URL parser). */
function normalizeHtu(u: string): string | undefined {
  try {
    const url = new URL(u);
    url.search = '';
    url.hash = '';
    return url.href;
  } catch {
    return undefined;
  }
}

/**
 * Stateless DPoP nonces: HMAC-SHA256(secret, window); the current and the
 * previous window are accepted.
 *
 * @example
 * const nonces = new DpopNonces(clock, 300);
 * const n = nonces.current();
 * nonces.accepts(n); // true
 */
export class DpopNonces {
  readonly #clock: Clock;
  readonly #windowMs: number;
  readonly #secret: Uint8Array;

  constructor(clock: Clock, windowSeconds: number, secret: Uint8Array = randomBytes(32)) {
    if (!Number.isInteger(windowSeconds) || windowSeconds < 1) throw new TypeError('the DPoP nonce window must be a positive integer of seconds');
    this.#clock = clock;
    this.#windowMs = windowSeconds * 1000;
    this.#secret = secret;
  }

  #at(window: number): string {
    return createHmac('sha256', this.#secret).update(String(window)).digest('base64url');
  }

  /** The nonce to send in `DPoP-Nonce` now. */
  current(): string {
    return this.#at(Math.floor(this.#clock.nowMs() / this.#windowMs));
  }

  accepts(nonce: unknown): boolean {
    if (typeof nonce !== 'string' || nonce.length > 128) return false;
    const w = Math.floor(this.#clock.nowMs() / this.#windowMs);
    return constantTimeEqual(nonce, this.#at(w)) || constantTimeEqual(nonce, this.#at(w - 1));
  }
}

/**
 * Verify a DPoP proof (RFC 9449 §4.3), as a list of checks, each refusing
 * with `invalid_dpop_proof` except a missing or stale nonce (`use_dpop_nonce`):
 *
 * 1. one compact JWS, bounded size                       (check 1–2)
 * 2. header `typ` = `dpop+jwt`                            (check 4)
 * 3. `alg` asymmetric and supported                       (check 5)
 * 4. `jwk` a public key, no private members                (check 7)
 * 5. signature with that key                              (check 6)
 * 6. `jti`, `htm`, `htu`, `iat` present                    (check 3)
 * 7. `htm` = method, `htu` = URL without query             (check 8–9)
 * 8. `nonce` when the server asks for one                  (check 10, §8)
 * 9. `iat` inside the window                              (check 11)
 * 10. `ath` = hash of the access token, at a resource      (check 12)
 * 11. `jti` not seen before within the window             (§11.1)
 *
 * @example
 * const { jkt } = await verifyDpopProof(req.headers.dpop, { method: 'POST', url: tokenEndpoint, iatWindowSeconds: 60 }, clock, jtis);
 */
export async function verifyDpopProof(proof: unknown, check: DpopCheck, clock: Clock, jtis: JtiCache): Promise<VerifiedDpopProof> {
  if (typeof proof !== 'string' || proof === '') throw bad('is missing');
  if (proof.length > MAX_PROOF_BYTES) throw bad('is too long');
  const parts = proof.split('.');
  if (parts.length !== 3 || parts.some((p) => !/^[A-Za-z0-9_-]+$/.test(p))) throw bad('is not a compact JWS');
  const [h = ''] = parts;
  const header = segment(h, 'header');
  if (header.typ !== 'dpop+jwt') throw bad('header `typ` must be `dpop+jwt`');
  if (typeof header.alg !== 'string' || !ALGS.has(header.alg)) throw bad(`algorithm \`${String(header.alg).slice(0, 32)}\` is not supported`);
  const jwk = header.jwk;
  if (jwk === null || typeof jwk !== 'object' || Array.isArray(jwk)) throw bad('header has no `jwk`');
  const jwkRec = jwk as Record<string, unknown>;
  if (PRIVATE_MEMBERS.some((m) => m in jwkRec)) throw bad('`jwk` holds private key material');
  let claims: Record<string, unknown>;
  try {
    const key = await importJWK(jwkRec as JWK, header.alg);
    if (!(key instanceof CryptoKey) || key.type !== 'public') throw new Error('not a public key');
    const verified = await compactVerify(proof, key, { algorithms: [header.alg] });
    claims = segment(Buffer.from(verified.payload).toString('base64url'), 'payload');
  } catch (cause) {
    throw oauthErrors.error('ERR_OAUTH_INVALID_DPOP_PROOF', 'DPoP proof signature does not verify with its `jwk`', { cause });
  }
  if (typeof claims.jti !== 'string' || claims.jti === '' || claims.jti.length > 256) throw bad('has no usable `jti`');
  if (typeof claims.htm !== 'string') throw bad('has no `htm`');
  if (typeof claims.htu !== 'string') throw bad('has no `htu`');
  if (typeof claims.iat !== 'number' || !Number.isFinite(claims.iat)) throw bad('has no numeric `iat`');
  if (claims.htm !== check.method) throw bad('`htm` does not match the request method');
  if (normalizeHtu(claims.htu) !== normalizeHtu(check.url)) throw bad('`htu` does not match the request URL');
  if (check.nonces !== undefined && !check.nonces.accepts(claims.nonce)) {
    throw oauthErrors.error('ERR_OAUTH_USE_DPOP_NONCE', claims.nonce === undefined ? 'DPoP proof must carry the server nonce' : 'DPoP proof nonce is stale or unknown');
  }
  const now = clock.nowMs();
  const pastMs = check.iatWindowSeconds * 1000;
  const futureMs = Math.max(5000, pastMs / 10);
  if (claims.iat * 1000 < now - pastMs || claims.iat * 1000 > now + futureMs) throw bad('`iat` is outside the accepted window');
  if (check.accessToken !== undefined) {
    const ath = createHash('sha256').update(check.accessToken).digest('base64url');
    if (typeof claims.ath !== 'string' || !constantTimeEqual(claims.ath, ath)) throw bad('`ath` does not match the access token');
  }
  const jkt = await calculateJwkThumbprint(jwkRec as JWK, 'sha256');
  // §11.1: a proof is single use within its window; the key covers the key and jti.
  const fresh = await jtis.remember(`dpop:${jkt}:${claims.jti}`, new Date(now + pastMs + futureMs).toISOString(), new Date(now).toISOString());
  if (!fresh) throw bad('`jti` was already used');
  return Object.freeze({ jkt, jti: claims.jti });
}

/**
 * An in-memory {@link JtiCache} for one process (tests, single node).
 *
 * @example
 * const jtis = memoryJtiCache();
 * await jtis.remember('a', later, now); // true, then false
 */
export function memoryJtiCache(maxEntries = 100_000): JtiCache {
  const seen = new Map<string, number>();
  return {
    async remember(key, expiresAt, now) {
      const nowMs = Date.parse(now);
      const prev = seen.get(key);
      if (prev !== undefined && prev > nowMs) return false;
      if (seen.size >= maxEntries) {
        for (const [k, exp] of seen) if (exp <= nowMs) seen.delete(k);
        if (seen.size >= maxEntries) return false;
      }
      seen.set(key, Date.parse(expiresAt));
      return true;
    },
  };
}
