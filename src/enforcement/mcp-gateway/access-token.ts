/**
 * The MCP gateway as an OAuth resource server (MCP authorization,
 * STANDARDS.md §5; RFC 9068 JWT access tokens; RFC 9449 DPoP): it accepts only
 * Writ access tokens (`typ: at+jwt`, signed by a key of Writ's `/oauth2/jwks`,
 * `iss` the Writ issuer) whose audience is the gateway itself, and checks the
 * DPoP proof when the token is bound (`cnf.jkt`). A token for any other
 * audience is refused: MCP forbids token passthrough.
 */
import { createLocalJWKSet, createRemoteJWKSet, jwtVerify } from 'jose';
import type { JSONWebKeySet, JWTVerifyGetKey } from 'jose';
import { DPOP_ALGS, memoryJtiCache, verifyDpopProof } from '../../credentials/index.ts';
import type { ActClaim, JtiCache } from '../../credentials/index.ts';
import type { Clock } from '../../kernel/index.ts';
import { enforcementErrors } from '../errors.ts';

/** Who is calling, from a verified access token. */
export interface AgentIdentity {
  /** The token's `sub`: whom the call is for (the principal of the delegation). */
  readonly subject: string;
  /** The agent: the current actor (outermost `act.sub`, RFC 8693 §4.1), or `sub` when nobody acts for anyone. */
  readonly agent: string;
  /** The delegation chain, current actor first (empty without `act`). */
  readonly chain: readonly string[];
  readonly act: ActClaim | undefined;
  /** The task the token is bound to (`task` claim). */
  readonly task: string | undefined;
  readonly clientId: string;
  readonly scope: readonly string[];
  /** The token's `jti` (its lease id at Writ). */
  readonly jti: string;
  readonly expiresAt: Date;
  /** True when the token is DPoP-bound and the proof checked out. */
  readonly senderConstrained: boolean;
}

/** Options of {@link AccessTokenVerifier}. */
export interface AccessTokenVerifierOptions {
  /** Writ's issuer URL (its `/.well-known/oauth-authorization-server` `issuer`). */
  readonly issuer: string;
  /** The audience tokens must name: the gateway's resource identifier (RFC 8707), its public URL. */
  readonly audience: string;
  readonly clock: Clock;
  /** The AS keys; default Writ's `<issuer>/oauth2/jwks`, fetched and refreshed by jose. */
  readonly jwks?: JSONWebKeySet;
  /** Single use of DPoP proof `jti`s (default an in-process cache). */
  readonly jtis?: JtiCache;
  /** Seconds a DPoP proof's `iat` may lie in the past (default 60). */
  readonly dpopIatWindowSeconds?: number;
}

/** What the HTTP layer hands over for one request. */
export interface TokenPresentation {
  /** The `Authorization` header value. */
  readonly authorization: string | undefined;
  /** Every `DPoP` header value. */
  readonly dpop: readonly string[];
  readonly method: string;
  /** The request URL without query (the DPoP `htu`). */
  readonly url: string;
}

const TOKEN68 = /^([A-Za-z]+) +([A-Za-z0-9\-._~+/]+=*)\s*$/;
const MAX_TOKEN = 16_384;

function invalid(message: string): Error {
  return enforcementErrors.error('ERR_ENFORCE_CREDENTIAL_INVALID', message);
}

/**
 * A DPoP failure (RFC 9449 §7.1), its reason the challenge's `error`:
 * `invalid-dpop-proof` when the proof is missing or wrong, `invalid-token`
 * when the token was sent under the wrong scheme.
 */
function dpopInvalid(message: string, error: 'invalid-dpop-proof' | 'invalid-token', cause?: unknown): Error {
  return enforcementErrors.error('ERR_ENFORCE_DPOP_INVALID', message, { reasons: [error], ...(cause === undefined ? {} : { cause }) });
}

function parseAct(v: unknown, depth = 0): ActClaim | undefined {
  if (v === undefined) return undefined;
  if (depth > 16 || v === null || typeof v !== 'object' || Array.isArray(v)) throw invalid('access token has a malformed `act` claim');
  const r = v as Record<string, unknown>;
  if (typeof r.sub !== 'string' || r.sub === '') throw invalid('access token has an `act` without `sub`');
  const inner = parseAct(r.act, depth + 1);
  return inner === undefined ? { sub: r.sub } : { sub: r.sub, act: inner };
}

function chainOf(act: ActClaim | undefined): string[] {
  const out: string[] = [];
  for (let a = act; a !== undefined && out.length < 17; a = a.act) out.push(a.sub);
  return out;
}

/**
 * Verifies Writ access tokens presented to the gateway.
 *
 * @example
 * const tokens = new AccessTokenVerifier({ issuer: 'http://127.0.0.1:7400', audience: 'http://127.0.0.1:7600/mcp', clock: systemClock });
 * const who = await tokens.verify({ authorization: req.headers.authorization, dpop: [], method: 'POST', url });
 * who.agent; // 'spiffe://writ.local/agent/triage'
 */
export class AccessTokenVerifier {
  readonly #o: AccessTokenVerifierOptions;
  readonly #keys: JWTVerifyGetKey;
  readonly #jtis: JtiCache;

  constructor(o: AccessTokenVerifierOptions) {
    if (o.audience === '') throw new TypeError('the gateway audience must be non-empty');
    const iss = new URL(o.issuer);
    this.#o = o;
    this.#keys = o.jwks !== undefined ? createLocalJWKSet(o.jwks) : createRemoteJWKSet(new URL(`${iss.href.replace(/\/+$/, '')}/oauth2/jwks`), { timeoutDuration: 3000, cooldownDuration: 30_000 });
    this.#jtis = o.jtis ?? memoryJtiCache();
  }

  /**
   * Verify the token of one request. Throws `ERR_ENFORCE_UNAUTHENTICATED`
   * (no token), `ERR_ENFORCE_DPOP_INVALID` (a DPoP proof or scheme problem,
   * its reason the RFC 9449 error) or `ERR_ENFORCE_CREDENTIAL_INVALID`
   * (anything else wrong with the token).
   */
  async verify(p: TokenPresentation): Promise<AgentIdentity> {
    if (p.authorization === undefined || p.authorization === '') throw enforcementErrors.error('ERR_ENFORCE_UNAUTHENTICATED', 'no access token: send `Authorization: Bearer <token>` from Writ\'s token endpoint');
    const m = TOKEN68.exec(p.authorization);
    const scheme = m?.[1]?.toLowerCase();
    const token = m?.[2];
    if (token === undefined || (scheme !== 'bearer' && scheme !== 'dpop')) throw invalid('the authorization header is not a bearer or DPoP token');
    if (token.length > MAX_TOKEN) throw invalid('access token is too long');
    let claims: Record<string, unknown>;
    try {
      // RFC 9068 §4: typ at+jwt, the AS's key, iss, aud = this resource, exp.
      const r = await jwtVerify(token, this.#keys, {
        typ: 'at+jwt',
        issuer: this.#o.issuer,
        audience: this.#o.audience,
        algorithms: ['ES256'],
        requiredClaims: ['exp', 'iat', 'sub', 'jti', 'client_id'],
        currentDate: this.#o.clock.now(),
        clockTolerance: 5,
      });
      claims = r.payload as Record<string, unknown>;
    } catch (cause) {
      const code = cause instanceof Error && 'code' in cause ? String(cause.code) : '';
      const claim = (cause as { claim?: unknown }).claim;
      const why = code === 'ERR_JWT_EXPIRED'
        ? 'has expired'
        : code === 'ERR_JWT_CLAIM_VALIDATION_FAILED' && claim === 'aud'
          ? 'is not for this audience'
          : code === 'ERR_JWT_CLAIM_VALIDATION_FAILED'
            ? `fails the \`${String(claim)}\` check`
            : 'is not a Writ access token';
      throw enforcementErrors.error('ERR_ENFORCE_CREDENTIAL_INVALID', `access token ${why}`, { cause });
    }
    const sub = claims.sub;
    const jti = claims.jti;
    const clientId = claims.client_id;
    const exp = claims.exp;
    if (typeof sub !== 'string' || sub === '' || typeof jti !== 'string' || typeof clientId !== 'string' || typeof exp !== 'number') throw invalid('access token lacks `sub`, `jti`, `client_id` or `exp`');
    const act = parseAct(claims.act);
    const chain = chainOf(act);
    if (claims.task !== undefined && (typeof claims.task !== 'string' || claims.task === '')) throw invalid('access token has a malformed `task` claim');
    const scope = typeof claims.scope === 'string' ? claims.scope.split(' ').filter((s) => s !== '') : [];

    // RFC 9449 §7.1: a DPoP-bound token needs the DPoP scheme and a proof of its key.
    const cnf = claims.cnf as { jkt?: unknown } | undefined;
    const jkt = cnf !== undefined && cnf !== null && typeof cnf === 'object' ? cnf.jkt : undefined;
    let senderConstrained = false;
    if (jkt !== undefined) {
      if (typeof jkt !== 'string') throw invalid('access token has a malformed `cnf.jkt`');
      if (scheme !== 'dpop') throw dpopInvalid('access token is DPoP-bound: send it with the DPoP scheme and a proof', 'invalid-token');
      if (p.dpop.length !== 1) throw dpopInvalid(p.dpop.length === 0 ? 'DPoP proof is missing' : 'DPoP proof is sent more than once', 'invalid-dpop-proof');
      let proofJkt: string;
      try {
        proofJkt = (await verifyDpopProof(p.dpop[0], { method: p.method, url: p.url, iatWindowSeconds: this.#o.dpopIatWindowSeconds ?? 60, accessToken: token }, this.#o.clock, this.#jtis)).jkt;
      } catch (cause) {
        throw dpopInvalid(cause instanceof Error ? cause.message : 'DPoP proof is invalid', 'invalid-dpop-proof', cause);
      }
      if (proofJkt !== jkt) throw dpopInvalid('DPoP proof key is not the key the token is bound to', 'invalid-dpop-proof');
      senderConstrained = true;
    } else if (scheme === 'dpop') {
      throw dpopInvalid('access token is not DPoP-bound: send it with the Bearer scheme', 'invalid-token');
    }
    return {
      subject: sub,
      agent: chain[0] ?? sub,
      chain,
      act,
      task: claims.task as string | undefined,
      clientId,
      scope,
      jti,
      expiresAt: new Date(exp * 1000),
      senderConstrained,
    };
  }

  /** The raw token of an `Authorization` header (for the exchange), or undefined. */
  static tokenOf(authorization: string | undefined): string | undefined {
    if (authorization === undefined) return undefined;
    return TOKEN68.exec(authorization)?.[2];
  }
}

/** DPoP algorithms the gateway accepts (RFC 9728 `dpop_signing_alg_values_supported`). */
export const GATEWAY_DPOP_ALGS: readonly string[] = DPOP_ALGS;
