/**
 * Credentials, served: the lease manager, tasks, the dynamic secret engines
 * from `credentials.engines`, the reaper timer, and the admin routes for
 * tasks, dynamic credentials and leases. A password leaves in exactly one
 * response body (`cache-control: no-store`) and is never logged or audited.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { AuditActor, AuditSink, Clock, WritConfig } from '../kernel/index.ts';
import { newCorrelationId } from '../kernel/index.ts';
import { KeyEncryptionKey } from '../identity/index.ts';
import { DynamicCredentials, EngineRotator, ExceptionService, LeaseManager, Reaper, TaskService, buildEngines, credentialErrors, exceptionView } from '../credentials/index.ts';
import type { EngineRotation, ExceptionInput, ExceptionSweep, Lease, LeaseState, ReaperPass, Task } from '../credentials/index.ts';
import type { Store } from '../storage/index.ts';

/** The credentials part of the running server. */
export interface ServedCredentials {
  readonly leases: LeaseManager;
  readonly tasks: TaskService;
  readonly dynamic: DynamicCredentials;
  readonly reaper: Reaper;
  /** Rotation of the engines' own admin secrets. */
  readonly rotator: EngineRotator;
  /** Legacy exceptions: registration, findings, password rotation. */
  readonly exceptions: ExceptionService;
  /** One maintenance pass: the reaper, due engine rotations, then the exception sweep (what the timer runs). */
  maintain(): Promise<{ reaper: ReaperPass; engineRotations: readonly EngineRotation[]; exceptions: ExceptionSweep }>;
  readonly dynamicTtlMs: number;
  /** What the pass at start did (reconciliation included), or why it failed. */
  readonly startPass: ReaperPass | { error: string };
  /** Where reaper failures go (the app's logger once it exists). */
  setLogger(log: { error(obj: object, msg: string): void; info(obj: object, msg: string): void }): void;
  /** Stop the reaper and close the engines' connections. */
  close(): Promise<void>;
}

/**
 * Build the lease manager, tasks, engines (whose admin secrets Writ rotates,
 * sealed under the KEK) and legacy exceptions, run one maintenance pass (the
 * reaper reconciles every engine's accounts against the leases; due
 * rotations run), and start the timer.
 *
 * @example
 * const creds = await startCredentials(config, store, audit, systemClock, kekBytes);
 */
export async function startCredentials(config: WritConfig, store: Store, audit: AuditSink, clock: Clock, kekBytes: Uint8Array): Promise<ServedCredentials> {
  const kek = new KeyEncryptionKey(kekBytes);
  const rotator = new EngineRotator({ store: store.credentials, kek, audit, clock });
  const engines = buildEngines(JSON.parse(config['credentials.engines']) as unknown, (name) => rotator.source(name));
  rotator.attach(engines);
  const exceptions = new ExceptionService({ store: store.credentials, engine: (name) => engines.find((e) => e.name === name), kek, audit, clock });
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
  const maintain = async (): Promise<{ reaper: ReaperPass; engineRotations: readonly EngineRotation[]; exceptions: ExceptionSweep }> => {
    const cid = newCorrelationId();
    const pass = await reaper.pass();
    // Rotation failures are audited and reported one by one; they never stop the pass.
    const engineRotations = await rotator.rotateDue(cid, (engine, err) => report(err, `scheduled rotation of engine ${engine}'s admin secret failed; it is retried on the timer`));
    const swept = await exceptions.sweep(cid, (id, err) => report(err, `scheduled rotation of exception ${id} failed; it is retried on the timer`));
    return { reaper: pass, engineRotations, exceptions: swept };
  };
  let startPass: ReaperPass | { error: string };
  try {
    startPass = (await maintain()).reaper;
  } catch (err) {
    // An engine that is down must not keep the control plane down: the timer retries.
    startPass = { error: (err as Error).message };
    report(err, 'the maintenance pass at start failed; it is retried on the timer');
  }
  let timer: NodeJS.Timeout | undefined;
  const every = config['credentials.reaperIntervalSeconds'];
  if (every > 0) {
    timer = setInterval(() => {
      maintain().catch((err: unknown) => report(err, 'maintenance pass failed; it is retried on the timer'));
    }, every * 1000);
    timer.unref();
  }
  return {
    leases,
    tasks,
    dynamic,
    reaper,
    rotator,
    exceptions,
    maintain,
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

  await registerExceptionRoutes(app, creds);
  await registerEngineRoutes(app, creds);
}

const excIdParams = { type: 'object', properties: { id: { type: 'string', pattern: '^exc_[0-9a-f]{24}$' } }, required: ['id'], additionalProperties: false } as const;
const textList = (max: number) => ({ type: 'array', minItems: 1, maxItems: 32, items: { type: 'string', minLength: 1, maxLength: max } }) as const;

/**
 * Legacy exceptions: register, list, show, renew, rotate, reveal the current
 * password (once per call, `no-store`), delete, and the findings list.
 *
 * @example
 * await registerExceptionRoutes(app, creds);
 */
async function registerExceptionRoutes(app: FastifyInstance, creds: ServedCredentials): Promise<void> {
  const security = [{ adminToken: [] }];
  const tags = ['credentials'];

  app.post('/admin/v1/exceptions', {
    config: { permission: 'exceptions.manage' },
    schema: {
      summary: 'register a legacy exception: a static secret writ cannot replace, owned, justified, compensated, time-boxed, with the OWASP NHI risks it accepts',
      tags,
      security,
      body: {
        type: 'object',
        properties: {
          name: { type: 'string', minLength: 1, maxLength: 63 },
          account: { type: 'string', minLength: 1, maxLength: 63 },
          system: { type: 'string', minLength: 1, maxLength: 256 },
          engine: { type: 'string', minLength: 1, maxLength: 63 },
          rotateEverySeconds: { type: 'integer', minimum: 1 },
          owner: { type: 'object', properties: { team: { type: 'string', minLength: 1, maxLength: 128 }, contact: { type: 'string', minLength: 3, maxLength: 320 } }, required: ['team', 'contact'], additionalProperties: false },
          justification: { type: 'string', minLength: 1, maxLength: 4096 },
          compensatingControls: textList(512),
          risks: { type: 'array', minItems: 1, maxItems: 10, items: { type: 'string', minLength: 1, maxLength: 16 } },
          expiresAt: { type: 'string', minLength: 10, maxLength: 40 },
        },
        required: ['name', 'account', 'owner', 'justification', 'compensatingControls', 'risks', 'expiresAt'],
        additionalProperties: false,
      },
    },
  }, async (req, reply) => {
    const exc = await creds.exceptions.create(req.body as ExceptionInput, actorOf(req), req.correlationId);
    return reply.code(201).send(exceptionView(exc));
  });

  app.get('/admin/v1/exceptions', { config: { permission: 'exceptions.read' }, schema: { summary: 'every legacy exception (never a secret)', tags, security } }, async () => {
    return { exceptions: (await creds.exceptions.list()).map(exceptionView) };
  });

  app.get('/admin/v1/exceptions/findings', { config: { permission: 'exceptions.read' }, schema: { summary: 'findings: expired legacy exceptions and exceptions whose password rotation fails', tags, security } }, async () => {
    return { findings: await creds.exceptions.findings() };
  });

  app.get('/admin/v1/exceptions/:id', { config: { permission: 'exceptions.read' }, schema: { summary: 'one legacy exception (never its secret)', tags, security, params: excIdParams } }, async (req) => {
    const { id } = req.params as { id: string };
    return exceptionView(await creds.exceptions.get(id));
  });

  app.post('/admin/v1/exceptions/:id/renew', {
    config: { permission: 'exceptions.manage' },
    schema: {
      summary: 'renew a legacy exception to a new expiry (optionally re-justified); clears its expiry finding',
      tags,
      security,
      params: excIdParams,
      body: { type: 'object', properties: { expiresAt: { type: 'string', minLength: 10, maxLength: 40 }, justification: { type: 'string', minLength: 1, maxLength: 4096 }, compensatingControls: textList(512) }, required: ['expiresAt'], additionalProperties: false },
    },
  }, async (req) => {
    const { id } = req.params as { id: string };
    const b = req.body as { expiresAt: string; justification?: string; compensatingControls?: string[] };
    return exceptionView(await creds.exceptions.renew(id, b, actorOf(req), req.correlationId));
  });

  app.post('/admin/v1/exceptions/:id/rotate', {
    config: { permission: 'exceptions.manage' },
    schema: { summary: 'rotate the exception account\'s PostgreSQL password now (the new one is sealed under the KEK; fetch it with /secret)', tags, security, params: excIdParams },
  }, async (req) => {
    const { id } = req.params as { id: string };
    return exceptionView(await creds.exceptions.rotate(id, 'admin', actorOf(req), req.correlationId));
  });

  app.post('/admin/v1/exceptions/:id/secret', {
    config: { permission: 'exceptions.reveal' },
    schema: { summary: 'the current password writ set for the exception account, for its owner to install; audited, in this response only', tags, security, params: excIdParams },
  }, async (req, reply) => {
    const { id } = req.params as { id: string };
    const { exception, password } = await creds.exceptions.reveal(id, actorOf(req), req.correlationId);
    void reply.header('cache-control', 'no-store').header('pragma', 'no-cache');
    return { id: exception.id, account: exception.account, engine: exception.engine, lastRotatedAt: exception.lastRotatedAt, password: password.reveal() };
  });

  app.delete('/admin/v1/exceptions/:id', { config: { permission: 'exceptions.manage' }, schema: { summary: 'delete a legacy exception (its rotation stops; the audit log keeps its history)', tags, security, params: excIdParams } }, async (req) => {
    const { id } = req.params as { id: string };
    return { deleted: true, exception: exceptionView(await creds.exceptions.delete(id, actorOf(req), req.correlationId)) };
  });
}

/**
 * Secret engines: rotation status and on-demand rotation of an engine's own admin secret.
 *
 * @example
 * await registerEngineRoutes(app, creds);
 */
async function registerEngineRoutes(app: FastifyInstance, creds: ServedCredentials): Promise<void> {
  const security = [{ adminToken: [] }];
  const tags = ['credentials'];
  const nameParams = { type: 'object', properties: { name: { type: 'string', minLength: 1, maxLength: 63 } }, required: ['name'], additionalProperties: false } as const;

  app.get('/admin/v1/engines', { config: { permission: 'engines.read' }, schema: { summary: 'secret engines and the rotation of their admin secrets (never a secret)', tags, security } }, async () => {
    return { engines: await creds.rotator.status() };
  });

  app.post('/admin/v1/engines/:name/rotate', {
    config: { permission: 'engines.manage' },
    schema: { summary: 'rotate the engine\'s own admin secret now (PostgreSQL: ALTER ROLE … PASSWORD; Redis: ACL SETUSER); issuance in flight continues', tags, security, params: nameParams },
  }, async (req) => {
    const { name } = req.params as { name: string };
    return creds.rotator.rotate(name, 'admin', actorOf(req), req.correlationId);
  });
}
