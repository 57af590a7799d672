/**
 * Inbound authentication for `writ proxy`: the caller's X.509-SVID from the
 * mTLS handshake, a JWT-SVID bearer, or a Writ access token (`at+jwt`),
 * with its sender constraint checked — a DPoP proof for `cnf.jkt` (RFC 9449
 * §7) and the client certificate for `cnf.x5t#S256` (RFC 8705 §3).
 *
 * Verified tokens are cached until their `exp`, keyed by the token itself
 * and by the trust material they were checked against; a revocation drops
 * the entries of its subject or token id. A DPoP proof is never cached: each
 * request needs its own.
 */
import { X509Certificate, createHash } from 'node:crypto';
import type { TLSSocket } from 'node:tls';
import { createRemoteJWKSet, jwtVerify } from 'jose';
import type { JWTVerifyGetKey } from 'jose';
import { verifyDpopProof, memoryJtiCache, DPOP_ALGS } from '../credentials/index.ts';
import type { JtiCache } from '../credentials/index.ts';
import type { TrustBundle } from '../identity/index.ts';
import { SpiffeId } from '../kernel/index.ts';
import type { Clock, WritError } from '../kernel/index.ts';
import { authenticateJwtSvid, authenticateTlsVerifiedLeaf, StaticBundleSource } from './caller.ts';
import type { BundleSource } from './caller.ts';
import { enforcementErrors } from './errors.ts';
import type { EnforcementErrorCode } from './errors.ts';
import type { AuthMode } from './proxy-config.ts';

/** An authenticated caller of the proxy. */
export interface ProxyCaller {
  readonly spiffeId: string;
  readonly method: 'x509-svid' | 'jwt-svid' | 'access-token';
  readonly expiresAt: number;
  /** `jti` of an access token (its lease id). */
  readonly tokenId?: string;
  /** Bound to a key or certificate the caller proved (mTLS, DPoP, `cnf.x5t#S256`). */
  readonly senderConstrained: boolean;
  /** An access token's `scope` (RFC 9068 §2.2.3), for the policy to narrow on. */
  readonly scope?: readonly string[];
  /** An access token's `task` claim: the task it is bound to. */
  readonly taskId?: string;
}

/** A refusal, with what the 401 challenge needs. */
export interface AuthFailure {
  readonly code: EnforcementErrorCode;
  readonly reason: string;
  /** The challenge scheme: `DPoP` when the failure concerns a DPoP token. */
  readonly scheme: 'Bearer' | 'DPoP';
  /** RFC 6750 §3.1 / RFC 9449 §7.1 error attribute. */
  readonly error?: 'invalid_token' | 'invalid_dpop_proof' | 'invalid_request';
}

/** The Writ authorization server as a resource server sees it. */
export interface AccessTokenIssuer {
  /** The `iss` of Writ access tokens and the key set that verifies them. */
  resolve(): Promise<{ readonly issuer: string; readonly keys: JWTVerifyGetKey }>;
}

/** Options of {@link WritAuthorizationServer}. */
export interface WritAuthorizationServerOptions {
  /** Base URL of the Writ server. */
  readonly url: string;
  readonly timeoutMs?: number;
  readonly fetch?: typeof fetch;
}

/**
 * Discovers the issuer and `jwks_uri` from `/.well-known/oauth-authorization-server`
 * (RFC 8414) on first use; a failed discovery is retried on the next request.
 *
 * @example
 * const as = new WritAuthorizationServer({ url: 'http://127.0.0.1:7400' });
 * const { issuer } = await as.resolve();
 */
export class WritAuthorizationServer implements AccessTokenIssuer {
  readonly #o: WritAuthorizationServerOptions;
  #resolved: { issuer: string; keys: JWTVerifyGetKey; tokenEndpoint: string } | undefined;
  #inflight: Promise<{ issuer: string; keys: JWTVerifyGetKey; tokenEndpoint: string }> | undefined;

  constructor(options: WritAuthorizationServerOptions) {
    this.#o = options;
  }

  async resolve(): Promise<{ issuer: string; keys: JWTVerifyGetKey; tokenEndpoint: string }> {
    if (this.#resolved !== undefined) return this.#resolved;
    this.#inflight ??= this.#discover().finally(() => {
      this.#inflight = undefined;
    });
    return this.#inflight;
  }

  async #discover(): Promise<{ issuer: string; keys: JWTVerifyGetKey; tokenEndpoint: string }> {
    const f = this.#o.fetch ?? fetch;
    const res = await f(`${this.#o.url.replace(/\/+$/, '')}/.well-known/oauth-authorization-server`, { signal: AbortSignal.timeout(this.#o.timeoutMs ?? 2000) });
    if (res.status !== 200) throw new Error(`authorization server metadata answered ${res.status}`);
    const m = (await res.json()) as Record<string, unknown>;
    if (typeof m.issuer !== 'string' || typeof m.jwks_uri !== 'string' || typeof m.token_endpoint !== 'string') throw new Error('authorization server metadata lacks issuer, jwks_uri or token_endpoint');
    const r = { issuer: m.issuer, tokenEndpoint: m.token_endpoint, keys: createRemoteJWKSet(new URL(m.jwks_uri), { timeoutDuration: this.#o.timeoutMs ?? 2000, cooldownDuration: 5000, cacheMaxAge: 300_000 }) };
    this.#resolved = r;
    return r;
  }
}

/** Options of {@link ProxyAuthenticator}. */
export interface ProxyAuthenticatorOptions {
  readonly bundles: BundleSource;
  readonly clock: Clock;
  /** The audience JWT-SVIDs and access tokens must name. */
  readonly audience: string;
  /** Needed for routes that accept access tokens. */
  readonly accessTokens?: AccessTokenIssuer;
  readonly maxEntries?: number;
  readonly dpopIatWindowSeconds?: number;
  /** DPoP `jti` replay store (default: in memory). */
  readonly jtis?: JtiCache;
}

/** What one request presents. */
export interface PresentedCredentials {
  readonly authorization?: string;
  /** Every `DPoP` header value (more than one is an error). */
  readonly dpop?: readonly string[];
  readonly method: string;
  /** The URL the client addressed, without query: the DPoP `htu`. */
  readonly htu: string;
  /** The TLS socket, when the listener terminates TLS. */
  readonly tls?: TLSSocket;
}

interface TokenEntry {
  readonly caller: ProxyCaller;
  /** The material it was verified against: a bundle refresh or new AS starts over. */
  readonly anchor: unknown;
  readonly jkt?: string;
  readonly x5t?: string;
}

interface TlsEntry {
  readonly anchor: TrustBundle;
  readonly result: ProxyCaller | AuthFailure;
  readonly x5t?: string;
}

const SCHEME = /^(Bearer|DPoP) +([A-Za-z0-9\-._~+/]+=*)\s*$/i;

function failure(code: EnforcementErrorCode, reason: string, scheme: 'Bearer' | 'DPoP' = 'Bearer', error?: AuthFailure['error']): AuthFailure {
  return { code, reason, scheme, ...(error === undefined ? {} : { error }) };
}

function isFailure(x: ProxyCaller | AuthFailure): x is AuthFailure {
  return 'code' in x;
}

function typOf(token: string): string | undefined {
  const dot = token.indexOf('.');
  if (dot <= 0) return undefined;
  try {
    const h = JSON.parse(Buffer.from(token.slice(0, dot), 'base64url').toString('utf8')) as unknown;
    return h !== null && typeof h === 'object' && typeof (h as Record<string, unknown>).typ === 'string' ? ((h as Record<string, unknown>).typ as string) : undefined;
  } catch {
    return undefined;
  }
}

/** The algorithms a DPoP proof may use, for the `algs` challenge attribute. */
export const DPOP_CHALLENGE_ALGS = DPOP_ALGS.join(' ');

/**
 * Authenticates the caller of one proxied request.
 *
 * @example
 * const auth = new ProxyAuthenticator({ bundles, clock: systemClock, audience: 'writ-proxy', accessTokens: as });
 * const r = await auth.authenticate(['jwt-svid'], { authorization: req.headers.authorization, method: 'GET', htu });
 */
export class ProxyAuthenticator {
  readonly #o: ProxyAuthenticatorOptions;
  readonly #tokens = new Map<string, TokenEntry>();
  readonly #tls = new WeakMap<TLSSocket, TlsEntry>();
  readonly #max: number;
  readonly #jtis: JtiCache;
  /** Verified-token cache hits and misses (metrics). */
  hits = 0;
  misses = 0;

  constructor(options: ProxyAuthenticatorOptions) {
    if (options.audience === '') throw new TypeError('audience must be non-empty');
    this.#o = options;
    this.#max = options.maxEntries ?? 10_000;
    this.#jtis = options.jtis ?? memoryJtiCache();
  }

  /** Entries in the verified-token cache. */
  get size(): number {
    return this.#tokens.size;
  }

  /** Drop cached tokens of a revoked subject or token id; returns how many. */
  invalidate(q: { readonly subject?: string; readonly tokenId?: string }): number {
    let n = 0;
    for (const [k, e] of this.#tokens) {
      if ((q.subject !== undefined && e.caller.spiffeId === q.subject) || (q.tokenId !== undefined && e.caller.tokenId === q.tokenId)) {
        this.#tokens.delete(k);
        n++;
      }
    }
    return n;
  }

  clear(): void {
    this.#tokens.clear();
  }

  /**
   * Authenticate with the kinds `modes` allows. A credential that is
   * presented and does not validate is a failure, never skipped for another.
   */
  async authenticate(modes: readonly AuthMode[], c: PresentedCredentials): Promise<ProxyCaller | AuthFailure> {
    const cert = c.tls === undefined ? undefined : this.#peer(c.tls);
    const tlsResult = cert === undefined || c.tls === undefined ? undefined : await this.#mtls(c.tls, cert);
    if (tlsResult !== undefined && isFailure(tlsResult)) return tlsResult;
    const authz = c.authorization;
    if (authz !== undefined && authz !== '') {
      const m = SCHEME.exec(authz);
      if (m === null) return failure('ERR_ENFORCE_CREDENTIAL_INVALID', 'the authorization header is not a bearer or DPoP token', 'Bearer', 'invalid_request');
      const scheme = (m[1] ?? '').toLowerCase() === 'dpop' ? 'DPoP' : 'Bearer';
      const token = m[2] ?? '';
      // A cached token already says what it is; only a new one is decoded to find out.
      const known = this.#tokens.get(token)?.caller.method;
      const isAccessToken = known === undefined ? typOf(token) === 'at+jwt' : known === 'access-token';
      const mode: AuthMode = isAccessToken ? 'access-token' : 'jwt-svid';
      if (!modes.includes(mode)) return failure('ERR_ENFORCE_AUTH_MODE', `this route does not accept ${isAccessToken ? 'access tokens' : 'JWT-SVIDs'} (accepts: ${modes.join(', ')})`, scheme, 'invalid_token');
      if (!isAccessToken) {
        // RFC 9449 §7.1: the DPoP scheme is for DPoP-bound access tokens only.
        if (scheme === 'DPoP') return failure('ERR_ENFORCE_DPOP_INVALID', 'the DPoP scheme carries a token that is not a DPoP-bound access token', 'DPoP', 'invalid_token');
        return this.#jwtSvid(token);
      }
      return this.#accessToken(token, scheme, c, tlsResult === undefined || c.tls === undefined ? undefined : this.#tls.get(c.tls)?.x5t);
    }
    if (tlsResult !== undefined) {
      if (!modes.includes('mtls')) return failure('ERR_ENFORCE_AUTH_MODE', `this route does not accept mTLS callers (accepts: ${modes.join(', ')})`);
      return tlsResult;
    }
    return failure('ERR_ENFORCE_UNAUTHENTICATED', `no caller identity: send ${modes.map((x) => (x === 'mtls' ? 'an X.509-SVID (mTLS)' : x === 'jwt-svid' ? 'a JWT-SVID bearer' : 'a Writ access token')).join(' or ')}`);
  }

  #peer(s: TLSSocket): X509Certificate | undefined {
    const x = s.getPeerX509Certificate();
    return x ?? undefined;
  }

  // One check per TLS connection and bundle: the handshake does not change.
  async #mtls(s: TLSSocket, leaf: X509Certificate): Promise<ProxyCaller | AuthFailure> {
    let bundle: TrustBundle;
    try {
      bundle = await this.#o.bundles.current();
    } catch (e) {
      return failure('ERR_ENFORCE_BUNDLE_UNAVAILABLE', (e as Error).message);
    }
    const hit = this.#tls.get(s);
    if (hit !== undefined && hit.anchor === bundle) {
      if (!isFailure(hit.result) && this.#o.clock.nowMs() >= hit.result.expiresAt) return failure('ERR_ENFORCE_CREDENTIAL_INVALID', 'X.509-SVID rejected: peer certificate is not valid now', 'Bearer', 'invalid_token');
      return hit.result;
    }
    const result = await this.#checkLeaf(s, leaf, bundle);
    this.#tls.set(s, { anchor: bundle, result, x5t: createHash('sha256').update(leaf.raw).digest('base64url') });
    return result;
  }

  async #checkLeaf(s: TLSSocket, leaf: X509Certificate, bundle: TrustBundle): Promise<ProxyCaller | AuthFailure> {
    const bad = (why: string) => failure('ERR_ENFORCE_CREDENTIAL_INVALID', `X.509-SVID rejected: ${why}`, 'Bearer', 'invalid_token');
    if (!s.authorized) {
      // The TLS stack did not verify the chain against the bundle; say why in SPIFFE terms.
      const uris = (leaf.subjectAltName ?? '').split(', ').filter((n) => n.startsWith('URI:'));
      const id = uris.length === 1 ? SpiffeId.tryParse((uris[0] ?? '').slice(4)) : undefined;
      if (id !== undefined && id.trustDomain.name !== bundle.trustDomain.name) return bad(`trust domain \`${id.trustDomain.name}\` is not \`${bundle.trustDomain.name}\``);
      const err = String(s.authorizationError ?? 'unverified');
      if (err === 'CERT_HAS_EXPIRED') return bad('certificate has expired');
      if (err === 'CERT_NOT_YET_VALID') return bad('certificate is not yet valid');
      return bad(`certificate chain does not verify against the trust bundle of \`${bundle.trustDomain.name}\` (${err})`);
    }
    try {
      const c = await authenticateTlsVerifiedLeaf(new Uint8Array(leaf.raw), new StaticBundleSource(bundle), this.#o.clock);
      return { spiffeId: c.spiffeId, method: 'x509-svid', expiresAt: c.expiresAt.getTime(), senderConstrained: true };
    } catch (e) {
      return failure('ERR_ENFORCE_CREDENTIAL_INVALID', (e as WritError).message, 'Bearer', 'invalid_token');
    }
  }

  #remember(key: string, e: TokenEntry): void {
    if (this.#tokens.size >= this.#max) {
      const oldest = this.#tokens.keys().next();
      if (oldest.done !== true) this.#tokens.delete(oldest.value);
    }
    this.#tokens.set(key, e);
  }

  async #jwtSvid(token: string): Promise<ProxyCaller | AuthFailure> {
    let bundle: TrustBundle;
    try {
      bundle = await this.#o.bundles.current();
    } catch (e) {
      return failure('ERR_ENFORCE_BUNDLE_UNAVAILABLE', (e as Error).message);
    }
    const hit = this.#tokens.get(token);
    if (hit !== undefined && hit.anchor === bundle && this.#o.clock.nowMs() < hit.caller.expiresAt) {
      this.hits++;
      return hit.caller;
    }
    this.misses++;
    try {
      const c = await authenticateJwtSvid(token, this.#o.audience, new StaticBundleSource(bundle), this.#o.clock);
      const caller: ProxyCaller = { spiffeId: c.spiffeId, method: 'jwt-svid', expiresAt: c.expiresAt.getTime(), senderConstrained: false };
      this.#remember(token, { caller, anchor: bundle });
      return caller;
    } catch (e) {
      return failure('ERR_ENFORCE_CREDENTIAL_INVALID', (e as WritError).message, 'Bearer', 'invalid_token');
    }
  }

  async #accessToken(token: string, scheme: 'Bearer' | 'DPoP', c: PresentedCredentials, certX5t: string | undefined): Promise<ProxyCaller | AuthFailure> {
    const as = this.#o.accessTokens;
    if (as === undefined) return failure('ERR_ENFORCE_CREDENTIAL_INVALID', 'access tokens are not accepted here', scheme, 'invalid_token');
    let anchor: { issuer: string; keys: JWTVerifyGetKey };
    try {
      anchor = await as.resolve();
    } catch {
      return failure('ERR_ENFORCE_CREDENTIAL_INVALID', 'access token cannot be verified: the authorization server metadata is unavailable', scheme, 'invalid_token');
    }
    let entry = this.#tokens.get(token);
    if (entry === undefined || entry.anchor !== anchor || this.#o.clock.nowMs() >= entry.caller.expiresAt) {
      this.misses++;
      try {
        // RFC 9068 §4: typ at+jwt, iss, aud, exp, signature with the AS key.
        const v = await jwtVerify(token, anchor.keys, { issuer: anchor.issuer, audience: this.#o.audience, typ: 'at+jwt', algorithms: ['ES256'], currentDate: new Date(this.#o.clock.nowMs()), requiredClaims: ['exp', 'sub', 'jti'] });
        const p = v.payload as Record<string, unknown>;
        const cnf = p.cnf !== null && typeof p.cnf === 'object' ? (p.cnf as Record<string, unknown>) : undefined;
        const jkt = typeof cnf?.jkt === 'string' ? cnf.jkt : undefined;
        const x5t = typeof cnf?.['x5t#S256'] === 'string' ? cnf['x5t#S256'] : undefined;
        if (typeof p.sub !== 'string' || SpiffeId.tryParse(p.sub) === undefined) throw new Error('`sub` is not a SPIFFE ID');
        entry = {
          caller: {
            spiffeId: p.sub,
            method: 'access-token',
            expiresAt: (p.exp as number) * 1000,
            tokenId: String(p.jti),
            senderConstrained: jkt !== undefined || x5t !== undefined,
            scope: typeof p.scope === 'string' ? p.scope.split(' ').filter((x) => x !== '') : [],
            ...(typeof p.task === 'string' ? { taskId: p.task } : {}),
          },
          anchor,
          ...(jkt === undefined ? {} : { jkt }),
          ...(x5t === undefined ? {} : { x5t }),
        };
        this.#remember(token, entry);
      } catch (e) {
        return failure('ERR_ENFORCE_CREDENTIAL_INVALID', `access token rejected: ${e instanceof Error ? e.message.slice(0, 200) : 'invalid'}`, scheme, 'invalid_token');
      }
    } else this.hits++;
    if (entry.jkt !== undefined) {
      // RFC 9449 §7.1: a DPoP-bound token is only accepted with the DPoP scheme and a proof of its key.
      if (scheme !== 'DPoP') return failure('ERR_ENFORCE_DPOP_INVALID', 'the access token is DPoP-bound: send it as `Authorization: DPoP` with a DPoP proof', 'DPoP', 'invalid_token');
      const proofs = c.dpop ?? [];
      if (proofs.length !== 1) return failure('ERR_ENFORCE_DPOP_INVALID', proofs.length === 0 ? 'the DPoP proof is missing' : 'more than one DPoP proof was sent', 'DPoP', 'invalid_dpop_proof');
      try {
        const p = await verifyDpopProof(proofs[0], { method: c.method, url: c.htu, iatWindowSeconds: this.#o.dpopIatWindowSeconds ?? 60, accessToken: token }, this.#o.clock, this.#jtis);
        if (p.jkt !== entry.jkt) return failure('ERR_ENFORCE_DPOP_INVALID', 'the DPoP proof key is not the key the token is bound to (`cnf.jkt`)', 'DPoP', 'invalid_dpop_proof');
      } catch (e) {
        return failure('ERR_ENFORCE_DPOP_INVALID', (e as Error).message.slice(0, 200), 'DPoP', 'invalid_dpop_proof');
      }
    } else if (scheme === 'DPoP') {
      return failure('ERR_ENFORCE_DPOP_INVALID', 'the DPoP scheme carries an access token that is not DPoP-bound', 'DPoP', 'invalid_token');
    }
    // RFC 8705 §3: a certificate-bound token needs the same client certificate on this connection.
    if (entry.x5t !== undefined && entry.x5t !== certX5t) return failure('ERR_ENFORCE_CREDENTIAL_INVALID', 'the access token is bound to a client certificate this connection did not present', 'Bearer', 'invalid_token');
    return entry.caller;
  }
}
