/**
 * Node attestation by an OIDC/JWT token: a Kubernetes projected
 * service-account token, a CI job's OIDC token (GitHub Actions), a cloud
 * instance identity token. The issuer is trusted by configuration: its exact
 * `iss`, a JWKS URL and the audience its tokens must carry for Writ. Claims
 * become node selectors through a configured mapping.
 *
 * Checks, each with its own code (RFC 7519 §4.1, §7.2): known `iss`, a
 * signature by a key of the issuer's JWKS (unknown `kid` is told apart from a
 * bad signature), `aud` holding the configured audience, `exp` present and in
 * the future, a lifetime within the issuer's maximum, and single use (the
 * token's `jti`, or its hash, is remembered until it expires).
 */
import { createHash } from 'node:crypto';
import { createRemoteJWKSet, decodeJwt, errors as joseErrors, jwtVerify } from 'jose';
import type { JWTPayload, JWTVerifyGetKey } from 'jose';
import type { Clock } from '../../kernel/index.ts';
import type { ReplayCache } from '../ports.ts';
import { checkSelector } from '../entries.ts';
import { attestationErrors } from './errors.ts';

/** One trusted issuer, as configured in `identity.oidcIssuers`. */
export interface OidcIssuerConfig {
  /** Exact `iss` value. */
  readonly issuer: string;
  /** Where its signing keys are published. */
  readonly jwksUrl: string;
  /** The audience its tokens must carry for Writ. */
  readonly audience: string;
  /** Claim whose value names the node (default `sub`); the node id is derived from issuer + value. */
  readonly nodeIdClaim: string;
  /** Claim path (`/` walks into objects) → selector key: `{"repository": "repo"}` gives `oidc:repo:<value>`. */
  readonly claimSelectors: Readonly<Record<string, string>>;
  /** Longest token lifetime accepted (`exp` − `iat`). Default 86400. */
  readonly maxTokenTtlSeconds: number;
}

/** What a verified attestation token says about the node. */
export interface OidcAttestation {
  readonly issuer: string;
  /** Stable node id derived from the issuer and the node id claim. */
  readonly nodeId: string;
  readonly selectors: readonly string[];
  /** The token's expiry (for the replay cache). */
  readonly expiresAt: Date;
}

const ALGS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA'];
const MAX_TOKEN_BYTES = 16 * 1024;
const SELECTOR_KEY = /^[a-z][a-z0-9_-]{0,62}$/;

function configError(message: string): Error {
  return attestationErrors.error('ERR_ATTEST_OIDC_CONFIG_INVALID', message);
}

/**
 * Parse and check `identity.oidcIssuers` (JSON text).
 *
 * @example
 * parseOidcIssuers('[{"issuer":"https://token.actions.githubusercontent.com","jwksUrl":"https://token.actions.githubusercontent.com/.well-known/jwks","audience":"writ"}]');
 */
export function parseOidcIssuers(json: string): readonly OidcIssuerConfig[] {
  let raw: unknown;
  try {
    raw = JSON.parse(json);
  } catch {
    throw configError('`identity.oidcIssuers` is not JSON');
  }
  if (!Array.isArray(raw)) throw configError('`identity.oidcIssuers` must be a JSON array');
  const seen = new Set<string>();
  return raw.map((item: unknown, i) => {
    if (item === null || typeof item !== 'object' || Array.isArray(item)) throw configError(`issuer ${i} must be an object`);
    const o = item as Record<string, unknown>;
    for (const k of Object.keys(o)) {
      if (!['issuer', 'jwksUrl', 'audience', 'nodeIdClaim', 'claimSelectors', 'maxTokenTtlSeconds'].includes(k)) throw configError(`issuer ${i} has unknown field \`${k.slice(0, 64)}\``);
    }
    if (typeof o.issuer !== 'string' || o.issuer === '') throw configError(`issuer ${i} needs \`issuer\``);
    if (seen.has(o.issuer)) throw configError(`issuer \`${o.issuer.slice(0, 128)}\` is listed twice`);
    seen.add(o.issuer);
    let url: URL;
    try {
      url = new URL(typeof o.jwksUrl === 'string' ? o.jwksUrl : '');
    } catch {
      throw configError(`issuer ${i} needs a \`jwksUrl\` URL`);
    }
    if (url.protocol !== 'https:' && url.protocol !== 'http:') throw configError(`issuer ${i} \`jwksUrl\` must be https (or http for a local issuer)`);
    if (typeof o.audience !== 'string' || o.audience === '') throw configError(`issuer ${i} needs \`audience\``);
    const nodeIdClaim = o.nodeIdClaim ?? 'sub';
    if (typeof nodeIdClaim !== 'string' || nodeIdClaim === '') throw configError(`issuer ${i} \`nodeIdClaim\` must be a claim name`);
    const claimSelectors: Record<string, string> = {};
    if (o.claimSelectors !== undefined) {
      if (o.claimSelectors === null || typeof o.claimSelectors !== 'object' || Array.isArray(o.claimSelectors)) throw configError(`issuer ${i} \`claimSelectors\` must be an object`);
      for (const [claim, key] of Object.entries(o.claimSelectors as Record<string, unknown>)) {
        if (typeof key !== 'string' || !SELECTOR_KEY.test(key) || key === 'iss') throw configError(`issuer ${i} maps claim \`${claim.slice(0, 64)}\` to an invalid selector key`);
        claimSelectors[claim] = key;
      }
    }
    const ttl = o.maxTokenTtlSeconds ?? 86_400;
    if (typeof ttl !== 'number' || !Number.isSafeInteger(ttl) || ttl <= 0) throw configError(`issuer ${i} \`maxTokenTtlSeconds\` must be a positive integer`);
    return Object.freeze({ issuer: o.issuer, jwksUrl: url.toString(), audience: o.audience, nodeIdClaim, claimSelectors: Object.freeze(claimSelectors), maxTokenTtlSeconds: ttl });
  });
}

function claimAt(payload: JWTPayload, path: string): unknown {
  let cur: unknown = payload;
  for (const part of path.split('/')) {
    if (cur === null || typeof cur !== 'object' || Array.isArray(cur) || !Object.hasOwn(cur, part)) return undefined;
    cur = (cur as Record<string, unknown>)[part];
  }
  return cur;
}

function scalar(v: unknown): string | undefined {
  if (typeof v === 'string' && v !== '') return v;
  if (typeof v === 'number' && Number.isFinite(v)) return String(v);
  if (typeof v === 'boolean') return String(v);
  return undefined;
}

/** Map a jose verification error to the attestation code that names it. */
function mapJoseError(e: unknown, issuer: string): Error {
  const who = `issuer \`${issuer.slice(0, 128)}\``;
  if (e instanceof joseErrors.JWTExpired) return attestationErrors.error('ERR_ATTEST_OIDC_EXPIRED', 'attestation token is expired');
  if (e instanceof joseErrors.JWTClaimValidationFailed) {
    if (e.claim === 'aud') return attestationErrors.error('ERR_ATTEST_OIDC_AUDIENCE_MISMATCH', `attestation token \`aud\` does not hold the audience configured for ${who}`);
    if (e.claim === 'iss') return attestationErrors.error('ERR_ATTEST_OIDC_ISSUER_UNKNOWN', 'attestation token `iss` is not a configured issuer');
    if (e.claim === 'nbf') return attestationErrors.error('ERR_ATTEST_OIDC_EXPIRED', 'attestation token is not yet valid');
    return attestationErrors.error('ERR_ATTEST_OIDC_MALFORMED', `attestation token claim \`${e.claim}\` is invalid`);
  }
  if (e instanceof joseErrors.JWKSNoMatchingKey) return attestationErrors.error('ERR_ATTEST_OIDC_KEY_UNKNOWN', `no key of ${who} matches the attestation token's \`kid\``);
  if (e instanceof joseErrors.JWSSignatureVerificationFailed) return attestationErrors.error('ERR_ATTEST_OIDC_SIGNATURE_INVALID', `attestation token signature does not verify with the key of ${who}`);
  if (e instanceof joseErrors.JOSEAlgNotAllowed || e instanceof joseErrors.JOSENotSupported) return attestationErrors.error('ERR_ATTEST_OIDC_MALFORMED', 'attestation token uses an algorithm that is not allowed');
  if (e instanceof joseErrors.JWKSTimeout || e instanceof joseErrors.JWKSInvalid || e instanceof TypeError || (e instanceof joseErrors.JOSEError && e.code === 'ERR_JOSE_GENERIC')) {
    return attestationErrors.error('ERR_ATTEST_OIDC_JWKS_UNAVAILABLE', `the JWKS of ${who} could not be fetched`, { cause: e });
  }
  if (e instanceof joseErrors.JWTInvalid || e instanceof joseErrors.JWSInvalid) return attestationErrors.error('ERR_ATTEST_OIDC_MALFORMED', 'attestation token is not a valid signed JWT');
  return attestationErrors.error('ERR_ATTEST_OIDC_JWKS_UNAVAILABLE', `attestation by ${who} failed`, { cause: e });
}

/**
 * Verifies attestation tokens of the configured issuers.
 *
 * @example
 * const oidc = new OidcAttestor(parseOidcIssuers(config['identity.oidcIssuers']), clock, store);
 * const { nodeId, selectors } = await oidc.attest(token);
 */
export class OidcAttestor {
  readonly #issuers: ReadonlyMap<string, { config: OidcIssuerConfig; jwks: JWTVerifyGetKey }>;
  readonly #clock: Clock;
  readonly #replay: ReplayCache;

  constructor(issuers: readonly OidcIssuerConfig[], clock: Clock, replay: ReplayCache, options: { jwks?: (config: OidcIssuerConfig) => JWTVerifyGetKey } = {}) {
    const make = options.jwks ?? ((c: OidcIssuerConfig) => createRemoteJWKSet(new URL(c.jwksUrl), { timeoutDuration: 5000, cooldownDuration: 30_000, cacheMaxAge: 600_000 }));
    this.#issuers = new Map(issuers.map((c) => [c.issuer, { config: c, jwks: make(c) }]));
    this.#clock = clock;
    this.#replay = replay;
  }

  /** The configured issuers. */
  issuers(): readonly OidcIssuerConfig[] {
    return [...this.#issuers.values()].map((i) => i.config);
  }

  /** Verify `token`, consume it (single use) and derive the node's id and selectors. */
  async attest(token: unknown): Promise<OidcAttestation> {
    if (typeof token !== 'string' || token === '' || token.length > MAX_TOKEN_BYTES) throw attestationErrors.error('ERR_ATTEST_OIDC_MALFORMED', 'attestation token is missing or too long');
    let unverified: JWTPayload;
    try {
      unverified = decodeJwt(token);
    } catch {
      throw attestationErrors.error('ERR_ATTEST_OIDC_MALFORMED', 'attestation token is not a JWT');
    }
    const iss = unverified.iss;
    const entry = typeof iss === 'string' ? this.#issuers.get(iss) : undefined;
    if (entry === undefined) throw attestationErrors.error('ERR_ATTEST_OIDC_ISSUER_UNKNOWN', 'attestation token `iss` is not a configured issuer');
    const { config, jwks } = entry;
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, jwks, {
        issuer: config.issuer,
        audience: config.audience,
        algorithms: ALGS,
        currentDate: this.#clock.now(),
        requiredClaims: ['exp'],
      }));
    } catch (e) {
      throw mapJoseError(e, config.issuer);
    }
    const exp = payload.exp;
    if (typeof exp !== 'number') throw attestationErrors.error('ERR_ATTEST_OIDC_MALFORMED', 'attestation token has no `exp`');
    const nowS = Math.floor(this.#clock.nowMs() / 1000);
    const start = typeof payload.iat === 'number' ? Math.min(payload.iat, nowS) : nowS;
    if (exp - start > config.maxTokenTtlSeconds) {
      throw attestationErrors.error('ERR_ATTEST_OIDC_TTL_TOO_LONG', `attestation token lives ${exp - start} seconds; issuer allows at most ${config.maxTokenTtlSeconds}`);
    }
    const nodeValue = scalar(claimAt(payload, config.nodeIdClaim));
    if (nodeValue === undefined) throw attestationErrors.error('ERR_ATTEST_OIDC_MALFORMED', `attestation token has no \`${config.nodeIdClaim}\` claim to name the node`);
    const selectors = new Set<string>([`oidc:iss:${config.issuer}`]);
    for (const [claim, key] of Object.entries(config.claimSelectors)) {
      const v = claimAt(payload, claim);
      for (const one of Array.isArray(v) ? v : [v]) {
        const s = scalar(one);
        if (s !== undefined) selectors.add(checkSelector(`oidc:${key}:${s}`, 'node selector'));
      }
    }
    // Single use: remembered until the token expires, on every replica.
    const once = typeof payload.jti === 'string' && payload.jti !== '' ? payload.jti : createHash('sha256').update(token).digest('base64url');
    const expiresAt = new Date(exp * 1000);
    if (!(await this.#replay.remember(`oidc:${config.issuer}:${once}`, expiresAt.toISOString(), this.#clock.now().toISOString()))) {
      throw attestationErrors.error('ERR_ATTEST_OIDC_REPLAYED', 'attestation token was already used');
    }
    const nodeId = `oidc-${createHash('sha256').update(`${config.issuer}\n${nodeValue}`).digest('hex').slice(0, 24)}`;
    return Object.freeze({ issuer: config.issuer, nodeId, selectors: Object.freeze([...selectors].sort()), expiresAt });
  }
}
