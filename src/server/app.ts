/**
 * The HTTP API: Fastify with a JSON schema on every route, one error shape,
 * admin calls authenticated, authorized by role and audited before they are
 * acknowledged, and the public health, readiness, metrics and OpenAPI routes.
 */
import Fastify from 'fastify';
import type { FastifyInstance, FastifyRequest, FastifyReply } from 'fastify';
import swagger from '@fastify/swagger';
import { correlationIdFrom, describeConfig, systemClock } from '../kernel/index.ts';
import type { WritConfig, AuditActor, AuditOutcome } from '../kernel/index.ts';
import { roleAllows } from '../governance/index.ts';
import type { AdminPrincipal, AdminPermission, AdminPrincipals } from '../governance/index.ts';
import type { AuditWriter } from '../audit/index.ts';
import type { Store } from '../storage/index.ts';
import { toWritError, errorBody, MAX_PATH_PARAM_LENGTH } from './http-errors.ts';
import { serverErrors } from './errors.ts';
import { governanceErrors } from '../governance/index.ts';
import { createMetrics } from './metrics.ts';
import { registerAdminRoutes } from './admin-routes.ts';
import { logRedactPaths } from './logging.ts';
import { registerPolicyRoutes } from './policy-routes.ts';
import type { PolicyService } from './policy-routes.ts';
import { registerIdentityRoutes } from './identity-routes.ts';
import type { IdentityIssuer } from '../identity/index.ts';
import { registerCredentialRoutes } from './credentials-routes.ts';
import type { ServedCredentials } from './credentials-routes.ts';
import { registerSignalRoutes } from './signals-routes.ts';
import type { SignalService } from '../signals/index.ts';
import type { SignalRouteExtras } from './signals-routes.ts';
import { registerOAuthRoutes } from './oauth-routes.ts';
import type { ServedOAuth } from './oauth-routes.ts';
import { registerClientCertCheck } from './tls-listener.ts';
import { RefusalAuditLimiter } from './refusal-limiter.ts';

/** What the app is built from (the composition root wires these). */
export interface AppDeps {
  readonly config: WritConfig;
  readonly store: Store;
  readonly audit: AuditWriter;
  readonly admins: AdminPrincipals;
  readonly version: string;
  readonly startedAtMs: number;
  /** Pino destination for logs (tests pass a stream); default stdout. */
  readonly logStream?: NodeJS.WritableStream;
  /** The policy decision point; its AuthZEN and admin routes are served when present. */
  readonly policy?: PolicyService;
  /** Workload identity (CA, entries, nodes); its routes are served when present. */
  readonly identity?: IdentityIssuer;
  /** Leases, tasks and dynamic secret engines; their admin routes are served when present. */
  readonly credentials?: ServedCredentials;
  /** Signals and the revocation bus; their routes and the PEP revocation stream are served when present. */
  readonly signals?: SignalService;
  /** The SSF push transmitter and its signer, when receivers are configured. */
  /** Shared Signals, the enforcement point registry and drills. */
  readonly signalsExtras?: SignalRouteExtras;
  /** The OAuth authorization server; its routes are served when present. */
  readonly oauth?: ServedOAuth;
  /** The TLS listener's advertised URL, once it listens (read per request). */
  readonly tls?: { readonly url: string | undefined };
}

declare module 'fastify' {
  interface FastifyRequest {
    correlationId: string;
    principal: AdminPrincipal | undefined;
  }
  interface FastifyContextConfig {
    /** Admin routes name the permission they need; public routes omit it. */
    permission?: AdminPermission;
  }
}

const REQUEST_ID = /^[\x21-\x7e]{1,128}$/;

function routeOf(req: FastifyRequest): string {
  return req.routeOptions.url ?? 'unmatched';
}

function pathOnly(url: string): string {
  const q = url.indexOf('?');
  return q === -1 ? url : url.slice(0, q);
}

function actorOf(req: FastifyRequest): AuditActor {
  const p = req.principal;
  return p === undefined ? { type: 'anonymous', id: 'anonymous', ip: req.ip } : { type: 'admin', id: p.id, name: p.name, role: p.role, ip: req.ip };
}

function outcomeOf(status: number): AuditOutcome {
  if (status < 400) return 'success';
  if (status === 401 || status === 403) return 'denied';
  return 'failure';
}

/**
 * onRoute hook: refuse to register a route under `/admin/` that names no
 * permission (programmer error, so a TypeError at start, never an open route).
 *
 * @example
 * app.addHook('onRoute', requireAdminPermission);
 */
export function requireAdminPermission(route: { url: string; method: string | string[]; config?: unknown }): void {
  const config = route.config as { permission?: unknown } | undefined;
  if (route.url.startsWith('/admin/') && config?.permission === undefined) {
    throw new TypeError(`admin route ${String(route.method)} ${route.url} declares no permission`);
  }
}

/**
 * Build the Fastify app (not yet listening).
 *
 * @example
 * const app = await buildApp(deps);
 * await app.listen({ host: '127.0.0.1', port: 7400 });
 */
export async function buildApp(deps: AppDeps): Promise<FastifyInstance> {
  const { config, audit, admins, store } = deps;
  const metrics = createMetrics(() => audit.stats);

  const app = Fastify({
    logger: {
      level: config.logLevel,
      redact: { paths: logRedactPaths, censor: '[redacted]' },
      serializers: {
        // Method and path only: query strings and headers may carry secrets.
        req: (req: { method: string; url: string; id: string }) => ({ method: req.method, path: pathOnly(req.url), correlationId: req.id }),
        res: (res: { statusCode: number }) => ({ statusCode: res.statusCode }),
      },
      ...(deps.logStream === undefined ? {} : { stream: deps.logStream }),
    },
    genReqId: (req) => {
      const tp = req.headers.traceparent;
      return correlationIdFrom(typeof tp === 'string' ? tp : undefined);
    },
    bodyLimit: config['http.bodyLimitBytes'],
    requestTimeout: config['http.requestTimeoutMs'],
    trustProxy: config['http.trustProxy'],
    return503OnClosing: true,
    forceCloseConnections: 'idle',
    ajv: { customOptions: { removeAdditional: false, coerceTypes: false, useDefaults: true, allErrors: false } },
    routerOptions: { maxParamLength: MAX_PATH_PARAM_LENGTH },
    // Errors the router raises before any route or hook runs (a malformed `%` escape, an
    // overlong path segment) get the one error shape too, not Fastify's own.
    frameworkErrors: (err, req, frameworkReply) => {
      const e = toWritError(err);
      const reply = frameworkReply as FastifyReply;
      req.log.debug({ code: e.code }, 'request refused by the router');
      void reply.code(e.status).header('x-correlation-id', req.id).send(errorBody(e, req.id));
    },
  });

  // JSON only, unless a route registers another parser for its own standard.
  app.removeContentTypeParser('text/plain');

  app.decorateRequest('correlationId', '');
  app.decorateRequest('principal', undefined);

  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: { title: 'Writ control plane API', version: deps.version, description: 'Admin and public API of the Writ control plane' },
      components: { securitySchemes: { adminToken: { type: 'http', scheme: 'bearer', description: 'admin credential `writ.<id>.<secret>`' } } },
    },
  });

  app.addHook('onRequest', async (req, reply) => {
    req.correlationId = req.id;
    void reply.header('x-correlation-id', req.id);
    const rid = req.headers['x-request-id'];
    if (typeof rid === 'string' && REQUEST_ID.test(rid)) void reply.header('x-request-id', rid);
  });

  // Before anything else: a request on the TLS listener with a client certificate that is not a
  // valid X.509-SVID is refused here (fail closed); req.clientCert holds the verified SVID otherwise.
  if (deps.identity !== undefined) registerClientCertCheck(app, deps.identity, systemClock);

  // INVARIANT: no anonymous admin access. A route under /admin/ that forgot to
  // name its permission would skip the hook below, so it is refused when it
  // is registered rather than served open.
  app.addHook('onRoute', requireAdminPermission);

  // Admin routes: authenticate, then authorize by role. Allow is the only explicit branch.
  app.addHook('onRequest', async (req) => {
    const permission = req.routeOptions.config.permission;
    if (permission === undefined) return;
    const principal = await admins.authenticate(req.headers.authorization);
    req.principal = principal;
    if (roleAllows(principal.role, permission)) return;
    throw governanceErrors.error('ERR_GOV_FORBIDDEN', `role \`${principal.role}\` lacks permission \`${permission}\``);
  });

  // Refusals of callers with no valid credential are audited within a per-source budget; the
  // rest are counted into `api.refusals.suppressed` events (see refusal-limiter.ts).
  const refusals = new RefusalAuditLimiter({
    burst: config['audit.anonymousRefusalBurst'],
    perMinute: config['audit.anonymousRefusalsPerMinute'],
    onError: (err) => app.log.error({ err }, 'could not audit the suppressed refusal counts; kept for the next try'),
  }, audit, systemClock);
  metrics.registerRefusalsSuppressed(() => refusals.suppressedTotal);
  app.addHook('onClose', async () => {
    await refusals.close().catch((err: unknown) => app.log.error({ err }, 'could not audit the suppressed refusal counts'));
  });

  // Every admin call is in the audit log before its response leaves: a caller
  // that saw a 2xx can rely on the record being durable.
  app.addHook('onSend', async (req, reply, payload) => {
    if (req.routeOptions.config.permission === undefined) return payload;
    const status = reply.statusCode;
    if (status === 401 && req.principal === undefined && !refusals.admit(req.ip, 'admin-api')) return payload;
    try {
      await audit.append({
        action: 'api.called',
        actor: actorOf(req),
        target: { type: 'api_route', id: `${req.method} ${routeOf(req)}` },
        outcome: outcomeOf(status),
        reasons: status === 401 ? ['unauthenticated'] : status === 403 ? ['role-not-permitted'] : [],
        correlationId: req.correlationId,
        details: { method: req.method, route: routeOf(req), path: pathOnly(req.url), status },
      });
      return payload;
    } catch (err) {
      req.log.error({ err }, 'audit append failed; the call is not acknowledged');
      const e = serverErrors.error('ERR_SERVER_UNAVAILABLE', 'audit log is unavailable; the call was not acknowledged');
      void reply.code(e.status).header('content-type', 'application/json; charset=utf-8');
      return JSON.stringify(errorBody(e, req.correlationId));
    }
  });

  app.addHook('onResponse', async (req, reply) => {
    const route = routeOf(req);
    metrics.httpRequests.inc({ method: req.method, route, status: String(reply.statusCode) });
    metrics.httpDuration.observe({ method: req.method, route }, reply.elapsedTime / 1000);
  });

  app.setErrorHandler(async (err, req, reply) => {
    const e = toWritError(err);
    if (e.status >= 500) req.log.error({ err, code: e.code }, 'request failed');
    else req.log.debug({ code: e.code }, 'request refused');
    if (e.code === 'ERR_GOV_UNAUTHENTICATED') void reply.header('www-authenticate', 'Bearer realm="writ-admin"');
    return reply.code(e.status).send(errorBody(e, req.correlationId || req.id));
  });

  app.setNotFoundHandler(async (req, reply) => {
    const e = serverErrors.error('ERR_SERVER_NOT_FOUND', `no route for ${req.method} \`${pathOnly(req.url).slice(0, 200)}\``);
    return reply.code(404).send(errorBody(e, req.id));
  });

  // ---- public routes --------------------------------------------------------
  const statusSchema = { type: 'object', properties: { status: { type: 'string' } }, required: ['status'] } as const;
  app.get('/healthz', { schema: { summary: 'liveness: the process answers', response: { 200: statusSchema } } }, async () => ({ status: 'ok' }));

  app.get(
    '/readyz',
    {
      schema: {
        summary: 'readiness: the store answers and the audit log accepts events',
        response: { 200: { type: 'object', properties: { status: { type: 'string' }, checks: { type: 'object', additionalProperties: { type: 'string' } }, detail: { type: 'object', additionalProperties: true } } }, 503: { type: 'object', properties: { status: { type: 'string' }, checks: { type: 'object', additionalProperties: { type: 'string' } }, detail: { type: 'object', additionalProperties: true } } } },
      },
    },
    async (_req, reply) => {
      const checks: Record<string, string> = {};
      try {
        await store.ping();
        checks.store = 'ok';
      } catch {
        checks.store = 'unavailable';
      }
      checks.audit = audit.stats.queued < config['audit.queueLimit'] ? 'ok' : 'queue-full';
      const policyReadiness = deps.policy?.readiness();
      if (policyReadiness !== undefined) checks.policy = policyReadiness.check;
      const ready = Object.values(checks).every((v) => v === 'ok');
      return reply.code(ready ? 200 : 503).send({ status: ready ? 'ready' : 'not-ready', checks, ...(policyReadiness === undefined ? {} : { detail: { policy: policyReadiness.detail } }) });
    },
  );

  if (config['metrics.enabled']) {
    app.get('/metrics', { schema: { summary: 'Prometheus metrics', hide: false } }, async (_req, reply) => {
      const body = await metrics.registry.metrics();
      return reply.header('content-type', metrics.registry.contentType).send(body);
    });
  }

  app.get('/openapi.json', { schema: { summary: 'this API as OpenAPI 3.1', hide: true } }, async () => app.swagger());

  await registerAdminRoutes(app, { ...deps, describe: () => describeConfig(config) });
  if (deps.policy !== undefined) await registerPolicyRoutes(app, { policy: deps.policy, admins, audit, metrics: metrics.registry });
  if (deps.identity !== undefined) await registerIdentityRoutes(app, deps.identity, deps.tls);
  if (deps.credentials !== undefined) await registerCredentialRoutes(app, deps.credentials);
  if (deps.signals !== undefined) await registerSignalRoutes(app, { signals: deps.signals, audit, heartbeatMs: config['revocations.heartbeatMs'], ...deps.signalsExtras });
  if (deps.oauth !== undefined) await registerOAuthRoutes(app, deps.oauth, audit, refusals);
  return app;
}

/** Re-exported for tests of the reply helpers. */
export type { FastifyReply };
