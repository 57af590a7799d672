/**
 * SPIFFE trust bundles (SPIFFE Trust Domain and Bundle §4; STANDARDS.md §1.4)
 * and the two other views relying parties need: an OIDC-style JWKS
 * (`use:"sig"`, `alg`, `kid`) for ordinary JWT libraries, which skip keys
 * whose `use` is not `sig` (STANDARDS.md §8 gotcha 1), and a PEM file of the
 * X.509 authorities for openssl and TLS stacks.
 */
import { X509Certificate as NodeX509Certificate, createPublicKey } from 'node:crypto';
import { TrustDomain } from '../kernel/index.ts';
import { identityErrors } from './errors.ts';
import { algOfKeyObject, isJwtSvidAlg } from './keys.ts';
import type { JsonWebKey, JwtSvidAlg } from './keys.ts';

/** A JWT signing authority of a trust domain. */
export interface JwtAuthority {
  readonly kid: string;
  /** Public key only. */
  readonly publicJwk: Readonly<JsonWebKey>;
  /** Algorithm the key signs with, when known. */
  readonly alg?: JwtSvidAlg;
}

/** One key of a SPIFFE bundle document. */
export interface SpiffeBundleKey {
  readonly kty: string;
  readonly use: 'x509-svid' | 'jwt-svid';
  readonly kid?: string;
  readonly alg?: string;
  readonly x5c?: readonly string[];
  readonly [member: string]: unknown;
}

/** The SPIFFE bundle document (a JWK Set with SPIFFE parameters). */
export interface SpiffeBundleDocument {
  readonly keys: readonly SpiffeBundleKey[];
  readonly spiffe_sequence?: number;
  readonly spiffe_refresh_hint?: number;
}

/** A JWK of the OIDC-style JWKS view. */
export interface OidcJwk {
  readonly kty: string;
  readonly use: 'sig';
  readonly kid: string;
  readonly alg: string;
  readonly [member: string]: unknown;
}

/** Something that finds the bundle of a trust domain by name. A `Map` or a single {@link TrustBundle} will do. */
export interface BundleLookup {
  get(trustDomain: string): TrustBundle | undefined;
}

/** JWK members that only private keys have (RFC 7518 §6.2.2, §6.3.2, §6.4). */
const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k'] as const;
/** Members of a public key JWK, by key type, copied into bundle entries. */
const PUBLIC_MEMBERS: Readonly<Record<string, readonly string[]>> = { EC: ['crv', 'x', 'y'], RSA: ['n', 'e'], OKP: ['crv', 'x'] };

function bundleError(message: string): Error {
  return identityErrors.error('ERR_IDENTITY_BUNDLE_INVALID', message);
}

function publicMembers(jwk: Readonly<JsonWebKey>): Record<string, unknown> {
  const kty = jwk.kty ?? '';
  const names = PUBLIC_MEMBERS[kty];
  if (names === undefined) throw new TypeError(`unsupported key type ${kty}`);
  const out: Record<string, unknown> = { kty };
  const src = jwk as Record<string, unknown>;
  for (const n of names) {
    if (src[n] !== undefined) out[n] = src[n];
  }
  return out;
}

function hasPrivateMember(jwk: object): boolean {
  return PRIVATE_MEMBERS.some((m) => Object.hasOwn(jwk, m));
}

/** JOSE algorithm of a public JWK when none was stated: by curve, RS256 for RSA. */
function defaultAlg(jwk: Readonly<JsonWebKey>): JwtSvidAlg | undefined {
  try {
    return algOfKeyObject(createPublicKey({ key: jwk as JsonWebKey, format: 'jwk' }));
  } catch {
    return undefined;
  }
}

function derToPem(der: Uint8Array): string {
  const b64 = Buffer.from(der).toString('base64');
  const lines = b64.match(/.{1,64}/g) ?? [];
  return `-----BEGIN CERTIFICATE-----\n${lines.join('\n')}\n-----END CERTIFICATE-----\n`;
}

/**
 * An immutable trust bundle of one trust domain: its X.509 authorities (CA
 * certificates, DER) and JWT authorities (public keys by `kid`).
 *
 * @example
 * const b = TrustBundle.parse(json, 'example.org');
 * b.toJwks();  // { keys: [{ kty, use: 'sig', kid, alg, … }] }
 * b.toPem();   // '-----BEGIN CERTIFICATE-----…'
 */
export class TrustBundle implements BundleLookup {
  readonly trustDomain: TrustDomain;
  readonly x509Authorities: readonly Uint8Array[];
  readonly jwtAuthorities: ReadonlyMap<string, JwtAuthority>;
  readonly sequence: number | undefined;
  readonly refreshHintSeconds: number | undefined;
  readonly #certs: readonly NodeX509Certificate[];

  constructor(init: {
    trustDomain: TrustDomain | string;
    x509Authorities?: readonly Uint8Array[];
    jwtAuthorities?: readonly JwtAuthority[];
    sequence?: number;
    refreshHintSeconds?: number;
  }) {
    this.trustDomain = typeof init.trustDomain === 'string' ? TrustDomain.parse(init.trustDomain) : init.trustDomain;
    const certs: NodeX509Certificate[] = [];
    const ders: Uint8Array[] = [];
    const seen = new Set<string>();
    for (const der of init.x509Authorities ?? []) {
      const key = Buffer.from(der).toString('base64');
      if (seen.has(key)) continue;
      seen.add(key);
      certs.push(new NodeX509Certificate(der));
      ders.push(Uint8Array.from(der));
    }
    const jwt = new Map<string, JwtAuthority>();
    for (const a of init.jwtAuthorities ?? []) {
      if (typeof a.kid !== 'string' || a.kid === '') throw new TypeError('a JWT authority needs a kid');
      if (jwt.has(a.kid)) throw new TypeError(`duplicate JWT authority kid ${a.kid}`);
      if (hasPrivateMember(a.publicJwk)) throw new TypeError('a JWT authority must be a public key');
      const alg = a.alg ?? defaultAlg(a.publicJwk);
      jwt.set(a.kid, Object.freeze({ kid: a.kid, publicJwk: Object.freeze(publicMembers(a.publicJwk)) as JsonWebKey, ...(alg === undefined ? {} : { alg }) }));
    }
    if (init.sequence !== undefined && !(Number.isSafeInteger(init.sequence) && init.sequence >= 0)) throw new TypeError('sequence must be a non-negative integer');
    if (init.refreshHintSeconds !== undefined && !(Number.isSafeInteger(init.refreshHintSeconds) && init.refreshHintSeconds > 0)) {
      throw new TypeError('refresh hint must be a positive integer');
    }
    this.x509Authorities = Object.freeze(ders);
    this.#certs = Object.freeze(certs);
    this.jwtAuthorities = jwt;
    this.sequence = init.sequence;
    this.refreshHintSeconds = init.refreshHintSeconds;
    Object.freeze(this);
  }

  /** The bundle when `trustDomain` is its own, so one bundle is a {@link BundleLookup}. */
  get(trustDomain: string): TrustBundle | undefined {
    return trustDomain === this.trustDomain.name ? this : undefined;
  }

  /** The X.509 authorities as node:crypto certificates. */
  x509Certificates(): readonly NodeX509Certificate[] {
    return this.#certs;
  }

  /** The JWT authority named `kid`, if any. */
  jwtAuthority(kid: string): JwtAuthority | undefined {
    return this.jwtAuthorities.get(kid);
  }

  /**
   * True when both bundles hold the same keys (sequence and hint aside). The
   * keys of a bundle are a set (SPIFFE Trust Domain and Bundle §4.2): the order
   * they are listed in is no change.
   */
  sameKeysAs(other: TrustBundle): boolean {
    if (!this.trustDomain.equals(other.trustDomain)) return false;
    const mine = this.#keys().map((k) => JSON.stringify(k)).sort();
    const theirs = other.#keys().map((k) => JSON.stringify(k)).sort();
    return mine.length === theirs.length && mine.every((k, i) => k === theirs[i]);
  }

  /** A copy with another sequence number. */
  withSequence(sequence: number): TrustBundle {
    return new TrustBundle({
      trustDomain: this.trustDomain,
      x509Authorities: this.x509Authorities,
      jwtAuthorities: [...this.jwtAuthorities.values()],
      sequence,
      ...(this.refreshHintSeconds === undefined ? {} : { refreshHintSeconds: this.refreshHintSeconds }),
    });
  }

  #keys(): SpiffeBundleKey[] {
    const keys: SpiffeBundleKey[] = [];
    // SPIFFE Trust Domain and Bundle §4.2.1: one entry per CA, x5c holds exactly that CA, no kid.
    for (const cert of this.#certs) {
      const jwk = cert.publicKey.export({ format: 'jwk' });
      keys.push({ ...publicMembers(jwk), kty: jwk.kty ?? '', use: 'x509-svid', x5c: [cert.raw.toString('base64')] });
    }
    // §4.2.2: kid is required on JWT authorities.
    for (const a of this.jwtAuthorities.values()) {
      keys.push({ ...publicMembers(a.publicJwk), kty: a.publicJwk.kty ?? '', use: 'jwt-svid', kid: a.kid, ...(a.alg === undefined ? {} : { alg: a.alg }) });
    }
    return keys;
  }

  /** The SPIFFE bundle document. */
  toDocument(): SpiffeBundleDocument {
    return {
      keys: this.#keys(),
      ...(this.sequence === undefined ? {} : { spiffe_sequence: this.sequence }),
      ...(this.refreshHintSeconds === undefined ? {} : { spiffe_refresh_hint: this.refreshHintSeconds }),
    };
  }

  /** The SPIFFE bundle document as JSON text. */
  toJson(): string {
    return JSON.stringify(this.toDocument());
  }

  /**
   * The JWT authorities as an OIDC-style JWKS (`use:"sig"`, `alg`, `kid`), for
   * libraries such as jose that skip `use:"jwt-svid"` keys.
   */
  toJwks(): { keys: OidcJwk[] } {
    const keys: OidcJwk[] = [];
    for (const a of this.jwtAuthorities.values()) {
      if (a.alg === undefined) continue;
      keys.push({ ...publicMembers(a.publicJwk), kty: a.publicJwk.kty ?? '', use: 'sig', kid: a.kid, alg: a.alg });
    }
    return { keys };
  }

  /** The X.509 authorities as concatenated PEM certificates (`openssl verify -CAfile`). */
  toPem(): string {
    return this.x509Authorities.map(derToPem).join('');
  }

  /**
   * Parse a SPIFFE bundle document of the trust domain `trustDomain`.
   * Keys with a missing or unknown `use` or `kty` are ignored (§4.2); an
   * `x509-svid` key must carry exactly one certificate in `x5c` and no `kid`;
   * a `jwt-svid` key must carry a `kid`; no key may carry private members.
   */
  static parse(input: string | unknown, trustDomain: TrustDomain | string): TrustBundle {
    let doc: unknown = input;
    if (typeof input === 'string') {
      try {
        doc = JSON.parse(input);
      } catch {
        throw bundleError('bundle is not JSON');
      }
    }
    if (doc === null || typeof doc !== 'object' || Array.isArray(doc)) throw bundleError('bundle is not a JSON object');
    const rec = doc as Record<string, unknown>;
    if (!Array.isArray(rec.keys)) throw bundleError('bundle has no `keys` array');
    const seq = rec.spiffe_sequence;
    if (seq !== undefined && !(typeof seq === 'number' && Number.isSafeInteger(seq) && seq >= 0)) throw bundleError('`spiffe_sequence` must be a non-negative integer');
    const hint = rec.spiffe_refresh_hint;
    if (hint !== undefined && !(typeof hint === 'number' && Number.isSafeInteger(hint) && hint > 0)) throw bundleError('`spiffe_refresh_hint` must be a positive integer');
    const x509: Uint8Array[] = [];
    const jwt: JwtAuthority[] = [];
    const kids = new Set<string>();
    (rec.keys as unknown[]).forEach((raw, i) => {
      if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw bundleError(`key ${i} is not a JSON object`);
      const k = raw as Record<string, unknown>;
      if (typeof k.kty !== 'string' || PUBLIC_MEMBERS[k.kty] === undefined) return;
      if (hasPrivateMember(k)) throw bundleError(`key ${i} holds private key members`);
      if (k.use === 'x509-svid') {
        if (k.kid !== undefined) throw bundleError(`x509-svid key ${i} must not have a \`kid\``);
        if (!Array.isArray(k.x5c) || k.x5c.length !== 1 || typeof k.x5c[0] !== 'string') {
          throw bundleError(`x509-svid key ${i} must have exactly one certificate in \`x5c\``);
        }
        const der = Buffer.from(k.x5c[0], 'base64');
        try {
          new NodeX509Certificate(der);
        } catch {
          throw bundleError(`x509-svid key ${i} has an unparseable certificate`);
        }
        x509.push(new Uint8Array(der));
      } else if (k.use === 'jwt-svid') {
        if (typeof k.kid !== 'string' || k.kid === '') throw bundleError(`jwt-svid key ${i} must have a \`kid\``);
        if (kids.has(k.kid)) throw bundleError(`jwt-svid key ${i} repeats kid \`${k.kid.slice(0, 64)}\``);
        kids.add(k.kid);
        const alg = k.alg === undefined ? undefined : k.alg;
        if (alg !== undefined && !isJwtSvidAlg(alg)) throw bundleError(`jwt-svid key ${i} has an unsupported \`alg\``);
        const publicJwk = publicMembers(k as JsonWebKey) as JsonWebKey;
        try {
          createPublicKey({ key: publicJwk, format: 'jwk' });
        } catch {
          throw bundleError(`jwt-svid key ${i} is not a valid public key`);
        }
        jwt.push({ kid: k.kid, publicJwk, ...(alg === undefined ? {} : { alg }) });
      }
      // Any other `use` is ignored (§4.2).
    });
    return new TrustBundle({
      trustDomain,
      x509Authorities: x509,
      jwtAuthorities: jwt,
      ...(seq === undefined ? {} : { sequence: seq }),
      ...(hint === undefined ? {} : { refreshHintSeconds: hint }),
    });
  }
}

/**
 * A lookup over several trust domains' bundles. Bundles are never merged
 * across trust domains (§1.4): a second bundle for the same domain is refused.
 *
 * @example
 * const bundles = bundleSet(ours, partner);
 * bundles.get('partner.example')?.sequence;
 */
export function bundleSet(...bundles: TrustBundle[]): BundleLookup {
  const map = new Map<string, TrustBundle>();
  for (const b of bundles) {
    if (map.has(b.trustDomain.name)) throw new TypeError(`two bundles for trust domain ${b.trustDomain.name}`);
    map.set(b.trustDomain.name, b);
  }
  return map;
}
