/**
 * The OAuth authorization server for machines: the token endpoint (RFC 8693
 * token exchange, `client_credentials` with RFC 7523 `private_key_jwt` or
 * SPIFFE client authentication, the RFC 7523 `jwt-bearer` grant),
 * introspection (RFC 7662), revocation (RFC 7009) and RFC 8414 metadata.
 *
 * INVARIANT: every access token is a lease first (ARCHITECTURE invariant 2):
 * the lease is opened before the token is signed, its id is the token's
 * `jti`, and it is activated after; introspection answers `active` only for a
 * live lease, and revocation revokes the lease.
 * INVARIANT: allow is the only explicit branch: a token is issued only after
 * every requested audience got an `allow` from the PDP.
 * INVARIANT: delegation only narrows (ARCHITECTURE invariant 5).
 */
import { X509Certificate, createHash } from 'node:crypto';
import { SignJWT, compactVerify, createLocalJWKSet, createRemoteJWKSet, decodeJwt, jwtVerify } from 'jose';
import type { JWTVerifyGetKey, JSONWebKeySet } from 'jose';
import type { AuditSink, Clock } from '../../kernel/index.ts';
import { SpiffeId } from '../../kernel/index.ts';
import type { WritError } from '../../kernel/index.ts';
import { validateJwtSvid } from '../../identity/index.ts';
import type { BundleLookup, ValidatedJwtSvid } from '../../identity/index.ts';
import type { Decision, DecisionRequest } from '../../policy/index.ts';
import type { LeaseManagerPort } from '../lease-port.ts';
import { oauthErrors } from './errors.ts';
import { FormParams, parseScope } from './params.ts';
import { DPOP_ALGS, verifyDpopProof } from './dpop.ts';
import type { DpopNonces, JtiCache } from './dpop.ts';
import { GRANT_TYPES } from './clients.ts';
import type { OAuthClient, OAuthClientStore } from './clients.ts';
import type { AccessTokenKey } from './keys.ts';

/** RFC 8693 §3 token type identifiers. */
export const TOKEN_TYPES = {
  accessToken: 'urn:ietf:params:oauth:token-type:access_token',
  jwt: 'urn:ietf:params:oauth:token-type:jwt',
  /**
   * Writ's own type for an X.509-SVID subject: `subject_token` is the
   * base64url (or base64) DER of the leaf, and it must be the TLS client
   * certificate of the connection (the handshake proved the key). RFC 8693
   * §3 lets servers define such URIs; none is registered for X.509.
   */
  x509Svid: 'urn:writ:params:oauth:token-type:x509-svid',
} as const;

/** Client assertion types (RFC 7523 §2.2, draft-ietf-oauth-spiffe-client-auth). */
export const ASSERTION_TYPES = {
  jwtBearer: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
  jwtSpiffe: 'urn:ietf:params:oauth:client-assertion-type:jwt-spiffe',
} as const;

/** The PDP as the broker sees it. */
export type DecideFn = (request: DecisionRequest) => Promise<Decision>;

/** A task a token can be bound to (the task store implements it). */
export interface TaskView {
  readonly id: string;
  readonly open: boolean;
  /** ISO-8601 deadline; tokens never outlive it. */
  readonly deadline: string;
  /** Scopes the task allows; a bound token's scope must be a subset. */
  readonly scopes: readonly string[];
  /** What the task is for (its declared intent), shown to policy as `Task.intent`. */
  readonly description?: string;
}

/** Port: read a task. */
export interface TaskLookup {
  get(taskId: string): Promise<TaskView | undefined>;
}

/** Options, checked once at construction. */
export interface AuthorizationServerOptions {
  /** The issuer URL (no trailing slash); read per request because the server learns its URL when it listens. */
  readonly issuer: () => string;
  readonly clock: Clock;
  readonly audit: AuditSink;
  readonly leases: LeaseManagerPort;
  readonly decide: DecideFn;
  /** The served trust bundles, read per request (rotation swaps them). */
  readonly bundles: () => BundleLookup;
  /** Current signing key first; older keys still verify. */
  readonly keys: () => readonly AccessTokenKey[];
  readonly clients: OAuthClientStore;
  /** Single use of assertion and proof `jti`s. */
  readonly jtis: JtiCache;
  readonly tasks?: TaskLookup;
  /** When set, DPoP proofs must carry a server nonce. */
  readonly dpopNonces?: DpopNonces;
  readonly defaultTtlSeconds?: number;
  readonly maxTtlSeconds?: number;
  readonly maxDelegationDepth?: number;
  readonly dpopIatWindowSeconds?: number;
  /** Longest lifetime accepted for a client assertion (`exp - now`). */
  readonly maxAssertionTtlSeconds?: number;
  /** Base URL of the mutual-TLS listener serving the same endpoints (RFC 8705 §5), once it listens. */
  readonly mtlsBaseUrl?: () => string | undefined;
}

/** An OAuth request as the HTTP layer hands it over. */
export interface OAuthRequest {
  readonly params: FormParams;
  /** Every `DPoP` header value sent. */
  readonly dpop?: readonly string[];
  /**
   * DER of the TLS client certificate, when the connection had one that the
   * TLS layer verified as an X.509-SVID of a trusted bundle (RFC 8705 §3).
   */
  readonly clientCertDer?: Uint8Array;
  /** The SPIFFE ID (URI SAN) of that verified certificate. */
  readonly clientCertSpiffeId?: string;
  /** The request came in on the mutual-TLS listener (`mtls_endpoint_aliases`). */
  readonly viaMtls?: boolean;
  readonly ip?: string;
  readonly correlationId: string;
}

/** How the caller authenticated. */
export interface AuthenticatedClient {
  readonly clientId: string;
  readonly method: 'private_key_jwt' | 'spiffe_jwt' | 'tls_client_auth' | 'none';
  readonly registered: OAuthClient | undefined;
  readonly spiffeId?: string;
}

/** One hop of an RFC 8693 §4.1 `act` chain, outermost (current actor) first. */
export interface ActClaim {
  readonly sub: string;
  readonly act?: ActClaim;
}

/** Claims of a Writ access token (RFC 9068 §2.2). */
export interface AccessTokenClaims {
  readonly iss: string;
  readonly sub: string;
  readonly aud: string | readonly string[];
  readonly exp: number;
  readonly iat: number;
  readonly jti: string;
  readonly client_id: string;
  readonly scope?: string;
  readonly task?: string;
  readonly act?: ActClaim;
  readonly cnf?: { readonly jkt?: string; readonly 'x5t#S256'?: string };
}

interface Subject {
  readonly id: string;
  readonly expMs: number;
  /** Scope of the previous hop when the subject token is a Writ access token. */
  readonly scope: readonly string[] | undefined;
  readonly act: ActClaim | undefined;
  readonly mayAct: unknown;
  readonly task: string | undefined;
}

/**
 * The task as the PDP sees it: its declared intent, the tools its scopes name
 * (`tools:<name>` → `Writ::Tool::"<name>"`) and its deadline.
 */
function taskEntity(task: TaskView): { uid: { type: string; id: string }; attrs: Record<string, unknown>; parents: never[] } {
  const tools = task.scopes.filter((s) => s.startsWith('tools:') && s.length > 6).map((s) => ({ __entity: { type: 'Writ::Tool', id: s.slice(6) } }));
  return { uid: { type: 'Writ::Task', id: task.id }, attrs: { intent: task.description ?? '', tools, expiresAt: Math.floor(Date.parse(task.deadline) / 1000) }, parents: [] };
}

interface IssueInput {
  readonly grantType: string;
  readonly action: 'token/exchange' | 'credential/issue';
  readonly subject: string;
  readonly client: AuthenticatedClient;
  readonly audiences: readonly string[];
  readonly scope: readonly string[];
  readonly act: ActClaim | undefined;
  readonly taskId: string | undefined;
  readonly capMs: number | undefined;
  readonly denyAs: 'ERR_OAUTH_INVALID_TARGET' | 'ERR_OAUTH_INVALID_SCOPE';
}

/** Details collected while serving one request, for its audit event. */
export interface GrantTrace {
  grantType?: string;
  /** The client the request named (authenticated or only claimed: see `authenticated`). */
  clientId?: string;
  /** True once the client proved who it is, or a subject token or assertion was verified. */
  authenticated?: boolean;
  subject?: string;
  audience?: readonly string[];
  scope?: string;
  delegation?: readonly string[];
  decisionIds: string[];
  reasons: string[];
}

const MAX_AUDIENCES = 8;
const DEFAULT_TTL_S = 300;

function scopeString(s: readonly string[]): string {
  return s.join(' ');
}

/** The chain as a flat list, current actor first. */
export function actChain(act: ActClaim | undefined): readonly string[] {
  const out: string[] = [];
  let a = act;
  while (a !== undefined && out.length < 64) {
    out.push(a.sub);
    a = a.act;
  }
  return out;
}

function parseAct(v: unknown, depth = 0): ActClaim | undefined {
  if (v === undefined) return undefined;
  if (depth > 16 || v === null || typeof v !== 'object' || Array.isArray(v)) throw oauthErrors.error('ERR_OAUTH_INVALID_GRANT', 'subject token has a malformed `act` claim');
  const r = v as Record<string, unknown>;
  if (typeof r.sub !== 'string' || r.sub === '') throw oauthErrors.error('ERR_OAUTH_INVALID_GRANT', 'subject token has an `act` without `sub`');
  const inner = parseAct(r.act, depth + 1);
  return inner === undefined ? { sub: r.sub } : { sub: r.sub, act: inner };
}

function svidError(e: unknown, what: string, code: 'ERR_OAUTH_INVALID_GRANT' | 'ERR_OAUTH_INVALID_CLIENT'): WritError {
  const detail = e instanceof Error && 'code' in e && typeof e.code === 'string' ? e.code.replace(/^ERR_IDENTITY_JWT_SVID_/, '').toLowerCase().replace(/_/g, '-') : 'invalid';
  return oauthErrors.error(code, `${what} is not a valid JWT-SVID for this server (${detail})`, { cause: e });
}

/**
 * The authorization server.
 *
 * @example
 * const as = new AuthorizationServer({ issuer: () => url, clock, audit, leases, decide, bundles: () => ca.bundle(), keys: () => [key], clients, jtis });
 * const { body } = await as.token({ params: FormParams.parse(form), correlationId });
 */
export class AuthorizationServer {
  readonly #o: AuthorizationServerOptions;
  readonly #defaultTtlMs: number;
  readonly #maxTtlMs: number;
  readonly #maxDepth: number;
  readonly #iatWindow: number;
  readonly #maxAssertionMs: number;
  readonly #remoteJwks = new Map<string, JWTVerifyGetKey>();

  constructor(o: AuthorizationServerOptions) {
    const def = o.defaultTtlSeconds ?? DEFAULT_TTL_S;
    const max = o.maxTtlSeconds ?? 3600;
    if (!Number.isInteger(def) || def < 1 || !Number.isInteger(max) || max < def) throw new TypeError('access token TTLs must be integers with 1 <= default <= max');
    const depth = o.maxDelegationDepth ?? 3;
    if (!Number.isInteger(depth) || depth < 0) throw new TypeError('the delegation depth cap must be a non-negative integer');
    this.#o = o;
    this.#defaultTtlMs = def * 1000;
    this.#maxTtlMs = max * 1000;
    this.#maxDepth = depth;
    this.#iatWindow = o.dpopIatWindowSeconds ?? 60;
    this.#maxAssertionMs = (o.maxAssertionTtlSeconds ?? 600) * 1000;
  }

  get issuer(): string {
    return this.#o.issuer();
  }

  endpoint(name: 'token' | 'introspect' | 'revoke' | 'jwks' | 'authorize'): string {
    return `${this.#o.issuer()}/oauth2/${name}`;
  }

  /** The endpoint on the mutual-TLS listener, when there is one (RFC 8705 §5). */
  mtlsEndpoint(name: 'token' | 'introspect' | 'revoke'): string | undefined {
    const base = this.#o.mtlsBaseUrl?.();
    return base === undefined ? undefined : `${base.replace(/\/+$/, '')}/oauth2/${name}`;
  }

  /** The URL a request was sent to (the mTLS alias when it came in there). */
  #endpointFor(req: { readonly viaMtls?: boolean }, name: 'token' | 'introspect' | 'revoke'): string {
    return (req.viaMtls === true ? this.mtlsEndpoint(name) : undefined) ?? this.endpoint(name);
  }

  /** The `DPoP-Nonce` to send, when nonces are on. */
  dpopNonce(): string | undefined {
    return this.#o.dpopNonces?.current();
  }

  /** The AS JWKS: access-token keys only (never JWT-SVID keys). */
  jwks(): JSONWebKeySet {
    return { keys: this.#o.keys().map((k) => ({ ...k.publicJwk })) };
  }

  /**
   * RFC 8414 metadata; `authorization_endpoint` and `response_types_supported`
   * are there because the MCP SDK requires them (STANDARDS.md §8 gotcha 4).
   */
  metadata(): Record<string, unknown> {
    const iss = this.#o.issuer();
    const mtlsToken = this.mtlsEndpoint('token');
    const mtlsIntrospect = this.mtlsEndpoint('introspect');
    const mtlsRevoke = this.mtlsEndpoint('revoke');
    const mtls = mtlsToken !== undefined && mtlsIntrospect !== undefined && mtlsRevoke !== undefined;
    // RFC 8705 §2.1: tls_client_auth (here with the URI SAN of an X.509-SVID), only where a TLS listener asks for certificates.
    const authMethods = mtls ? ['private_key_jwt', 'spiffe_jwt', 'tls_client_auth', 'none'] : ['private_key_jwt', 'spiffe_jwt', 'none'];
    const callerMethods = mtls ? ['private_key_jwt', 'spiffe_jwt', 'tls_client_auth'] : ['private_key_jwt', 'spiffe_jwt'];
    return {
      issuer: iss,
      authorization_endpoint: this.endpoint('authorize'),
      token_endpoint: this.endpoint('token'),
      jwks_uri: this.endpoint('jwks'),
      introspection_endpoint: this.endpoint('introspect'),
      revocation_endpoint: this.endpoint('revoke'),
      // No browser flows: there is no authorization endpoint behaviour to advertise.
      response_types_supported: [],
      grant_types_supported: [GRANT_TYPES.clientCredentials, GRANT_TYPES.tokenExchange, GRANT_TYPES.jwtBearer],
      token_endpoint_auth_methods_supported: authMethods,
      token_endpoint_auth_signing_alg_values_supported: ['ES256', 'ES384', 'RS256', 'PS256', 'EdDSA'],
      introspection_endpoint_auth_methods_supported: callerMethods,
      revocation_endpoint_auth_methods_supported: callerMethods,
      dpop_signing_alg_values_supported: [...DPOP_ALGS],
      // RFC 8705 §3.3 / §5: tokens requested over the TLS listener with a client certificate are bound to it.
      tls_client_certificate_bound_access_tokens: mtls,
      ...(mtls ? { mtls_endpoint_aliases: { token_endpoint: mtlsToken, introspection_endpoint: mtlsIntrospect, revocation_endpoint: mtlsRevoke } } : {}),
    };
  }

  // ---------------------------------------------------------------- client authentication

  /**
   * Authenticate the caller (RFC 7523 §2.2 `private_key_jwt`, SPIFFE
   * `jwt-spiffe`, or a bare `client_id`); `undefined` when it sent nothing.
   */
  async authenticateClient(p: FormParams, endpointUrl: string, tlsSpiffeId?: string): Promise<AuthenticatedClient | undefined> {
    const type = p.one('client_assertion_type');
    const assertion = p.one('client_assertion');
    const claimedId = p.one('client_id');
    if (type === undefined && assertion !== undefined) throw oauthErrors.error('ERR_OAUTH_INVALID_REQUEST', 'parameter `client_assertion_type` is required with `client_assertion`');
    if (type !== undefined && assertion === undefined) throw oauthErrors.error('ERR_OAUTH_INVALID_REQUEST', 'parameter `client_assertion` is required with `client_assertion_type`');
    if (type === undefined || assertion === undefined) {
      if (claimedId === undefined) return undefined;
      if (tlsSpiffeId !== undefined) return this.#tlsClient(claimedId, tlsSpiffeId);
      const registered = await this.#o.clients.get(claimedId);
      // A registered client has keys: it must prove it holds them.
      if (registered !== undefined) throw oauthErrors.error('ERR_OAUTH_INVALID_CLIENT', `client \`${claimedId.slice(0, 128)}\` must authenticate`);
      return { clientId: claimedId, method: 'none', registered: undefined };
    }
    if (type === ASSERTION_TYPES.jwtSpiffe) return this.#spiffeClient(assertion, claimedId);
    if (type === ASSERTION_TYPES.jwtBearer) return this.#privateKeyJwt(assertion, claimedId, endpointUrl);
    throw oauthErrors.error('ERR_OAUTH_INVALID_CLIENT', `client assertion type \`${type.slice(0, 128)}\` is not supported`);
  }

  /**
   * RFC 8705 §2.1 `tls_client_auth`, SPIFFE flavour (draft-ietf-oauth-spiffe-client-auth):
   * the client certificate is an X.509-SVID the TLS layer validated against
   * the bundle, and its URI SAN is the client: `client_id` is either that
   * SPIFFE ID or the id of the client registered with it (`spiffe_id`, shown
   * as `tls_client_auth_san_uri`).
   */
  async #tlsClient(claimedId: string, sanUri: string): Promise<AuthenticatedClient> {
    const byId = await this.#o.clients.get(claimedId);
    if (byId !== undefined) {
      if (byId.spiffeId === undefined) throw oauthErrors.error('ERR_OAUTH_INVALID_CLIENT', `client \`${claimedId.slice(0, 128)}\` is registered for private_key_jwt, not tls_client_auth`);
      if (byId.spiffeId !== sanUri) throw oauthErrors.error('ERR_OAUTH_INVALID_CLIENT', `the TLS client certificate's URI SAN \`${sanUri.slice(0, 256)}\` is not the one registered for client \`${claimedId.slice(0, 128)}\``);
      return { clientId: byId.clientId, method: 'tls_client_auth', registered: byId, spiffeId: sanUri };
    }
    const registered = await this.#o.clients.bySpiffeId(sanUri);
    const clientId = registered?.clientId ?? sanUri;
    if (claimedId !== clientId) throw oauthErrors.error('ERR_OAUTH_INVALID_CLIENT', `\`client_id\` \`${claimedId.slice(0, 128)}\` does not match the TLS client certificate's URI SAN \`${sanUri.slice(0, 256)}\``);
    return { clientId, method: 'tls_client_auth', registered, spiffeId: sanUri };
  }

  async #spiffeClient(assertion: string, claimedId: string | undefined): Promise<AuthenticatedClient> {
    let svid: ValidatedJwtSvid;
    try {
      // draft-ietf-oauth-spiffe-client-auth: `aud` is the issuer as its sole value.
      svid = await validateJwtSvid(assertion, this.#o.issuer(), this.#o.bundles(), this.#o.clock);
    } catch (e) {
      throw svidError(e, 'client assertion', 'ERR_OAUTH_INVALID_CLIENT');
    }
    if (svid.audience.length !== 1) throw oauthErrors.error('ERR_OAUTH_INVALID_CLIENT', 'client assertion `aud` must be the issuer as its sole value');
    const spiffeId = svid.spiffeId.toString();
    const registered = await this.#o.clients.bySpiffeId(spiffeId);
    const clientId = registered?.clientId ?? spiffeId;
    if (claimedId !== undefined && claimedId !== clientId) throw oauthErrors.error('ERR_OAUTH_INVALID_CLIENT', '`client_id` does not match the client assertion');
    return { clientId, method: 'spiffe_jwt', registered, spiffeId };
  }

  #keySet(c: OAuthClient): JWTVerifyGetKey {
    if (c.jwks !== undefined) return createLocalJWKSet(c.jwks as unknown as JSONWebKeySet);
    if (c.jwksUri === undefined) throw oauthErrors.error('ERR_OAUTH_INVALID_CLIENT', `client \`${c.clientId}\` has no keys`);
    let ks = this.#remoteJwks.get(c.jwksUri);
    if (ks === undefined) {
      ks = createRemoteJWKSet(new URL(c.jwksUri), { timeoutDuration: 3000, cooldownDuration: 30_000 });
      this.#remoteJwks.set(c.jwksUri, ks);
    }
    return ks;
  }

  async #privateKeyJwt(assertion: string, claimedId: string | undefined, endpointUrl: string): Promise<AuthenticatedClient> {
    let unverified: Record<string, unknown>;
    try {
      unverified = decodeJwt(assertion);
    } catch {
      throw oauthErrors.error('ERR_OAUTH_INVALID_CLIENT', 'client assertion is not a JWT');
    }
    const sub = unverified.sub;
    if (typeof sub !== 'string' || sub === '') throw oauthErrors.error('ERR_OAUTH_INVALID_CLIENT', 'client assertion has no `sub`');
    if (claimedId !== undefined && claimedId !== sub) throw oauthErrors.error('ERR_OAUTH_INVALID_CLIENT', '`client_id` does not match the client assertion');
    const client = await this.#o.clients.get(sub);
    if (client === undefined || client.spiffeId !== undefined) throw oauthErrors.error('ERR_OAUTH_INVALID_CLIENT', `client \`${sub.slice(0, 128)}\` is not registered for private_key_jwt`);
    let payload: Record<string, unknown>;
    try {
      // RFC 7523 §3: iss = sub = client_id; aud the issuer (rfc7523bis, gotcha 3) or the endpoint; exp required.
      const r = await jwtVerify(assertion, this.#keySet(client), {
        issuer: client.clientId,
        subject: client.clientId,
        audience: [this.#o.issuer(), this.endpoint('token'), endpointUrl, ...[this.mtlsEndpoint('token')].filter((u) => u !== undefined)],
        requiredClaims: ['exp', 'jti'],
        currentDate: this.#o.clock.now(),
        clockTolerance: 5,
      });
      payload = r.payload as Record<string, unknown>;
    } catch (cause) {
      const code = cause instanceof Error && 'code' in cause ? String(cause.code) : '';
      const why = code === 'ERR_JWT_EXPIRED' ? 'has expired' : code === 'ERR_JWT_CLAIM_VALIDATION_FAILED' ? `fails the \`${String((cause as { claim?: unknown }).claim)}\` check` : 'does not verify with the client keys';
      throw oauthErrors.error('ERR_OAUTH_INVALID_CLIENT', `client assertion ${why}`, { cause });
    }
    const nowMs = this.#o.clock.nowMs();
    const expMs = Number(payload.exp) * 1000;
    if (expMs - nowMs > this.#maxAssertionMs) throw oauthErrors.error('ERR_OAUTH_INVALID_CLIENT', 'client assertion lives too long');
    // RFC 7523 §3 item 7: the jti is single use.
    const fresh = await this.#o.jtis.remember(`pkjwt:${client.clientId}:${String(payload.jti)}`, new Date(expMs + 5000).toISOString(), new Date(nowMs).toISOString());
    if (!fresh) throw oauthErrors.error('ERR_OAUTH_INVALID_CLIENT', 'client assertion `jti` was already used');
    return { clientId: client.clientId, method: 'private_key_jwt', registered: client };
  }

  // ---------------------------------------------------------------- token endpoint

  /**
   * Serve `POST /oauth2/token`. `trace` collects what the audit event of a
   * refusal needs.
   */
  async token(req: OAuthRequest, trace: GrantTrace = { decisionIds: [], reasons: [] }): Promise<Record<string, unknown>> {
    const p = req.params;
    const grantType = p.required('grant_type');
    trace.grantType = grantType;
    const client = await this.authenticateClient(p, this.#endpointFor(req, 'token'), req.clientCertSpiffeId);
    if (client !== undefined) {
      trace.clientId = client.clientId;
      // A `client_id` with no proof (`none`) names a client; it does not authenticate one.
      if (client.method !== 'none') trace.authenticated = true;
    }
    if (client?.registered !== undefined && !client.registered.grantTypes.includes(grantType) && (Object.values(GRANT_TYPES) as string[]).includes(grantType)) {
      throw oauthErrors.error('ERR_OAUTH_UNAUTHORIZED_CLIENT', `client is not registered for grant type \`${grantType}\``);
    }
    switch (grantType) {
      case GRANT_TYPES.tokenExchange:
        return this.#tokenExchange(req, client, trace);
      case GRANT_TYPES.clientCredentials:
        return this.#clientCredentials(req, client, trace);
      case GRANT_TYPES.jwtBearer:
        return this.#jwtBearer(req, client, trace);
      default:
        throw oauthErrors.error('ERR_OAUTH_UNSUPPORTED_GRANT_TYPE', `grant type \`${grantType.slice(0, 128)}\` is not supported`);
    }
  }

  #audiences(p: FormParams): readonly string[] {
    const list = [...new Set([...p.all('audience'), ...p.all('resource')])];
    if (list.length === 0) throw oauthErrors.error('ERR_OAUTH_INVALID_TARGET', 'an `audience` or `resource` is required: tokens are audience-bound');
    if (list.length > MAX_AUDIENCES) throw oauthErrors.error('ERR_OAUTH_INVALID_TARGET', `at most ${MAX_AUDIENCES} audiences`);
    for (const a of p.all('resource')) {
      // RFC 8707 §2: an absolute URI without a fragment.
      let u: URL | undefined;
      try {
        u = new URL(a);
      } catch {
        u = undefined;
      }
      if (u === undefined || u.hash !== '') throw oauthErrors.error('ERR_OAUTH_INVALID_TARGET', '`resource` must be an absolute URI without a fragment');
    }
    return list;
  }

  #requestedTtlMs(p: FormParams): number {
    const raw = p.one('requested_expires_in');
    if (raw === undefined) return this.#defaultTtlMs;
    if (!/^[1-9]\d{0,8}$/.test(raw)) throw oauthErrors.error('ERR_OAUTH_INVALID_REQUEST', '`requested_expires_in` must be a positive integer of seconds');
    return Number(raw) * 1000;
  }

  async #validateSvid(token: string, what: string): Promise<ValidatedJwtSvid> {
    // Gotcha 3: the issuer is the audience; the token endpoint URL is accepted too.
    try {
      return await validateJwtSvid(token, this.#o.issuer(), this.#o.bundles(), this.#o.clock);
    } catch (first) {
      if (!(first instanceof Error && 'code' in first && first.code === 'ERR_IDENTITY_JWT_SVID_AUDIENCE_MISMATCH')) throw svidError(first, what, 'ERR_OAUTH_INVALID_GRANT');
      try {
        return await validateJwtSvid(token, this.endpoint('token'), this.#o.bundles(), this.#o.clock);
      } catch (e) {
        throw svidError(e, what, 'ERR_OAUTH_INVALID_GRANT');
      }
    }
  }

  async #subjectFrom(token: string, type: string, req: OAuthRequest): Promise<Subject> {
    if (type === TOKEN_TYPES.x509Svid) {
      // The caller's own X.509-SVID over mTLS: the TLS layer validated the chain against the bundle and
      // the handshake proved the key; the token names that same certificate, so the subject is explicit.
      if (req.clientCertDer === undefined || req.clientCertSpiffeId === undefined) throw oauthErrors.error('ERR_OAUTH_INVALID_GRANT', 'an X.509-SVID subject token needs that SVID as the TLS client certificate (call the mTLS endpoint)');
      const der = decodeCertToken(token);
      if (der === undefined || !der.equals(Buffer.from(req.clientCertDer))) throw oauthErrors.error('ERR_OAUTH_INVALID_GRANT', 'the X.509-SVID subject token is not the TLS client certificate of this connection');
      const cert = new X509Certificate(der);
      return { id: req.clientCertSpiffeId, expMs: cert.validToDate.getTime(), scope: undefined, act: undefined, mayAct: undefined, task: undefined };
    }
    if (type === TOKEN_TYPES.jwt) {
      const svid = await this.#validateSvid(token, 'subject token');
      return { id: svid.spiffeId.toString(), expMs: svid.expiresAt.getTime(), scope: undefined, act: undefined, mayAct: svid.claims.may_act, task: undefined };
    }
    if (type === TOKEN_TYPES.accessToken) {
      const at = await this.verifyAccessToken(token);
      if (at === undefined || !(await this.#o.leases.isLive(at.jti))) throw oauthErrors.error('ERR_OAUTH_INVALID_GRANT', 'subject token is not an active access token of this server');
      return { id: at.sub, expMs: at.exp * 1000, scope: parseScope(at.scope), act: at.act, mayAct: (at as unknown as Record<string, unknown>).may_act, task: at.task };
    }
    throw oauthErrors.error('ERR_OAUTH_UNSUPPORTED_TOKEN_TYPE', `subject token type \`${type.slice(0, 128)}\` is not supported`);
  }

  async #tokenExchange(req: OAuthRequest, client: AuthenticatedClient | undefined, trace: GrantTrace): Promise<Record<string, unknown>> {
    const p = req.params;
    // RFC 8693 §2.1: subject_token and subject_token_type are required; actor_token_type iff actor_token.
    const subjectToken = p.required('subject_token');
    const subjectType = p.required('subject_token_type');
    const actorToken = p.one('actor_token');
    const actorType = p.one('actor_token_type');
    if (actorToken !== undefined && actorType === undefined) throw oauthErrors.error('ERR_OAUTH_INVALID_REQUEST', 'parameter `actor_token_type` is required with `actor_token`');
    if (actorToken === undefined && actorType !== undefined) throw oauthErrors.error('ERR_OAUTH_INVALID_REQUEST', 'parameter `actor_token_type` is only allowed with `actor_token`');
    const requested = p.one('requested_token_type');
    if (requested !== undefined && requested !== TOKEN_TYPES.accessToken && requested !== TOKEN_TYPES.jwt) {
      throw oauthErrors.error('ERR_OAUTH_UNSUPPORTED_TOKEN_TYPE', `requested token type \`${requested.slice(0, 128)}\` is not supported`);
    }
    if (actorType !== undefined && actorType !== TOKEN_TYPES.jwt) throw oauthErrors.error('ERR_OAUTH_UNSUPPORTED_TOKEN_TYPE', `actor token type \`${actorType.slice(0, 128)}\` is not supported; send a JWT-SVID`);
    const audiences = this.#audiences(p);
    trace.audience = audiences;
    const subject = await this.#subjectFrom(subjectToken, subjectType, req);
    trace.subject = subject.id;
    trace.authenticated = true;

    let act = subject.act;
    if (actorToken !== undefined) {
      const actor = await this.#validateSvid(actorToken, 'actor token');
      const actorId = actor.spiffeId.toString();
      // RFC 8693 §4.4: when the subject token names who may act, the actor must be one of them.
      if (subject.mayAct !== undefined && !mayActAllows(subject.mayAct, actorId)) {
        trace.reasons.push('may-act-refused');
        throw oauthErrors.error('ERR_OAUTH_INVALID_GRANT', `actor \`${actorId}\` is not allowed to act for the subject (may_act)`);
      }
      // A caller that authenticated must be the actor it presents.
      if (client !== undefined && client.method !== 'none' && client.spiffeId !== undefined && client.spiffeId !== actorId) {
        throw oauthErrors.error('ERR_OAUTH_INVALID_GRANT', 'the authenticated client is not the actor of the actor token');
      }
      act = act === undefined ? { sub: actorId } : { sub: actorId, act };
    }
    const chain = actChain(act);
    trace.delegation = chain;
    // Depth cap (ARCHITECTURE invariant 5).
    if (chain.length > this.#maxDepth) {
      trace.reasons.push('delegation-depth-exceeded');
      throw oauthErrors.error('ERR_OAUTH_INVALID_REQUEST', `delegation chain would be ${chain.length} hops deep; the cap is ${this.#maxDepth}`);
    }
    // Scope only narrows: a subset of the previous hop's scope.
    const requestedScope = parseScope(p.one('scope'));
    let scope: readonly string[];
    if (subject.scope !== undefined) {
      const prev = new Set(subject.scope);
      const wider = requestedScope.filter((s) => !prev.has(s));
      if (wider.length > 0) {
        trace.reasons.push('scope-widened');
        throw oauthErrors.error('ERR_OAUTH_INVALID_SCOPE', `scope \`${wider.join(' ').slice(0, 200)}\` is wider than the subject token's`);
      }
      scope = p.has('scope') ? requestedScope : subject.scope;
    } else {
      scope = requestedScope;
    }
    trace.scope = scopeString(scope);
    const taskParam = p.one('task');
    if (subject.task !== undefined && taskParam !== undefined && taskParam !== subject.task) throw oauthErrors.error('ERR_OAUTH_INVALID_GRANT', 'subject token is bound to another task');
    const out = await this.#issue(req, {
      grantType: GRANT_TYPES.tokenExchange,
      action: 'token/exchange',
      subject: subject.id,
      // An X.509-SVID subject authenticated by the TLS handshake is its own (tls_client_auth) client.
      client: client ?? (subjectType === TOKEN_TYPES.x509Svid ? { clientId: subject.id, method: 'tls_client_auth', registered: undefined, spiffeId: subject.id } : { clientId: chain[0] ?? subject.id, method: 'none', registered: undefined }),
      audiences,
      scope,
      act,
      taskId: subject.task ?? taskParam,
      capMs: subject.expMs,
      denyAs: 'ERR_OAUTH_INVALID_TARGET',
    }, trace);
    // RFC 8693 §2.2.1: issued_token_type is required.
    return { ...out, issued_token_type: TOKEN_TYPES.accessToken };
  }

  async #clientCredentials(req: OAuthRequest, client: AuthenticatedClient | undefined, trace: GrantTrace): Promise<Record<string, unknown>> {
    if (client === undefined || client.method === 'none') throw oauthErrors.error('ERR_OAUTH_INVALID_CLIENT', 'client_credentials needs client authentication (private_key_jwt, a JWT-SVID, or tls_client_auth with an X.509-SVID)');
    const p = req.params;
    const scope = parseScope(p.one('scope'));
    if (client.registered !== undefined) {
      const allowed = new Set(client.registered.scope);
      const extra = scope.filter((s) => !allowed.has(s));
      if (extra.length > 0) {
        trace.reasons.push('scope-not-registered');
        throw oauthErrors.error('ERR_OAUTH_INVALID_SCOPE', `scope \`${extra.join(' ').slice(0, 200)}\` is not registered for this client`);
      }
    }
    const audiences = this.#audiences(p);
    trace.audience = audiences;
    trace.scope = scopeString(scope);
    const subject = client.spiffeId ?? client.clientId;
    trace.subject = subject;
    return this.#issue(req, { grantType: GRANT_TYPES.clientCredentials, action: 'credential/issue', subject, client, audiences, scope, act: undefined, taskId: p.one('task'), capMs: undefined, denyAs: 'ERR_OAUTH_INVALID_SCOPE' }, trace);
  }

  async #jwtBearer(req: OAuthRequest, client: AuthenticatedClient | undefined, trace: GrantTrace): Promise<Record<string, unknown>> {
    const p = req.params;
    // RFC 7523 §2.1: the assertion is a JWT; here a JWT-SVID whose aud is this issuer.
    const svid = await this.#validateSvid(p.required('assertion'), 'assertion');
    const subject = svid.spiffeId.toString();
    trace.subject = subject;
    trace.authenticated = true;
    const scope = parseScope(p.one('scope'));
    const audiences = this.#audiences(p);
    trace.audience = audiences;
    trace.scope = scopeString(scope);
    return this.#issue(req, {
      grantType: GRANT_TYPES.jwtBearer,
      action: 'credential/issue',
      subject,
      client: client ?? { clientId: subject, method: 'none', registered: undefined },
      audiences,
      scope,
      act: undefined,
      taskId: p.one('task'),
      capMs: svid.expiresAt.getTime(),
      denyAs: 'ERR_OAUTH_INVALID_SCOPE',
    }, trace);
  }

  async #binding(req: OAuthRequest): Promise<{ cnf: AccessTokenClaims['cnf']; tokenType: 'DPoP' | 'Bearer' }> {
    const proofs = req.dpop ?? [];
    if (proofs.length > 1) throw oauthErrors.error('ERR_OAUTH_INVALID_DPOP_PROOF', 'DPoP proof is sent more than once');
    const proof = proofs[0];
    if (proof !== undefined) {
      const { jkt } = await verifyDpopProof(proof, { method: 'POST', url: this.#endpointFor(req, 'token'), iatWindowSeconds: this.#iatWindow, ...(this.#o.dpopNonces === undefined ? {} : { nonces: this.#o.dpopNonces }) }, this.#o.clock, this.#o.jtis);
      // RFC 9449 §6.1: the token is bound to the proof key's thumbprint.
      return { cnf: { jkt }, tokenType: 'DPoP' };
    }
    if (req.clientCertDer !== undefined) {
      // RFC 8705 §3.1: bound to the SHA-256 of the client certificate.
      return { cnf: { 'x5t#S256': createHash('sha256').update(req.clientCertDer).digest('base64url') }, tokenType: 'Bearer' };
    }
    return { cnf: undefined, tokenType: 'Bearer' };
  }

  async #issue(req: OAuthRequest, i: IssueInput, trace: GrantTrace): Promise<Record<string, unknown>> {
    const now = this.#o.clock.nowMs();
    let ttlMs = Math.min(this.#requestedTtlMs(req.params), this.#maxTtlMs);
    if (i.capMs !== undefined) ttlMs = Math.min(ttlMs, i.capMs - now);
    let task: TaskView | undefined;
    if (i.taskId !== undefined) {
      if (this.#o.tasks === undefined) throw oauthErrors.error('ERR_OAUTH_INVALID_REQUEST', 'task-bound tokens are not available on this server');
      task = await this.#o.tasks.get(i.taskId);
      if (task === undefined || !task.open) throw oauthErrors.error('ERR_OAUTH_INVALID_GRANT', `task \`${i.taskId.slice(0, 128)}\` is not open`);
      const allowed = new Set(task.scopes);
      const extra = i.scope.filter((s) => !allowed.has(s));
      if (extra.length > 0) throw oauthErrors.error('ERR_OAUTH_INVALID_SCOPE', `scope \`${extra.join(' ').slice(0, 200)}\` is not allowed by the task`);
      ttlMs = Math.min(ttlMs, Date.parse(task.deadline) - now);
    }
    if (ttlMs < 1000) throw oauthErrors.error('ERR_OAUTH_INVALID_GRANT', 'the grant expires too soon to issue a token');
    const binding = await this.#binding(req);
    const chain = actChain(i.act);

    // Every audience is a PDP decision; allow is the only explicit branch.
    const allowedAll: boolean[] = [];
    for (const aud of i.audiences) {
      const d = await this.#o.decide({
        principal: { type: 'Writ::Workload', id: i.subject },
        action: i.action,
        resource: { type: 'Writ::Service', id: aud },
        context: {
          authn: { method: i.client.method, senderConstrained: binding.cnf !== undefined },
          delegation: { depth: chain.length, actors: [...chain] },
          // May this principal get this scope, for this audience, for this task, now?
          oauth: { grantType: i.grantType, scope: [...i.scope], clientId: i.client.clientId },
          ...(task === undefined ? {} : { task: { __entity: { type: 'Writ::Task', id: task.id } } }),
        },
        entities: [
          { uid: { type: 'Writ::Workload', id: i.subject }, attrs: { spiffeId: i.subject, labels: [], legacy: false } },
          { uid: { type: 'Writ::Service', id: aud }, attrs: { internetFacing: false, legacy: false, sensitivity: 'unknown' } },
          ...(task === undefined ? [] : [taskEntity(task)]),
        ],
        correlationId: req.correlationId,
        requestedBy: 'oauth-token-endpoint',
      });
      trace.decisionIds.push(d.decisionId);
      allowedAll.push(d.decision === 'allow');
      if (d.decision !== 'allow') {
        trace.reasons.push(...d.reasons);
        throw oauthErrors.error(i.denyAs, i.denyAs === 'ERR_OAUTH_INVALID_TARGET' ? `policy does not allow a token for audience \`${aud.slice(0, 200)}\`` : `policy does not allow this scope for audience \`${aud.slice(0, 200)}\``, { reasons: d.reasons });
      }
    }
    if (allowedAll.length !== i.audiences.length || !allowedAll.every((a) => a)) throw oauthErrors.error(i.denyAs, 'policy did not allow the grant');

    // Write-ahead: the lease exists before the token does; its id is the jti.
    const lease = await this.#o.leases.open({
      kind: 'access_token',
      subject: i.subject,
      ...(i.taskId === undefined ? {} : { taskId: i.taskId }),
      audience: i.audiences.join(' '),
      ttlMs,
      maxTtlMs: ttlMs,
      handle: { clientId: i.client.clientId },
      correlationId: req.correlationId,
    });
    const expMs = Math.min(now + ttlMs, Date.parse(lease.expiresAt));
    const key = this.#o.keys()[0];
    if (key === undefined) throw new TypeError('the authorization server has no signing key');
    const iat = Math.floor(now / 1000);
    const exp = Math.floor(expMs / 1000);
    const claims: Record<string, unknown> = {
      client_id: i.client.clientId,
      ...(i.scope.length === 0 ? {} : { scope: scopeString(i.scope) }),
      ...(i.taskId === undefined ? {} : { task: i.taskId }),
      ...(i.act === undefined ? {} : { act: i.act }),
      ...(binding.cnf === undefined ? {} : { cnf: binding.cnf }),
    };
    let token: string;
    try {
      // RFC 9068 §2: typ at+jwt; iss exp aud sub client_id iat jti.
      token = await new SignJWT(claims)
        .setProtectedHeader({ alg: key.alg, kid: key.kid, typ: 'at+jwt' })
        .setIssuer(this.#o.issuer())
        .setSubject(i.subject)
        .setAudience(i.audiences.length === 1 ? (i.audiences[0] ?? '') : [...i.audiences])
        .setIssuedAt(iat)
        .setExpirationTime(exp)
        .setJti(lease.id)
        .sign(key.privateKey);
    } catch (cause) {
      await this.#o.leases.revoke(lease.id, 'mint-failed', req.correlationId).catch(() => undefined);
      throw oauthErrors.error('ERR_OAUTH_TEMPORARILY_UNAVAILABLE', 'could not sign the access token', { cause });
    }
    await this.#o.leases.activate(lease.id);
    await this.#o.audit.append({
      action: 'token.issued',
      actor: { type: 'workload', id: i.subject, ...(req.ip === undefined ? {} : { ip: req.ip }) },
      target: { type: 'access_token', id: lease.id },
      outcome: 'success',
      correlationId: req.correlationId,
      details: {
        grantType: i.grantType,
        clientId: i.client.clientId,
        clientAuth: i.client.method,
        subject: i.subject,
        audience: i.audiences,
        scope: scopeString(i.scope),
        delegation: chain,
        decisionIds: trace.decisionIds,
        leaseId: lease.id,
        ...(i.taskId === undefined ? {} : { taskId: i.taskId }),
        binding: binding.cnf === undefined ? 'none' : binding.tokenType === 'DPoP' ? 'dpop' : 'mtls',
        expiresAt: new Date(exp * 1000).toISOString(),
      },
    });
    return {
      access_token: token,
      token_type: binding.tokenType,
      expires_in: Math.max(0, exp - iat),
      ...(i.scope.length === 0 ? {} : { scope: scopeString(i.scope) }),
    };
  }

  // ---------------------------------------------------------------- introspection and revocation

  /**
   * Verify a token this server issued: signature with an AS key, `typ`
   * at+jwt, `iss`; `undefined` for anything else. Expiry is checked unless
   * `ignoreExpiry` (revocation accepts expired tokens).
   */
  async verifyAccessToken(token: string, ignoreExpiry = false): Promise<AccessTokenClaims | undefined> {
    if (typeof token !== 'string' || token.length > 16_384) return undefined;
    const parts = token.split('.');
    if (parts.length !== 3) return undefined;
    let header: Record<string, unknown>;
    try {
      header = JSON.parse(Buffer.from(parts[0] ?? '', 'base64url').toString('utf8')) as Record<string, unknown>;
    } catch {
      return undefined;
    }
    if (header === null || typeof header !== 'object' || header.typ !== 'at+jwt' || header.alg !== 'ES256') return undefined;
    const key = this.#o.keys().find((k) => k.kid === header.kid);
    if (key === undefined) return undefined;
    let claims: Record<string, unknown>;
    try {
      const v = await compactVerify(token, key.publicKey, { algorithms: ['ES256'] });
      claims = JSON.parse(Buffer.from(v.payload).toString('utf8')) as Record<string, unknown>;
    } catch {
      return undefined;
    }
    if (claims.iss !== this.#o.issuer() || typeof claims.sub !== 'string' || typeof claims.jti !== 'string' || typeof claims.exp !== 'number' || typeof claims.iat !== 'number' || typeof claims.client_id !== 'string') return undefined;
    if (!ignoreExpiry && this.#o.clock.nowMs() >= claims.exp * 1000) return undefined;
    let act: ActClaim | undefined;
    try {
      act = parseAct(claims.act);
    } catch {
      return undefined;
    }
    return { ...(claims as unknown as AccessTokenClaims), ...(act === undefined ? {} : { act }) };
  }

  async #callerOf(req: OAuthRequest, endpoint: 'introspect' | 'revoke'): Promise<AuthenticatedClient> {
    const c = await this.authenticateClient(req.params, this.#endpointFor(req, endpoint), req.clientCertSpiffeId);
    // RFC 7662 §2.1 / RFC 7009 §2.1: the caller authenticates.
    if (c === undefined || c.method === 'none') throw oauthErrors.error('ERR_OAUTH_INVALID_CLIENT', `${endpoint === 'introspect' ? 'introspection' : 'revocation'} needs client authentication`);
    return c;
  }

  /**
   * `POST /oauth2/introspect` (RFC 7662 §2.2): an inactive, unknown or
   * foreign token is exactly `{"active":false}`.
   */
  async introspect(req: OAuthRequest): Promise<Record<string, unknown>> {
    const p = req.params;
    await this.#callerOf(req, 'introspect');
    const token = p.required('token');
    const hint = p.one('token_type_hint');
    if (hint !== undefined && hint !== 'access_token' && hint !== 'refresh_token') throw oauthErrors.error('ERR_OAUTH_UNSUPPORTED_TOKEN_TYPE', `token type hint \`${hint.slice(0, 64)}\` is not supported`);
    const at = await this.verifyAccessToken(token);
    if (at === undefined || !(await this.#o.leases.isLive(at.jti))) return { active: false };
    return {
      active: true,
      iss: at.iss,
      sub: at.sub,
      aud: at.aud,
      client_id: at.client_id,
      ...(at.scope === undefined ? {} : { scope: at.scope }),
      token_type: at.cnf?.jkt !== undefined ? 'DPoP' : 'Bearer',
      exp: at.exp,
      iat: at.iat,
      nbf: at.iat,
      jti: at.jti,
      ...(at.cnf === undefined ? {} : { cnf: at.cnf }),
      ...(at.act === undefined ? {} : { act: at.act }),
      ...(at.task === undefined ? {} : { task: at.task }),
    };
  }

  /**
   * `POST /oauth2/revoke` (RFC 7009 §2.2): 200 for unknown tokens; a token
   * of this server issued to the caller revokes its lease.
   */
  async revoke(req: OAuthRequest): Promise<void> {
    const p = req.params;
    const caller = await this.#callerOf(req, 'revoke');
    const token = p.required('token');
    const hint = p.one('token_type_hint');
    if (hint !== undefined && hint !== 'access_token' && hint !== 'refresh_token') throw oauthErrors.error('ERR_OAUTH_UNSUPPORTED_TOKEN_TYPE', `token type hint \`${hint.slice(0, 64)}\` is not supported`);
    const at = await this.verifyAccessToken(token, true);
    if (at === undefined) return;
    // RFC 7009 §2.1: only the client the token was issued to (or its subject) may revoke it.
    if (at.client_id !== caller.clientId && at.sub !== (caller.spiffeId ?? caller.clientId)) {
      throw oauthErrors.error('ERR_OAUTH_INVALID_REQUEST', 'the token was not issued to this client');
    }
    const lease = await this.#o.leases.revoke(at.jti, 'revoked-by-client', req.correlationId);
    await this.#o.audit.append({
      action: 'token.revoked',
      actor: { type: 'workload', id: caller.spiffeId ?? caller.clientId, ...(req.ip === undefined ? {} : { ip: req.ip }) },
      target: { type: 'access_token', id: at.jti },
      outcome: 'success',
      correlationId: req.correlationId,
      details: { clientId: caller.clientId, subject: at.sub, leaseId: at.jti, leaseState: lease?.state ?? 'unknown' },
    });
  }
}

/** DER bytes of an X.509-SVID subject token (base64url or base64, no PEM armour), or undefined. */
function decodeCertToken(token: string): Buffer | undefined {
  if (token.length > 16_384 || !/^[A-Za-z0-9+/_-]+={0,2}$/.test(token)) return undefined;
  const der = Buffer.from(token.replace(/-/g, '+').replace(/_/g, '/'), 'base64');
  return der.length === 0 ? undefined : der;
}

function mayActAllows(mayAct: unknown, actorId: string): boolean {
  if (mayAct === null || typeof mayAct !== 'object' || Array.isArray(mayAct)) return false;
  const sub = (mayAct as Record<string, unknown>).sub;
  if (typeof sub === 'string') return sub === actorId;
  if (Array.isArray(sub)) return sub.some((s) => s === actorId);
  return false;
}

/** Is `s` a workload SPIFFE ID (used by callers that map subjects to Cedar types). */
export function isWorkloadSpiffeId(s: string): boolean {
  const id = SpiffeId.tryParse(s);
  return id !== undefined && !id.isTrustDomainId();
}
