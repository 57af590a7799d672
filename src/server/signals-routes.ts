/**
 * Signals and revocations over HTTP:
 * - `POST /admin/v1/signals` accepts a typed signal (stored, audited, published);
 * - `GET /admin/v1/signals` lists them, `GET /admin/v1/signals/context` is the
 *   latest posture and risk of a subject (what the PDP sees);
 * - `POST /admin/v1/revocations` publishes a revocation on the bus;
 * - `GET /v1/revocations/stream` is the Server-Sent Events stream enforcement
 *   points follow (`revocations.subscribe`), replaying from `Last-Event-ID`.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { SIGNAL_TYPES, signalsErrors, SignalService, InProcessRevocationBus, SetSigner, SsfPushTransmitter } from '../signals/index.ts';
import type { RevocationBus, RevocationEvent, SignalType, SignalOrigin, PushReceiver, DeliveryReport } from '../signals/index.ts';
import { systemClock } from '../kernel/index.ts';
import type { AuditSink, WritConfig } from '../kernel/index.ts';
import { PostgresRevocationBus, NatsRevocationBus } from '../storage/index.ts';
import type { Store } from '../storage/index.ts';

/** What the signal routes need. */
export interface SignalRouteDeps {
  readonly signals: SignalService;
  readonly audit: AuditSink;
  /** Heartbeat period of the revocation stream. */
  readonly heartbeatMs: number;
  /** The SSF push transmitter, when receivers are configured. */
  readonly ssf?: SsfPushTransmitter;
  readonly ssfSigner?: SetSigner;
}

const errorResponse = {
  type: 'object',
  properties: { code: { type: 'string' }, message: { type: 'string' }, correlationId: { type: 'string' } },
  required: ['code', 'message', 'correlationId'],
} as const;
const common = { 400: errorResponse, 401: errorResponse, 403: errorResponse, 503: errorResponse };
const security = [{ adminToken: [] }];

const eventSchema = {
  type: 'object',
  properties: {
    id: { type: 'string' },
    cursor: { type: 'integer' },
    kind: { type: 'string' },
    subject: { type: 'string' },
    leaseId: { type: 'string' },
    tokenId: { type: 'string' },
    at: { type: 'string' },
    reason: { type: 'string' },
  },
  required: ['id', 'cursor', 'kind', 'at', 'reason'],
} as const;
const recordSchema = { type: 'object', additionalProperties: true } as const;

const CURSOR = /^(0|[1-9][0-9]{0,15})$/;

function originOf(req: FastifyRequest): SignalOrigin {
  const p = req.principal;
  if (p === undefined) throw new TypeError('admin route reached without a principal');
  return { actor: { type: 'admin', id: p.id, name: p.name, role: p.role, ip: req.ip }, source: `admin:${p.id}`, correlationId: req.correlationId };
}

/** One SSE frame. Event data is one JSON line, so no field can break the framing. */
function frame(e: RevocationEvent): string {
  return `id: ${e.cursor}\nevent: revocation\ndata: ${JSON.stringify(e)}\n\n`;
}

/** Register the signal and revocation routes. */
export async function registerSignalRoutes(app: FastifyInstance, deps: SignalRouteDeps): Promise<void> {
  const { signals } = deps;

  app.post('/admin/v1/signals', {
    config: { permission: 'signals.submit' },
    schema: {
      summary: 'accept a signal (posture, risk, credential compromised, owner offboarded, task completed, entry deleted, node evicted, policy changed); stored, audited as `signal.received` and published on the revocation bus',
      tags: ['signals'],
      security,
      // Fields are checked per signal type by parseSignal (allow-listed there).
      body: { type: 'object', properties: { type: { type: 'string', enum: [...SIGNAL_TYPES] } }, required: ['type', 'subject'] },
      response: { 201: { type: 'object', properties: { signal: recordSchema, cursor: { type: 'integer' }, reevaluation: recordSchema }, required: ['signal', 'cursor'] }, ...common },
    },
  }, async (req, reply) => {
    const { record, event, receipt } = await signals.accept(req.body, originOf(req));
    return reply.code(201).send({ signal: record, cursor: event.cursor, ...(receipt === undefined ? {} : { reevaluation: receipt }) });
  });

  app.get('/admin/v1/signals', {
    config: { permission: 'signals.read' },
    schema: {
      summary: 'signals received, newest first',
      tags: ['signals'],
      security,
      querystring: {
        type: 'object',
        properties: { subject: { type: 'string', maxLength: 2048 }, type: { type: 'string', enum: [...SIGNAL_TYPES] }, limit: { type: 'string', pattern: '^([1-9][0-9]{0,2}|1000)$' } },
        additionalProperties: false,
      },
      response: { 200: { type: 'object', properties: { signals: { type: 'array', items: recordSchema } } }, ...common },
    },
  }, async (req) => {
    const q = req.query as { subject?: string; type?: SignalType; limit?: string };
    const list = await signals.list({ ...(q.subject === undefined ? {} : { subject: q.subject }), ...(q.type === undefined ? {} : { type: q.type }), limit: q.limit === undefined ? 100 : Number(q.limit) });
    return { signals: list };
  });

  app.get('/admin/v1/signals/context', {
    config: { permission: 'signals.read' },
    schema: {
      summary: 'the latest posture and risk of a subject, as the PDP sees them (null when no signal was received)',
      tags: ['signals'],
      security,
      querystring: { type: 'object', properties: { subject: { type: 'string', minLength: 1, maxLength: 2048 } }, required: ['subject'], additionalProperties: false },
      response: { 200: { type: 'object', properties: { subject: { type: 'string' }, posture: { type: ['object', 'null'], additionalProperties: true }, risk: { type: ['object', 'null'], additionalProperties: true } } }, ...common },
    },
  }, async (req) => {
    const { subject } = req.query as { subject: string };
    const ctx = signals.context();
    return { subject, posture: (await ctx.posture(subject)) ?? null, risk: (await ctx.risk(subject)) ?? null };
  });

  app.post('/admin/v1/revocations', {
    config: { permission: 'revocations.publish' },
    schema: {
      summary: 'publish a revocation (subject, lease, token, policy change) on the bus; answered once the bus has it',
      tags: ['signals'],
      security,
      body: { type: 'object', properties: { kind: { type: 'string' } }, required: ['kind'] },
      response: { 201: eventSchema, ...common },
    },
  }, async (req, reply) => reply.code(201).send(await signals.revoke(req.body, originOf(req))));

  const { ssf, ssfSigner } = deps;
  if (ssf !== undefined && ssfSigner !== undefined) {
    // SSF §7.1: transmitter metadata at the well-known URL; `issuer` is the URL it is served under.
    app.get('/.well-known/ssf-configuration', { schema: { summary: 'Shared Signals transmitter metadata (push delivery of CAEP SETs)', tags: ['signals'] } }, async () => ssf.metadata());
    app.get('/ssf/jwks', { schema: { summary: 'the keys SETs are signed with (RS256)', tags: ['signals'] } }, async () => ssfSigner.jwks());
  }

  // Streams never go idle, so shutdown would wait its whole drain timeout for
  // them: end them first (clients resume from their cursor elsewhere).
  const open = new Set<() => void>();
  app.addHook('preClose', async () => {
    for (const end of [...open]) end();
  });

  app.get('/v1/revocations/stream', {
    config: { permission: 'revocations.subscribe' },
    schema: {
      summary: 'Server-Sent Events: every revocation after `Last-Event-ID` (or `?after=`; none: from now), then live, with a `heartbeat` event every `revocations.heartbeatMs`',
      tags: ['signals'],
      security,
      querystring: { type: 'object', properties: { after: { type: 'string', pattern: CURSOR.source } }, additionalProperties: false },
    },
  }, async (req, reply) => {
    const lastId = req.headers['last-event-id'];
    const q = req.query as { after?: string };
    const raw = typeof lastId === 'string' ? lastId : q.after;
    if (raw !== undefined && !CURSOR.test(raw)) throw signalsErrors.error('ERR_SIGNALS_CURSOR_INVALID', `cursor \`${raw.slice(0, 40)}\` is not a non-negative integer`);
    const from = raw === undefined ? undefined : Number(raw);
    // The stream never reaches onSend, so it is audited here, before the first byte.
    const origin = originOf(req);
    await deps.audit.append({
      action: 'api.called',
      actor: origin.actor,
      target: { type: 'api_route', id: 'GET /v1/revocations/stream' },
      outcome: 'success',
      correlationId: origin.correlationId,
      details: { method: 'GET', route: '/v1/revocations/stream', status: 200, fromCursor: from ?? null },
    });
    reply.hijack();
    const res = reply.raw;
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-store',
      connection: 'keep-alive',
      'x-accel-buffering': 'no',
      'x-correlation-id': req.correlationId,
    });
    let last = from ?? (await signals.bus.head());
    const heartbeat = (): void => {
      res.write(`event: heartbeat\ndata: {"cursor":${last}}\n\n`);
    };
    res.write('retry: 1000\n\n');
    const stop = await signals.bus.subscribe(last, (e) => {
      last = e.cursor;
      res.write(frame(e));
    }, { onError: (err) => req.log.warn({ err }, 'revocation stream subscription trouble; it keeps trying') });
    heartbeat();
    const timer = setInterval(heartbeat, deps.heartbeatMs);
    const end = (): void => {
      if (!open.delete(end)) return;
      clearInterval(timer);
      void stop();
      res.end();
    };
    open.add(end);
    res.once('close', end);
    req.raw.once('close', end);
  });
}

/** The signals context as the server runs it. */
export interface ServedSignals {
  readonly service: SignalService;
  readonly bus: RevocationBus;
  /** Present when `ssf.receivers` names receivers. */
  readonly ssf?: SsfPushTransmitter;
  readonly ssfSigner?: SetSigner;
  /** Once the server listens: set the SSF issuer and start pushing. */
  listening(baseUrl: string): Promise<void>;
  close(): Promise<void>;
}

function parseReceivers(json: string, env: Readonly<Record<string, string | undefined>>): PushReceiver[] {
  const fail = (m: string): Error => signalsErrors.error('ERR_SIGNALS_SSF_CONFIG', m);
  const raw = JSON.parse(json) as unknown;
  if (!Array.isArray(raw)) throw fail('option `ssf.receivers` must be a JSON array');
  return raw.map((r: unknown, i) => {
    if (typeof r !== 'object' || r === null) throw fail(`\`ssf.receivers[${i}]\` must be an object`);
    const o = r as Record<string, unknown>;
    for (const k of Object.keys(o)) if (!['endpointUrl', 'audience', 'authorizationHeaderEnv'].includes(k)) throw fail(`\`ssf.receivers[${i}]\` has unknown field \`${k.slice(0, 40)}\``);
    if (typeof o.endpointUrl !== 'string' || !/^https?:\/\/[^\s]+$/.test(o.endpointUrl)) throw fail(`\`ssf.receivers[${i}].endpointUrl\` must be an http(s) URL`);
    if (typeof o.audience !== 'string' || o.audience === '') throw fail(`\`ssf.receivers[${i}].audience\` must be a non-empty string`);
    let authorizationHeader: string | undefined;
    if (o.authorizationHeaderEnv !== undefined) {
      if (typeof o.authorizationHeaderEnv !== 'string' || !/^[A-Z][A-Z0-9_]*$/.test(o.authorizationHeaderEnv) || o.authorizationHeaderEnv.startsWith('WRIT_')) throw fail(`\`ssf.receivers[${i}].authorizationHeaderEnv\` must name an environment variable outside \`WRIT_*\``);
      authorizationHeader = env[o.authorizationHeaderEnv];
      if (authorizationHeader === undefined || authorizationHeader === '') throw fail(`environment variable \`${o.authorizationHeaderEnv}\` for \`ssf.receivers[${i}]\` is not set`);
    }
    return { endpointUrl: o.endpointUrl, audience: o.audience, ...(authorizationHeader === undefined ? {} : { authorizationHeader }) };
  });
}

/**
 * Build the revocation bus `bus.kind` names and the signal service over the store.
 *
 * @example
 * const signals = await startSignals(config, store, audit, undefined);
 */
export async function startSignals(config: WritConfig, store: Store, audit: AuditSink, pgSchema: string | undefined, env: Readonly<Record<string, string | undefined>> = {}, onDelivery?: (r: DeliveryReport) => void): Promise<ServedSignals> {
  const receivers = parseReceivers(config['ssf.receivers'], env);
  let bus: RevocationBus;
  switch (config['bus.kind']) {
    case 'memory':
      bus = new InProcessRevocationBus(systemClock);
      break;
    case 'postgres':
      if (store.kind !== 'postgres') throw signalsErrors.error('ERR_SIGNALS_BUS_CONFIG', 'option `bus.kind` `postgres` needs a PostgreSQL store (`store` = `postgres://…`)');
      bus = new PostgresRevocationBus({ url: config.store, clock: systemClock, ...(pgSchema === undefined ? {} : { schema: pgSchema }) });
      break;
    case 'nats': {
      const stream = config['bus.natsStream'];
      bus = await NatsRevocationBus.open({ url: config['bus.natsUrl'], clock: systemClock, stream, subject: stream === 'WRIT_REVOCATIONS' ? 'writ.revocations' : `writ.revocations.${stream}` });
      break;
    }
  }
  const service = new SignalService({ store: store.signals, audit, bus, clock: systemClock });
  if (receivers.length === 0) return { service, bus, listening: async () => undefined, close: () => bus.close() };
  const ssfSigner = await SetSigner.generate();
  const ssf = new SsfPushTransmitter({ bus, signer: ssfSigner, receivers, clock: systemClock, ...(onDelivery === undefined ? {} : { onDelivery }) });
  return {
    service,
    bus,
    ssf,
    ssfSigner,
    async listening(baseUrl) {
      ssf.setIssuer(baseUrl);
      await ssf.start();
    },
    async close() {
      await ssf.close();
      await bus.close();
    },
  };
}
