/**
 * The OAuth authorization server, served: RFC 8414 metadata, the AS JWKS,
 * `POST /oauth2/token`, `/oauth2/introspect`, `/oauth2/revoke` (form bodies
 * on these routes only, RFC 6749 §5.2 error bodies), and the admin routes
 * that register OAuth clients.
 *
 * Auditing: every token endpoint call ends in one event — `token.issued`
 * (written by the authorization server before the response) or
 * `token.refused` (written here) — with the PDP decision ids; never a token
 * or an assertion.
 */
import type { RefusalAuditLimiter } from './refusal-limiter.ts';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { AuditSink, Clock, WritConfig } from '../kernel/index.ts';
import { WritError, systemClock } from '../kernel/index.ts';
import type { BundleLookup } from '../identity/index.ts';
import type { Decision, DecisionRequest } from '../policy/index.ts';
import {
  AuthorizationServer,
  DpopNonces,
  FormParams,
  MemoryLeaseManager,
  clientJson,
  deriveAccessTokenKey,
  generateAccessTokenKey,
  memoryClientStore,
  normalizeClient,
  oauthErrorOf,
  oauthErrors,
} from '../credentials/index.ts';
import type { AccessTokenKey, GrantTrace, JtiCache, LeaseManagerPort, OAuthClientStore, OAuthRequest, Task, TaskLookup } from '../credentials/index.ts';
import { toWritError } from './http-errors.ts';
import { NO_CLIENT_CERT } from './tls-listener.ts';

/** The OAuth part of the running server. */
export interface ServedOAuth {
  readonly as: AuthorizationServer;
  readonly clients: OAuthClientStore;
  readonly leases: LeaseManagerPort;
  /** Set the issuer once the server knows its URL. */
  setIssuer(url: string): void;
  /** Serve the endpoints on the mutual-TLS listener too (`mtls_endpoint_aliases`, RFC 8705 §5). */
  setMtlsUrl(url: string): void;
}

/**
 * Build the authorization server: the ES256 access-token key (its own `kid`,
 * never a JWT-SVID key; derived from the KEK), the client registry and DPoP nonces.
 *
 * @example
 * const oauth = await startOAuth({ config, clock, audit, decide, bundles, jtis });
 */
export async function startOAuth(o: {
  config: WritConfig;
  clock: Clock;
  audit: AuditSink;
  decide: (r: DecisionRequest) => Promise<Decision>;
  bundles: () => BundleLookup;
  jtis: JtiCache;
  leases?: LeaseManagerPort;
  tasks?: TaskLookup;
  clients?: OAuthClientStore;
  /** Shared secret (the KEK) the access-token key is derived from; a random key per process when absent. */
  signingSecret?: Uint8Array;
}): Promise<ServedOAuth> {
  const { config } = o;
  let issuer = config.publicUrl === '' ? `http://${config.listen}` : config.publicUrl.replace(/\/+$/, '');
  // Derived from the KEK: every replica signs with the same key and a restart keeps verifying its tokens.
  const key: AccessTokenKey = o.signingSecret === undefined ? await generateAccessTokenKey() : await deriveAccessTokenKey(o.signingSecret);
  const clients = o.clients ?? memoryClientStore();
  const leases = o.leases ?? new MemoryLeaseManager(o.clock);
  let mtlsUrl: string | undefined;
  const as = new AuthorizationServer({
    issuer: () => issuer,
    clock: o.clock,
    audit: o.audit,
    leases,
    decide: o.decide,
    bundles: o.bundles,
    keys: () => [key],
    clients,
    jtis: o.jtis,
    ...(o.tasks === undefined ? {} : { tasks: o.tasks }),
    ...(config['oauth.dpopNonce'] ? { dpopNonces: new DpopNonces(o.clock, config['oauth.dpopNonceWindowSeconds']) } : {}),
    defaultTtlSeconds: config['oauth.accessTokenTtlSeconds'],
    maxTtlSeconds: config['oauth.accessTokenMaxTtlSeconds'],
    maxDelegationDepth: config['oauth.maxDelegationDepth'],
    dpopIatWindowSeconds: config['oauth.dpopIatWindowSeconds'],
    mtlsBaseUrl: () => mtlsUrl,
  });
  return {
    as,
    clients,
    leases,
    setIssuer: (url) => {
      issuer = config.publicUrl === '' ? url.replace(/\/+$/, '') : issuer;
    },
    setMtlsUrl: (url) => {
      mtlsUrl = url.replace(/\/+$/, '');
    },
  };
}

/**
 * Tasks as the token endpoint reads them: open while `active`, with their
 * deadline and allowed scopes.
 *
 * @example
 * const tasks = taskLookup(store.credentials);
 */
export function taskLookup(store: { getTask(id: string): Promise<Task | undefined> }): TaskLookup {
  return {
    get: async (id) => {
      const t = await store.getTask(id);
      return t === undefined ? undefined : { id: t.id, open: t.state === 'active', deadline: t.deadline, scopes: t.scopes, ...(t.description === undefined ? {} : { description: t.description }) };
    },
  };
}

const errorResponse = {
  type: 'object',
  properties: { code: { type: 'string' }, message: { type: 'string' }, correlationId: { type: 'string' } },
  required: ['code', 'message', 'correlationId'],
} as const;

const traces = new WeakMap<FastifyRequest, GrantTrace>();

function headerList(v: string | string[] | undefined): string[] {
  if (v === undefined) return [];
  return Array.isArray(v) ? v : [v];
}

function oauthRequest(req: FastifyRequest): OAuthRequest {
  const type = String(req.headers['content-type'] ?? '').split(';')[0]?.trim().toLowerCase();
  // RFC 6749 §3.2 / RFC 7662 §2.1 / RFC 7009 §2.1: form-encoded bodies only.
  if (type !== 'application/x-www-form-urlencoded') throw oauthErrors.error('ERR_OAUTH_INVALID_REQUEST', 'body must be `application/x-www-form-urlencoded`');
  if (req.headers.authorization !== undefined) throw oauthErrors.error('ERR_OAUTH_INVALID_CLIENT', 'client secrets (`Authorization` header) are not supported; use private_key_jwt or a JWT-SVID');
  const params = FormParams.parse(typeof req.body === 'string' ? req.body : '');
  const dpop = headerList(req.headers.dpop);
  // The TLS layer verified the client certificate as an X.509-SVID (tls-listener.ts); these routes
  // refuse an invalid one themselves, in the OAuth error shape (RFC 8705 §2: invalid_client).
  const cert = req.clientCert ?? NO_CLIENT_CERT;
  if (cert.status === 'invalid') throw oauthErrors.error('ERR_OAUTH_INVALID_CLIENT', `the TLS client certificate is not a valid X.509-SVID of a trusted trust domain (${cert.reason})`);
  return {
    params,
    ...(dpop.length === 0 ? {} : { dpop }),
    ...(cert.status === 'valid' ? { clientCertDer: cert.svid.leaf, clientCertSpiffeId: cert.svid.spiffeId.toString() } : {}),
    ...((req.raw.socket as { encrypted?: boolean }).encrypted === true ? { viaMtls: true } : {}),
    ip: req.ip,
    correlationId: req.correlationId,
  };
}

function noStore(reply: FastifyReply): FastifyReply {
  // RFC 6749 §5.1: token responses are never cached.
  return reply.header('cache-control', 'no-store').header('pragma', 'no-cache');
}

/**
 * Register the OAuth routes.
 *
 * @example
 * await registerOAuthRoutes(app, oauth, audit);
 */
export async function registerOAuthRoutes(app: FastifyInstance, oauth: ServedOAuth, audit: AuditSink, refusals?: RefusalAuditLimiter): Promise<void> {
  const { as, clients } = oauth;

  app.get('/.well-known/oauth-authorization-server', { schema: { summary: 'RFC 8414 authorization server metadata', tags: ['oauth'] } }, async () => as.metadata());
  app.get('/oauth2/jwks', { schema: { summary: 'the access-token signing keys (ES256, `use:"sig"`); JWT-SVID keys are at `/keys`', tags: ['oauth'] } }, async (_req, reply) =>
    reply.header('cache-control', 'public, max-age=300').send(as.jwks()));
  app.get('/oauth2/authorize', { schema: { summary: 'no browser flows: every request is refused with `unsupported_response_type`', tags: ['oauth'] } }, async (_req, reply) =>
    reply.code(400).send({ error: 'unsupported_response_type', error_description: 'this server issues tokens to machines at the token endpoint only' }));

  await app.register(async (scope) => {
    scope.removeAllContentTypeParsers();
    scope.addContentTypeParser('*', { parseAs: 'string' }, (_req, body, done) => done(null, body));

    scope.setErrorHandler(async (err, req, reply) => {
      const e = err instanceof WritError ? err : toWritError(err);
      const { error, status, description } = oauthErrorOf(e);
      if (status >= 500) req.log.error({ err: e.cause ?? e, code: e.code }, 'oauth request failed');
      else req.log.info({ code: e.code, error, reasons: e.reasons }, 'oauth request refused');
      const trace = traces.get(req);
      // A refusal of a caller that proved nothing (a claimed `client_id` proves nothing) is audited within its source's budget.
      const anonymous = trace !== undefined && trace.authenticated !== true;
      if (trace !== undefined && (!anonymous || refusals === undefined || refusals.admit(req.ip, 'oauth'))) {
        await audit.append({
          action: 'token.refused',
          actor: { type: trace.subject === undefined ? 'anonymous' : 'workload', id: trace.subject ?? trace.clientId ?? 'anonymous', ip: req.ip },
          outcome: trace.decisionIds.length > 0 && e.code !== 'ERR_OAUTH_TEMPORARILY_UNAVAILABLE' ? 'denied' : 'failure',
          reasons: [...new Set([...trace.reasons, error.replace(/_/g, '-')])],
          correlationId: req.correlationId,
          details: {
            error,
            code: e.code,
            ...(trace.grantType === undefined ? {} : { grantType: trace.grantType }),
            ...(trace.clientId === undefined ? {} : { clientId: trace.clientId }),
            ...(trace.subject === undefined ? {} : { subject: trace.subject }),
            ...(trace.audience === undefined ? {} : { audience: trace.audience }),
            ...(trace.scope === undefined ? {} : { scope: trace.scope }),
            ...(trace.delegation === undefined ? {} : { delegation: trace.delegation }),
            decisionIds: trace.decisionIds,
          },
        }).catch((auditErr: unknown) => req.log.error({ err: auditErr }, 'audit append of a token refusal failed'));
      }
      const nonce = as.dpopNonce();
      if (nonce !== undefined && req.routeOptions.url === '/oauth2/token') void reply.header('dpop-nonce', nonce);
      if (status === 503 || status === 429) void reply.header('retry-after', '1');
      return noStore(reply).code(status).send({ error, error_description: description });
    });

    scope.post('/oauth2/token', { config: { ownClientCertErrors: true }, schema: { summary: 'token endpoint: token exchange (RFC 8693), client_credentials, jwt-bearer (RFC 7523); DPoP (RFC 9449)', tags: ['oauth'] } }, async (req, reply) => {
      const trace: GrantTrace = { decisionIds: [], reasons: [] };
      traces.set(req, trace);
      const body = await as.token(oauthRequest(req), trace);
      const nonce = as.dpopNonce();
      if (nonce !== undefined) void reply.header('dpop-nonce', nonce);
      return noStore(reply).send(body);
    });

    scope.post('/oauth2/introspect', { config: { ownClientCertErrors: true }, schema: { summary: 'token introspection (RFC 7662); an inactive token is exactly {"active":false}', tags: ['oauth'] } }, async (req, reply) =>
      noStore(reply).send(await as.introspect(oauthRequest(req))));

    scope.post('/oauth2/revoke', { config: { ownClientCertErrors: true }, schema: { summary: 'token revocation (RFC 7009): 200 for unknown tokens; revokes the lease', tags: ['oauth'] } }, async (req, reply) => {
      await as.revoke(oauthRequest(req));
      return noStore(reply).code(200).send();
    });
  });

  // ---- admin: OAuth clients ------------------------------------------------------
  const security = [{ adminToken: [] }];
  const common = { 401: errorResponse, 403: errorResponse };
  const clientBody = {
    type: 'object',
    properties: {
      client_id: { type: 'string', maxLength: 256 },
      jwks: { type: 'object', properties: { keys: { type: 'array', maxItems: 16, items: { type: 'object' } } }, required: ['keys'], additionalProperties: false },
      jwks_uri: { type: 'string', maxLength: 2048 },
      spiffe_id: { type: 'string', maxLength: 2048 },
      scope: { type: 'string', maxLength: 4096 },
      grant_types: { type: 'array', maxItems: 3, items: { type: 'string' } },
    },
    additionalProperties: false,
  } as const;
  const idParams = { type: 'object', properties: { id: { type: 'string', maxLength: 256 } }, required: ['id'], additionalProperties: false } as const;

  app.post('/admin/v1/oauth/clients', {
    config: { permission: 'entries.manage' },
    schema: { summary: 'register an OAuth client: a JWKS or jwks_uri (private_key_jwt), or a SPIFFE ID', tags: ['oauth'], security, body: clientBody, response: { 400: errorResponse, 409: errorResponse, ...common } },
  }, async (req, reply) => {
    const client = normalizeClient(req.body, systemClock);
    if (!(await clients.insert(client))) throw oauthErrors.error('ERR_OAUTH_CLIENT_EXISTS', `client \`${client.clientId}\` or its SPIFFE ID is already registered`);
    return reply.code(201).send(clientJson(client));
  });

  app.get('/admin/v1/oauth/clients', {
    config: { permission: 'entries.read' },
    schema: { summary: 'list OAuth clients', tags: ['oauth'], security, response: { ...common } },
  }, async () => ({ clients: (await clients.list()).map(clientJson) }));

  app.delete('/admin/v1/oauth/clients/:id', {
    config: { permission: 'entries.manage' },
    schema: { summary: 'remove an OAuth client', tags: ['oauth'], security, params: idParams, response: { 204: { type: 'null' }, 404: errorResponse, ...common } },
  }, async (req, reply) => {
    const id = (req.params as { id: string }).id;
    if (!(await clients.delete(id))) throw oauthErrors.error('ERR_OAUTH_CLIENT_NOT_FOUND', `no OAuth client \`${id.slice(0, 128)}\``);
    return reply.code(204).send();
  });
}
