/**
 * Credentials, served: the lease manager, tasks, the dynamic secret engines
 * from `credentials.engines`, the reaper timer, and the admin routes for
 * tasks, dynamic credentials and leases. A password leaves in exactly one
 * response body (`cache-control: no-store`) and is never logged or audited.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { systemClock } from '../kernel/index.ts';
import type { AuditActor, AuditSink, Clock, WritConfig } from '../kernel/index.ts';
import { DynamicCredentials, LeaseManager, Reaper, TaskService, buildEngines, credentialErrors } from '../credentials/index.ts';
import type { Lease, LeaseState, ReaperPass, Task } from '../credentials/index.ts';
import type { Store } from '../storage/index.ts';

/** The credentials part of the running server. */
export interface ServedCredentials {
  readonly leases: LeaseManager;
  readonly tasks: TaskService;
  readonly dynamic: DynamicCredentials;
  readonly reaper: Reaper;
  readonly dynamicTtlMs: number;
  /** What the pass at start did (reconciliation included), or why it failed. */
  readonly startPass: ReaperPass | { error: string };
  /** Where reaper failures go (the app's logger once it exists). */
  setLogger(log: { error(obj: object, msg: string): void; info(obj: object, msg: string): void }): void;
  /** Stop the reaper and close the engines' connections. */
  close(): Promise<void>;
}

/**
 * Build the lease manager, tasks and engines, run one reaper pass (which
 * reconciles every engine's accounts against the leases), and start the timer.
 *
 * @example
 * const creds = await startCredentials(config, store, audit);
 */
export async function startCredentials(config: WritConfig, store: Store, audit: AuditSink, clock: Clock = systemClock): Promise<ServedCredentials> {
  const engines = buildEngines(JSON.parse(config['credentials.engines']) as unknown);
  const leases = new LeaseManager({
    store: store.credentials,
    tasks: store.credentials,
    audit,
    clock,
    limits: { maxTtlMs: config['credentials.maxLeaseTtlSeconds'] * 1000, maxPerIdentity: config['credentials.maxLeasesPerIdentity'], maxPerTask: config['credentials.maxLeasesPerTask'] },
  });
  const tasks = new TaskService({ store: store.credentials, leases, audit, clock, maxTtlMs: config['credentials.maxTaskTtlSeconds'] * 1000 });
  const dynamic = new DynamicCredentials(leases, engines);
  const reaper = new Reaper({ leases, tasks, dynamic, audit, clock, pendingGraceMs: config['credentials.pendingGraceSeconds'] * 1000 });
  const early: unknown[] = [];
  let log: { error(obj: object, msg: string): void; info(obj: object, msg: string): void } | undefined;
  const report = (err: unknown, msg: string): void => {
    if (log === undefined) early.push(err);
    else log.error({ err }, msg);
  };
  leases.onRevokerError = (lease, err) => report(err, `engine revocation of lease ${lease.id} failed; the reaper retries it`);
  let startPass: ReaperPass | { error: string };
  try {
    startPass = await reaper.pass();
  } catch (err) {
    // An engine that is down must not keep the control plane down: the timer retries.
    startPass = { error: (err as Error).message };
    report(err, 'the reaper pass at start failed; it is retried on the timer');
  }
  let timer: NodeJS.Timeout | undefined;
  const every = config['credentials.reaperIntervalSeconds'];
  if (every > 0) {
    timer = setInterval(() => {
      reaper.pass().catch((err: unknown) => report(err, 'reaper pass failed; it is retried on the timer'));
    }, every * 1000);
    timer.unref();
  }
  return {
    leases,
    tasks,
    dynamic,
    reaper,
    startPass,
    dynamicTtlMs: config['credentials.dynamicTtlSeconds'] * 1000,
    setLogger(l) {
      log = l;
      if (!('error' in startPass)) l.info({ reaperPass: startPass }, 'credentials: reaper pass at start');
      for (const err of early.splice(0)) l.error({ err }, 'credentials: failure before the logger existed');
    },
    async close() {
      if (timer !== undefined) clearInterval(timer);
      await dynamic.close();
    },
  };
}

// ---------------------------------------------------------------- routes

const idParams = { type: 'object', properties: { id: { type: 'string', minLength: 1, maxLength: 64 } }, required: ['id'], additionalProperties: false } as const;
const engineParams = { type: 'object', properties: { engine: { type: 'string', minLength: 1, maxLength: 63 } }, required: ['engine'], additionalProperties: false } as const;
const reason = { type: 'string', minLength: 1, maxLength: 256 } as const;

function actorOf(req: FastifyRequest): AuditActor {
  const p = req.principal;
  if (p === undefined) throw new TypeError('admin route reached without a principal');
  return { type: 'admin', id: p.id, name: p.name, role: p.role, ip: req.ip };
}

function leaseJson(l: Lease): Record<string, unknown> {
  return { id: l.id, kind: l.kind, subject: l.subject, taskId: l.taskId, audience: l.audience, state: l.state, createdAt: l.createdAt, expiresAt: l.expiresAt, maxExpiresAt: l.maxExpiresAt, revokedAt: l.revokedAt, revokeReason: l.revokeReason, handle: l.handle };
}

function taskJson(t: Task): Record<string, unknown> {
  return { ...t, scopes: [...t.scopes] };
}

/**
 * Register the admin routes for tasks, dynamic credentials and leases.
 *
 * @example
 * await registerCredentialRoutes(app, creds);
 */
export async function registerCredentialRoutes(app: FastifyInstance, creds: ServedCredentials): Promise<void> {
  const security = [{ adminToken: [] }];

  // ---- tasks -------------------------------------------------------------------
  app.post('/admin/v1/tasks', {
    config: { permission: 'tasks.manage' },
    schema: {
      summary: 'start a task (a CI run, a deployment, an agent plan) credentials can be bound to',
      tags: ['credentials'],
      security,
      body: { type: 'object', properties: { owner: { type: 'string', minLength: 1, maxLength: 2048 }, ttlSeconds: { type: 'integer', minimum: 1 }, scopes: { type: 'array', maxItems: 64, items: { type: 'string', maxLength: 256 } }, description: { type: 'string', maxLength: 1024 } }, required: ['owner', 'ttlSeconds'], additionalProperties: false },
    },
  }, async (req, reply) => {
    const b = req.body as { owner: string; ttlSeconds: number; scopes?: string[]; description?: string };
    const task = await creds.tasks.start({ owner: b.owner, ttlMs: b.ttlSeconds * 1000, ...(b.scopes === undefined ? {} : { scopes: b.scopes }), ...(b.description === undefined ? {} : { description: b.description }) }, actorOf(req), req.correlationId);
    return reply.code(201).send(taskJson(task));
  });

  app.get('/admin/v1/tasks/:id', {
    config: { permission: 'tasks.read' },
    schema: { summary: 'a task and the leases bound to it', tags: ['credentials'], security, params: idParams },
  }, async (req) => {
    const { id } = req.params as { id: string };
    const task = await creds.tasks.get(id);
    const leases = await creds.leases.list({ taskId: id, limit: 1000 });
    return { ...taskJson(task), leases: leases.map(leaseJson) };
  });

  app.post('/admin/v1/tasks/:id/complete', {
    config: { permission: 'tasks.manage' },
    schema: { summary: 'complete a task: revoke every lease bound to it; the answer is the revocation receipt', tags: ['credentials'], security, params: idParams },
  }, async (req) => {
    const { id } = req.params as { id: string };
    const receipt = await creds.tasks.complete(id, actorOf(req), req.correlationId);
    return { task: taskJson(receipt.task), revoked: receipt.revoked };
  });

  // ---- dynamic credentials --------------------------------------------------------
  app.post('/admin/v1/creds/:engine', {
    config: { permission: 'creds.issue' },
    schema: {
      summary: 'issue a dynamic credential (a PostgreSQL role or a Redis ACL user) under a lease; the password is in this response only',
      tags: ['credentials'],
      security,
      params: engineParams,
      body: { type: 'object', properties: { role: { type: 'string', minLength: 1, maxLength: 63 }, subject: { type: 'string', minLength: 1, maxLength: 2048 }, taskId: { type: 'string', minLength: 1, maxLength: 64 }, ttlSeconds: { type: 'integer', minimum: 1 } }, required: ['role'], additionalProperties: false },
    },
  }, async (req, reply) => {
    const { engine } = req.params as { engine: string };
    const b = req.body as { role: string; subject?: string; taskId?: string; ttlSeconds?: number };
    const actor = actorOf(req);
    const cred = await creds.dynamic.issue({
      engine,
      role: b.role,
      subject: b.subject ?? `admin:${actor.id}`,
      ...(b.taskId === undefined ? {} : { taskId: b.taskId }),
      ttlMs: b.ttlSeconds === undefined ? creds.dynamicTtlMs : b.ttlSeconds * 1000,
      actor,
      correlationId: req.correlationId,
    });
    void reply.header('cache-control', 'no-store').header('pragma', 'no-cache');
    return reply.code(201).send({ lease: leaseJson(cred.lease), engine, role: b.role, username: cred.username, password: cred.password.reveal(), connection: cred.connection });
  });

  // ---- leases -----------------------------------------------------------------------
  app.get('/admin/v1/leases', {
    config: { permission: 'leases.read' },
    schema: {
      summary: 'list leases by subject, subject prefix, task or state',
      tags: ['credentials'],
      security,
      querystring: { type: 'object', properties: { subject: { type: 'string', maxLength: 2048 }, prefix: { type: 'string', minLength: 1, maxLength: 2048 }, taskId: { type: 'string', maxLength: 64 }, state: { type: 'string', enum: ['pending', 'active', 'revoked', 'expired', 'live'] }, limit: { type: 'string', pattern: '^[1-9][0-9]{0,4}$', default: '1000' } }, additionalProperties: false },
    },
  }, async (req) => {
    const q = req.query as { subject?: string; prefix?: string; taskId?: string; state?: LeaseState | 'live'; limit: string };
    const states: LeaseState[] | undefined = q.state === undefined ? undefined : q.state === 'live' ? ['pending', 'active'] : [q.state];
    const leases = await creds.leases.list({ ...(q.subject === undefined ? {} : { subject: q.subject }), ...(q.prefix === undefined ? {} : { subjectPrefix: q.prefix }), ...(q.taskId === undefined ? {} : { taskId: q.taskId }), ...(states === undefined ? {} : { states }), limit: Math.min(Number(q.limit), 10_000) });
    return { leases: leases.map(leaseJson) };
  });

  app.get('/admin/v1/leases/:id', { config: { permission: 'leases.read' }, schema: { summary: 'one lease', tags: ['credentials'], security, params: idParams } }, async (req) => {
    const { id } = req.params as { id: string };
    const lease = await creds.leases.get(id);
    if (lease === undefined) throw credentialErrors.error('ERR_CRED_LEASE_NOT_FOUND', `no lease \`${id}\``);
    return leaseJson(lease);
  });

  app.post('/admin/v1/leases/:id/renew', {
    config: { permission: 'leases.manage' },
    schema: { summary: 'renew a lease, up to its maximum lifetime', tags: ['credentials'], security, params: idParams, body: { type: 'object', properties: { ttlSeconds: { type: 'integer', minimum: 1 } }, required: ['ttlSeconds'], additionalProperties: false } },
  }, async (req) => {
    const { id } = req.params as { id: string };
    const { ttlSeconds } = req.body as { ttlSeconds: number };
    return leaseJson(await creds.dynamic.renew(id, ttlSeconds * 1000, req.correlationId, actorOf(req)));
  });

  app.post('/admin/v1/leases/:id/revoke', {
    config: { permission: 'leases.manage' },
    schema: { summary: 'revoke a lease now: its credential stops working and its sessions end', tags: ['credentials'], security, params: idParams, body: { type: ['object', 'null'], properties: { reason }, additionalProperties: false } },
  }, async (req) => {
    const { id } = req.params as { id: string };
    const r = (req.body as { reason?: string } | null | undefined)?.reason ?? 'admin-revoked';
    const revoked = await creds.leases.revoke(id, r, req.correlationId, actorOf(req));
    if (revoked !== undefined) return { revoked: true, lease: leaseJson(revoked) };
    const cur = await creds.leases.get(id);
    if (cur === undefined) throw credentialErrors.error('ERR_CRED_LEASE_NOT_FOUND', `no lease \`${id}\``);
    return { revoked: false, lease: leaseJson(cur) };
  });

  app.post('/admin/v1/leases/revoke', {
    config: { permission: 'leases.manage' },
    schema: {
      summary: 'revoke every live lease of a task, a subject, or subjects under a prefix',
      tags: ['credentials'],
      security,
      body: { type: 'object', properties: { taskId: { type: 'string', minLength: 1, maxLength: 64 }, subject: { type: 'string', minLength: 1, maxLength: 2048 }, prefix: { type: 'string', maxLength: 2048 }, reason }, additionalProperties: false },
    },
  }, async (req) => {
    const b = req.body as { taskId?: string; subject?: string; prefix?: string; reason?: string };
    const given = [b.taskId, b.subject, b.prefix].filter((x) => x !== undefined).length;
    if (given !== 1) throw credentialErrors.error('ERR_CRED_REVOKE_SELECTOR_INVALID', 'name exactly one of `taskId`, `subject` or `prefix`');
    const r = b.reason ?? 'admin-revoked';
    const by = actorOf(req);
    const out = b.taskId !== undefined ? await creds.leases.revokeByTask(b.taskId, r, req.correlationId, by) : b.subject !== undefined ? await creds.leases.revokeBySubject(b.subject, r, req.correlationId, by) : await creds.leases.revokeByPrefix(b.prefix ?? '', r, req.correlationId, by);
    return { revoked: out.map(leaseJson) };
  });
}
