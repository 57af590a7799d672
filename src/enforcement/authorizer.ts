/**
 * One HTTP request, authorized: authenticate the caller by its SPIFFE
 * credential, map the request to an AuthZEN evaluation, ask the PDP, answer
 * allow (with the identity headers for the upstream) or deny (401 for no or a
 * bad identity, 403 for a deny; each with a reason code). Every front end —
 * Envoy's gRPC Check, the HTTP-mode authorizer used by nginx `auth_request`,
 * the SDK middleware — goes through {@link HttpAuthorizer.check}.
 *
 * Mapping (docs/enforcement.md): subject `{type: workload, id: <SPIFFE ID>}`,
 * action `http:<METHOD>` (the schema's `http:GET` …), resource
 * `{type: resource, id: <host><path>}` with the query dropped and dot segments
 * resolved, context `{http: {method, path, host}, authn: {method,
 * senderConstrained}}` plus `headers` limited to an allow-list.
 *
 * With `revocations` (the server's revocation stream), an authenticated caller
 * whose SPIFFE ID was revoked is refused (401 `ERR_ENFORCE_CREDENTIAL_REVOKED`)
 * and every caller is refused once the stream is stale (403
 * `ERR_ENFORCE_REVOCATION_STALE`), before the PDP is asked.
 */
import { createHash, randomBytes } from 'node:crypto';
import type { TrustBundle } from '../identity/index.ts';
import type { Clock, WritError } from '../kernel/index.ts';
import type { RevocationEvent, RevocationQuery, RevocationStatus } from '../signals/index.ts';
import { enforcementErrors } from './errors.ts';
import type { EnforcementErrorCode } from './errors.ts';
import { StaticBundleSource, authenticateJwtSvid, authenticateTlsVerifiedLeaf, authenticateX509Svid, bearerToken, decodeForwardedCertificate } from './caller.ts';
import type { BundleSource, CallerIdentity } from './caller.ts';
import { CachingPdp } from './pdp-client.ts';
import type { AccessRequest, PdpClient } from './pdp-client.ts';

/** What an enforcement point needs from the revocation stream (`RevocationStreamClient`). */
export interface RevocationView {
  check(q: RevocationQuery): RevocationStatus;
  staleness(): number;
}

/** A refusal by the revocation view: a revoked caller (401) or a stale stream (403). */
export interface RevocationDenial {
  readonly status: 401 | 403;
  readonly code: 'ERR_ENFORCE_CREDENTIAL_REVOKED' | 'ERR_ENFORCE_REVOCATION_STALE';
  readonly reason: string;
}

/**
 * Ask the revocation view about an authenticated caller; undefined when it may
 * go on to the decision. Stale beats revoked: past `maxStalenessMs` nothing is
 * vouched for.
 *
 * @example
 * const d = revocationDenial(revocations, { subject: caller.spiffeId }, 30_000);
 * if (d !== undefined) deny(d.status, d.code, d.reason);
 */
export function revocationDenial(view: RevocationView, q: RevocationQuery, maxStalenessMs: number): RevocationDenial | undefined {
  const status = view.check(q);
  if (status === 'clear') return undefined;
  if (status === 'stale') return { status: 403, code: 'ERR_ENFORCE_REVOCATION_STALE', reason: `the revocation stream has not been heard from within ${maxStalenessMs} ms` };
  return { status: 401, code: 'ERR_ENFORCE_CREDENTIAL_REVOKED', reason: 'the caller\'s credential or identity has been revoked' };
}

/** The request to decide, as any front end sees it. */
export interface HttpCheck {
  readonly method: string;
  /** Path with optional query, starting with `/`. */
  readonly path: string;
  readonly host?: string;
  /** Lower-case header names. */
  readonly headers: Readonly<Record<string, string | undefined>>;
  /** The caller's certificate chain from the TLS peer or a trusted proxy: DER list, or URL-encoded/plain PEM. */
  readonly peerCertificate?: readonly Uint8Array[] | string;
  /** The peer leaf (DER) of a TLS connection this process's TLS stack verified against the Writ bundle (see `authenticateTlsVerifiedLeaf`). */
  readonly tlsVerifiedLeaf?: Uint8Array;
}

/** Allow: the headers to add upstream. */
export interface CheckAllowed {
  readonly allow: true;
  readonly caller: CallerIdentity;
  readonly decisionId: string;
  readonly cached: boolean;
  /** `x-writ-spiffe-id`, `x-writ-decision-id`. */
  readonly upstreamHeaders: Readonly<Record<string, string>>;
}

/** Deny: status, reason code and, for 401, the challenge. */
export interface CheckDenied {
  readonly allow: false;
  readonly status: 401 | 403;
  readonly code: EnforcementErrorCode;
  readonly reason: string;
  readonly decisionId: string;
  readonly caller?: CallerIdentity;
  /** RFC 6750 §3 challenge on a 401. */
  readonly wwwAuthenticate?: string;
}

export type CheckResult = CheckAllowed | CheckDenied;

/** Options of {@link HttpAuthorizer}. */
export interface HttpAuthorizerOptions {
  readonly pdp: PdpClient;
  readonly bundles: BundleSource;
  readonly clock: Clock;
  /** The audience a JWT-SVID must name to be accepted here. */
  readonly audience: string;
  /** Request headers copied into `context.headers` (lower-case names); none by default. Never `authorization` or `cookie`. */
  readonly contextHeaders?: readonly string[];
  /** The realm of the `WWW-Authenticate` challenge (default `writ`). */
  readonly realm?: string;
  /**
   * The revocation stream this authorizer follows (`writ ext-authz` sets it
   * unless `--no-revocations`): a revoked caller is refused, and every caller
   * once the stream has been silent past `maxStalenessMs`. Feed the stream's
   * events to {@link HttpAuthorizer.onRevocation}.
   */
  readonly revocations?: { readonly view: RevocationView; readonly maxStalenessMs: number };
}

const NEVER_IN_CONTEXT = new Set(['authorization', 'cookie', 'proxy-authorization', 'x-writ-client-cert']);
const METHOD = /^[A-Z]{1,16}$/;

/**
 * Resolve the path the policy sees: query dropped, dot segments resolved
 * (RFC 3986 §5.2.4), so `/hello/../admin` is decided as `/admin`.
 *
 * @example
 * normalizePath('/a/./b/../c?x=1'); // '/a/c'
 */
export function normalizePath(path: string): string | undefined {
  if (!path.startsWith('/') || path.startsWith('//')) return undefined;
  try {
    return new URL(path, 'http://writ.invalid').pathname;
  } catch {
    return undefined;
  }
}

function hostOnly(host: string | undefined): string {
  if (host === undefined || host === '') return '';
  const h = host.trim().toLowerCase();
  if (h.startsWith('[')) return h.slice(0, h.indexOf(']') + 1);
  return h.replace(/:\d+$/, '');
}

/**
 * The policy enforcement decision for one HTTP request.
 *
 * @example
 * const authz = new HttpAuthorizer({ pdp, bundles, clock: systemClock, audience: 'hello-service' });
 * const r = await authz.check({ method: 'GET', path: '/hello', host: 'api', headers: { authorization: `Bearer ${svid}` } });
 * if (r.allow) forward(r.upstreamHeaders); else reply(r.status, r.code);
 */
export class HttpAuthorizer {
  readonly #o: HttpAuthorizerOptions;
  readonly #contextHeaders: readonly string[];
  readonly #tokens = new Map<string, { readonly caller: CallerIdentity; readonly bundle: TrustBundle }>();

  constructor(options: HttpAuthorizerOptions) {
    if (options.audience === '') throw new TypeError('audience must be non-empty');
    this.#o = options;
    this.#contextHeaders = (options.contextHeaders ?? []).map((h) => h.toLowerCase()).filter((h) => !NEVER_IN_CONTEXT.has(h));
  }

  /** Authenticate the caller of `req` (X.509-SVID first, then a bearer JWT-SVID). */
  async authenticate(req: HttpCheck): Promise<CallerIdentity> {
    const cert = req.peerCertificate;
    if (cert !== undefined && (typeof cert !== 'string' || cert !== '') && (typeof cert === 'string' || cert.length > 0)) {
      const chain = typeof cert === 'string' ? decodeForwardedCertificate(cert) : cert;
      return authenticateX509Svid(chain, this.#o.bundles, this.#o.clock);
    }
    if (req.tlsVerifiedLeaf !== undefined) return authenticateTlsVerifiedLeaf(req.tlsVerifiedLeaf, this.#o.bundles, this.#o.clock);
    const authz = req.headers.authorization;
    if (authz === undefined || authz === '') throw enforcementErrors.error('ERR_ENFORCE_UNAUTHENTICATED', 'no caller identity: send a JWT-SVID bearer or an X.509-SVID');
    const token = bearerToken(authz);
    if (token === undefined) throw enforcementErrors.error('ERR_ENFORCE_CREDENTIAL_INVALID', 'the authorization header is not a bearer token');
    return this.#verifiedJwt(token);
  }

  // Verified-token cache: a JWT-SVID validated once is reused until its `exp`,
  // and only while the bundle it was validated against is still the current one
  // (a bundle refresh starts over). Keyed by the token's SHA-256.
  async #verifiedJwt(token: string): Promise<CallerIdentity> {
    const bundle = await this.#o.bundles.current();
    const key = createHash('sha256').update(token).digest('base64url');
    const hit = this.#tokens.get(key);
    if (hit !== undefined && hit.bundle === bundle && this.#o.clock.nowMs() < hit.caller.expiresAt.getTime()) return hit.caller;
    const caller = await authenticateJwtSvid(token, this.#o.audience, new StaticBundleSource(bundle), this.#o.clock);
    if (this.#tokens.size >= 10_000) {
      const oldest = this.#tokens.keys().next();
      if (oldest.done !== true) this.#tokens.delete(oldest.value);
    }
    this.#tokens.set(key, { caller, bundle });
    return caller;
  }

  /** Map an authenticated request to its AuthZEN evaluation; undefined for an unmappable request. */
  accessRequest(req: HttpCheck, caller: CallerIdentity): AccessRequest | undefined {
    const method = req.method.toUpperCase();
    const path = normalizePath(req.path);
    if (!METHOD.test(method) || path === undefined) return undefined;
    const host = hostOnly(req.host ?? req.headers.host);
    const headers: Record<string, string> = {};
    for (const h of this.#contextHeaders) {
      const v = req.headers[h];
      if (v !== undefined) headers[h] = v;
    }
    return {
      subject: { type: 'workload', id: caller.spiffeId },
      action: { name: `http:${method}` },
      resource: { type: 'resource', id: `${host}${path}` },
      context: {
        http: { method, path, ...(host === '' ? {} : { host }) },
        authn: { method: caller.method, senderConstrained: caller.method === 'x509-svid' },
        ...(this.#contextHeaders.length === 0 ? {} : { headers }),
      },
    };
  }

  /** Decide `req`; never throws for hostile input, never allows on failure. */
  async check(req: HttpCheck): Promise<CheckResult> {
    const correlationId = randomBytes(16).toString('hex');
    let caller: CallerIdentity;
    try {
      caller = await this.authenticate(req);
    } catch (e) {
      if (!enforcementErrors.is(e, 'ERR_ENFORCE_UNAUTHENTICATED', 'ERR_ENFORCE_CREDENTIAL_INVALID', 'ERR_ENFORCE_BUNDLE_UNAVAILABLE')) {
        return this.#unauthenticated('ERR_ENFORCE_CREDENTIAL_INVALID', 'caller credential could not be validated', correlationId);
      }
      return this.#unauthenticated(e.code as EnforcementErrorCode, (e as WritError).message, correlationId);
    }
    const rv = this.#o.revocations;
    // SVID callers are named by their SPIFFE ID alone (no token id or lease): a `subject-revoked` reaches them.
    const revoked = rv === undefined ? undefined : revocationDenial(rv.view, { subject: caller.spiffeId }, rv.maxStalenessMs);
    if (revoked?.status === 401) return { ...this.#unauthenticated(revoked.code, revoked.reason, correlationId, 'revoked'), caller };
    if (revoked !== undefined) return { allow: false, status: revoked.status, code: revoked.code, reason: revoked.reason, decisionId: correlationId, caller };
    const access = this.accessRequest(req, caller);
    if (access === undefined) {
      return { allow: false, status: 403, code: 'ERR_ENFORCE_REQUEST_INVALID', reason: `request \`${req.method.slice(0, 16)} ${req.path.slice(0, 128)}\` cannot be mapped to a resource`, decisionId: correlationId, caller };
    }
    const d = await this.#o.pdp.evaluate(access, { correlationId });
    if (!d.allow) return { allow: false, status: 403, code: d.code ?? 'ERR_ENFORCE_DENIED', reason: d.reason, decisionId: d.decisionId, caller };
    return {
      allow: true,
      caller,
      decisionId: d.decisionId,
      cached: d.cached,
      upstreamHeaders: { 'x-writ-spiffe-id': caller.spiffeId, 'x-writ-decision-id': d.decisionId },
    };
  }

  /**
   * An event of the revocation stream: drop the decisions cached about it (a
   * revoked subject's; all of them on `policy-changed` or a `signal`, which may
   * change any decision) and the verified tokens of a revoked subject. Only a
   * {@link CachingPdp} holds decisions.
   *
   * @example
   * new RevocationStreamClient({ url, token, clock, stalenessMs: 30_000, onEvent: (e) => authorizer.onRevocation(e) }).start();
   */
  onRevocation(e: RevocationEvent): void {
    const pdp = this.#o.pdp;
    if (e.kind === 'policy-changed' || e.kind === 'signal') {
      if (pdp instanceof CachingPdp) pdp.invalidate();
      return;
    }
    const subject = e.kind === 'subject-revoked' ? e.subject : undefined;
    if (subject === undefined) return;
    if (pdp instanceof CachingPdp) pdp.invalidate((r) => r.subject.id === subject);
    for (const [k, t] of this.#tokens) if (t.caller.spiffeId === subject) this.#tokens.delete(k);
  }

  #unauthenticated(code: EnforcementErrorCode, reason: string, decisionId: string, description?: string): CheckDenied {
    const realm = this.#o.realm ?? 'writ';
    // RFC 6750 §3: no error attribute when the request had no credential; invalid_token otherwise.
    const challenge = code === 'ERR_ENFORCE_UNAUTHENTICATED' ? `Bearer realm="${realm}"` : `Bearer realm="${realm}", error="invalid_token"${description === undefined ? '' : `, error_description="${description}"`}`;
    return { allow: false, status: 401, code, reason, decisionId, wwwAuthenticate: challenge };
  }
}

/**
 * The JSON body of a deny response: the reason code and a message, never a
 * credential.
 *
 * @example
 * res.end(JSON.stringify(denyBody(result)));
 */
export function denyBody(r: CheckDenied): { code: string; message: string; decisionId: string } {
  return { code: r.code, message: r.reason, decisionId: r.decisionId };
}
