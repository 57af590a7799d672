/**
 * Admin API v1. Every route names the permission it needs; the hooks in
 * app.ts authenticate, authorize and audit. Bodies and query strings are
 * allow-listed by schema: unknown fields are refused.
 */
import type { FastifyInstance } from 'fastify';
import { toRecord, verifyChain, toOcsf } from '../audit/index.ts';
import type { AuditWriter } from '../audit/index.ts';
import type { AdminPrincipals, AdminPrincipal, ChangeContext } from '../governance/index.ts';
import { ADMIN_ROLES } from '../governance/index.ts';
import type { Store } from '../storage/index.ts';
import { auditErrors } from '../audit/index.ts';
import type { FastifyRequest } from 'fastify';

interface AdminRouteDeps {
  readonly store: Store;
  readonly audit: AuditWriter;
  readonly admins: AdminPrincipals;
  readonly version: string;
  readonly startedAtMs: number;
  readonly describe: () => Record<string, string | number | boolean>;
}

const errorResponse = {
  type: 'object',
  properties: { code: { type: 'string' }, message: { type: 'string' }, correlationId: { type: 'string' } },
  required: ['code', 'message', 'correlationId'],
} as const;

const principalSchema = {
  type: 'object',
  properties: {
    id: { type: 'string' },
    name: { type: 'string' },
    role: { type: 'string', enum: [...ADMIN_ROLES] },
    createdAt: { type: 'string' },
    createdBy: { type: 'string' },
    revokedAt: { type: ['string', 'null'] },
  },
  required: ['id', 'name', 'role', 'createdAt', 'createdBy', 'revokedAt'],
} as const;

const idParams = {
  type: 'object',
  properties: { id: { type: 'string', pattern: '^[0-9a-f]{16}$' } },
  required: ['id'],
  additionalProperties: false,
} as const;

const SEQ = '^(0|[1-9][0-9]{0,15})$';
const LIMIT = '^([1-9][0-9]{0,3}|10000)$';

const auditRecordSchema = {
  type: 'object',
  additionalProperties: true,
  properties: {
    seq: { type: 'integer' },
    time: { type: 'string' },
    action: { type: 'string' },
    outcome: { type: 'string' },
    correlationId: { type: 'string' },
    hash: { type: 'string' },
    prevHash: { type: 'string' },
  },
} as const;

function ctxOf(req: FastifyRequest): ChangeContext {
  const p = req.principal;
  if (p === undefined) throw new TypeError('admin route reached without a principal');
  return { actor: { type: 'admin', id: p.id, name: p.name, role: p.role, ip: req.ip }, correlationId: req.correlationId };
}

function publicPrincipal(p: AdminPrincipal): AdminPrincipal {
  return p;
}

/** Register `/admin/v1/*`. */
export async function registerAdminRoutes(app: FastifyInstance, deps: AdminRouteDeps): Promise<void> {
  const { store, admins } = deps;
  const security = [{ adminToken: [] }];
  const common = { 401: errorResponse, 403: errorResponse };

  app.get('/admin/v1/whoami', {
    config: { permission: 'status.read' },
    schema: { summary: 'the calling admin principal', tags: ['admin'], security, response: { 200: principalSchema, ...common } },
  }, async (req) => req.principal);

  app.get('/admin/v1/status', {
    config: { permission: 'status.read' },
    schema: {
      summary: 'server status: version, store, audit head, configuration (secrets hidden)',
      tags: ['admin'],
      security,
      response: {
        200: {
          type: 'object',
          properties: {
            version: { type: 'string' },
            uptimeSeconds: { type: 'number' },
            store: { type: 'object', properties: { kind: { type: 'string' }, location: { type: 'string' } } },
            audit: { type: 'object', properties: { headSeq: { type: 'integer' }, appended: { type: 'integer' }, queued: { type: 'integer' }, batches: { type: 'integer' } } },
            config: { type: 'object', additionalProperties: { type: ['string', 'number', 'boolean'] } },
          },
        },
        ...common,
      },
    },
  }, async () => {
    const head = await store.head();
    return {
      version: deps.version,
      uptimeSeconds: Math.round((Date.now() - deps.startedAtMs) / 1000),
      store: { kind: store.kind, location: store.location },
      audit: { headSeq: head.seq, appended: deps.audit.stats.appended, queued: deps.audit.stats.queued, batches: deps.audit.stats.batches },
      config: deps.describe(),
    };
  });

  // ---- principals -----------------------------------------------------------
  app.get('/admin/v1/principals', {
    config: { permission: 'principals.read' },
    schema: { summary: 'list admin principals (revoked ones included)', tags: ['admin'], security, response: { 200: { type: 'object', properties: { principals: { type: 'array', items: principalSchema } } }, ...common } },
  }, async () => ({ principals: (await admins.list()).map(publicPrincipal) }));

  app.get('/admin/v1/principals/:id', {
    config: { permission: 'principals.read' },
    schema: { summary: 'one admin principal', tags: ['admin'], security, params: idParams, response: { 200: principalSchema, 404: errorResponse, ...common } },
  }, async (req) => admins.get((req.params as { id: string }).id));

  const tokenResponse = {
    type: 'object',
    properties: { principal: principalSchema, token: { type: 'string', description: 'the credential, shown once' } },
    required: ['principal', 'token'],
  } as const;

  app.post('/admin/v1/principals', {
    config: { permission: 'principals.manage' },
    schema: {
      summary: 'create an admin principal; its credential is in the response and nowhere else',
      tags: ['admin'],
      security,
      body: {
        type: 'object',
        properties: {
          name: { type: 'string', minLength: 1, maxLength: 63 },
          role: { type: 'string', enum: [...ADMIN_ROLES] },
        },
        required: ['name', 'role'],
        additionalProperties: false,
      },
      response: { 201: tokenResponse, 400: errorResponse, 409: errorResponse, ...common },
    },
  }, async (req, reply) => {
    const body = req.body as { name: string; role: string };
    const { principal, token } = await admins.create(body, ctxOf(req));
    void reply.header('cache-control', 'no-store');
    return reply.code(201).send({ principal, token: token.reveal() });
  });

  app.post('/admin/v1/principals/:id/rotate', {
    config: { permission: 'principals.manage' },
    schema: { summary: 'issue a new credential for a principal; the old one stops working', tags: ['admin'], security, params: idParams, response: { 200: tokenResponse, 404: errorResponse, ...common } },
  }, async (req, reply) => {
    const { principal, token } = await admins.rotate((req.params as { id: string }).id, ctxOf(req));
    void reply.header('cache-control', 'no-store');
    return { principal, token: token.reveal() };
  });

  app.delete('/admin/v1/principals/:id', {
    config: { permission: 'principals.manage' },
    schema: { summary: 'revoke an admin principal (not the last admin)', tags: ['admin'], security, params: idParams, response: { 204: { type: 'null' }, 404: errorResponse, 409: errorResponse, ...common } },
  }, async (req, reply) => {
    await admins.revoke((req.params as { id: string }).id, ctxOf(req));
    return reply.code(204).send();
  });

  // ---- audit ----------------------------------------------------------------
  app.get('/admin/v1/audit/events', {
    config: { permission: 'audit.read' },
    schema: {
      summary: 'audit events in sequence order, after a cursor',
      tags: ['audit'],
      security,
      querystring: {
        type: 'object',
        properties: {
          after: { type: 'string', pattern: SEQ, description: 'only events with seq greater than this' },
          limit: { type: 'string', pattern: LIMIT, description: '1 to 10000, default 100' },
          action: { type: 'string', maxLength: 128 },
          correlationId: { type: 'string', maxLength: 128 },
          since: { type: 'string', format: 'date-time' },
        },
        additionalProperties: false,
      },
      response: { 200: { type: 'object', properties: { events: { type: 'array', items: auditRecordSchema }, next: { type: ['integer', 'null'] } } }, ...common },
    },
  }, async (req) => {
    const q = req.query as { after?: string; limit?: string; action?: string; correlationId?: string; since?: string };
    const limit = q.limit === undefined ? 100 : Number(q.limit);
    const since = q.since === undefined ? undefined : new Date(q.since);
    if (since !== undefined && Number.isNaN(since.getTime())) throw auditErrors.error('ERR_AUDIT_QUERY_INVALID', 'query `since` is not a date-time');
    const rows = await store.query({
      afterSeq: q.after === undefined ? 0 : Number(q.after),
      limit,
      ...(q.action === undefined ? {} : { action: q.action }),
      ...(q.correlationId === undefined ? {} : { correlationId: q.correlationId }),
      ...(since === undefined ? {} : { since: since.toISOString() }),
    });
    const events = rows.map(toRecord);
    return { events, next: events.length === limit ? (events[events.length - 1]?.seq ?? null) : null };
  });

  app.get('/admin/v1/audit/verify', {
    config: { permission: 'audit.verify' },
    schema: {
      summary: 'verify the whole hash chain; names the first bad sequence number',
      tags: ['audit'],
      security,
      response: {
        200: {
          type: 'object',
          properties: { ok: { type: 'boolean' }, checked: { type: 'integer' }, headSeq: { type: 'integer' }, headHash: { type: 'string' }, firstBadSeq: { type: 'integer' }, reason: { type: 'string' }, message: { type: 'string' } },
          required: ['ok', 'checked'],
        },
        ...common,
      },
    },
  }, async () => verifyChain(store));

  app.get('/admin/v1/audit/export', {
    config: { permission: 'audit.read' },
    schema: {
      summary: 'the audit log as newline-delimited JSON: Writ records (jsonl) or OCSF 1.8.0 events (ocsf)',
      tags: ['audit'],
      security,
      querystring: {
        type: 'object',
        properties: {
          format: { type: 'string', enum: ['jsonl', 'ocsf'] },
          after: { type: 'string', pattern: SEQ, description: 'only events with seq greater than this' },
          through: { type: 'string', pattern: SEQ, description: 'only events with seq up to this (pin the end of a paged export)' },
        },
        additionalProperties: false,
      },
    },
  }, async (req, reply) => {
    const q = req.query as { format?: 'jsonl' | 'ocsf'; after?: string; through?: string };
    const format = q.format ?? 'jsonl';
    let after = q.after === undefined ? 0 : Number(q.after);
    const through = q.through === undefined ? Number.MAX_SAFE_INTEGER : Number(q.through);
    const product = { name: 'Writ', version: deps.version };
    const chunks: string[] = [];
    // NOTE: buffered per request; the CLI pages with `after` for very large logs.
    for (let pages = 0; pages < 20; pages++) {
      const rows = (await store.readRange(after, 5000)).filter((r) => r.seq <= through);
      if (rows.length === 0) break;
      for (const row of rows) {
        const rec = toRecord(row);
        chunks.push(JSON.stringify(format === 'ocsf' ? toOcsf(rec, product) : rec));
      }
      after = rows[rows.length - 1]?.seq ?? after;
    }
    void reply.header('content-type', 'application/x-ndjson; charset=utf-8').header('x-writ-next-after', String(after));
    return chunks.length === 0 ? '' : `${chunks.join('\n')}\n`;
  });
}
