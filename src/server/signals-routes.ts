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
import { SIGNAL_TYPES, signalsErrors, SignalService, InProcessRevocationBus, SetSigner, SsfPushTransmitter, SsfStreams, SsfReceiver, SetRejected, DRILL_EVENT_PREFIX } from '../signals/index.ts';
import type { SecretSealer, RevocationBus, RevocationEvent, SignalType, SignalOrigin, PushReceiver, DeliveryReport, StreamCaller, StreamDeliveryReport, TrustedTransmitter, EnforcementPointStore, RevocationDrill } from '../signals/index.ts';
import { newCorrelationId, systemClock } from '../kernel/index.ts';
import type { AuditSink, WritConfig } from '../kernel/index.ts';
import { PostgresRevocationBus, NatsRevocationBus } from '../storage/index.ts';
import type { Store } from '../storage/index.ts';
import type { KeyEncryptionKey } from '../identity/index.ts';
import { openSecret, sealSecret } from '../credentials/index.ts';
import type { SealedSecret } from '../credentials/index.ts';
import { openEventStream } from './sse.ts';

/** What the signal routes need. */
export interface SignalRouteDeps {
  readonly signals: SignalService;
  readonly audit: AuditSink;
  /** Heartbeat period of the revocation stream. */
  readonly heartbeatMs: number;
  /** Shared Signals: transmitter (streams, static push receivers) and receiver. */
  readonly ssf?: ServedSsf;
  /** The enforcement point registry (`?pep=` on the stream, acknowledgements). */
  readonly points?: EnforcementPointStore;
  /** Revocation drills, once the credentials context is wired. */
  readonly drill?: () => RevocationDrill | undefined;
}

/** What `buildApp` passes through to {@link registerSignalRoutes} besides the service. */
export type SignalRouteExtras = Pick<SignalRouteDeps, 'ssf' | 'points' | 'drill'>;

/** The Shared Signals parts the routes serve. */
export interface ServedSsf {
  /** The SET signing key, made on first use. */
  readonly signer: () => Promise<SetSigner>;
  readonly streams: SsfStreams;
  readonly receiver: SsfReceiver;
  /** Static push receivers from `ssf.receivers`, when any. */
  readonly push?: SsfPushTransmitter;
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
const PEP_NAME = /^[A-Za-z0-9._-]{1,64}$/;

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

  if (deps.ssf !== undefined) registerSsfRoutes(app, deps.ssf);

  const { points } = deps;
  if (points !== undefined) {
    app.post('/v1/revocations/ack', {
      config: { permission: 'revocations.subscribe' },
      schema: {
        summary: 'an enforcement point acknowledges a revocation it applied (`denied`: its own check now denies); drills measure these',
        tags: ['signals'],
        security,
        body: { type: 'object', properties: { pep: { type: 'string' }, id: { type: 'string' }, denied: { type: 'boolean' } }, required: ['pep', 'id', 'denied'] },
      },
    }, async (req, reply) => {
      const b = req.body as { pep: unknown; id: unknown; denied: unknown };
      if (typeof b.pep !== 'string' || !PEP_NAME.test(b.pep)) throw signalsErrors.error('ERR_SIGNALS_ACK_INVALID', '`pep` must be 1-64 letters, digits, `.`, `_` or `-`');
      if (typeof b.id !== 'string' || b.id.length > 200) throw signalsErrors.error('ERR_SIGNALS_ACK_INVALID', '`id` must be a revocation event id');
      const p = req.principal;
      if (p === undefined) throw new TypeError('ack route reached without a principal');
      const at = new Date().toISOString();
      const id = `${p.id}/${b.pep}`;
      await points.touchEnforcementPoint({ id, principalId: p.id, name: b.pep, at });
      // Only drill events are kept: they are what a drill measures.
      if (b.id.startsWith(DRILL_EVENT_PREFIX)) await points.recordAck({ eventId: b.id, pepId: id, ackedAt: at, denied: b.denied === true });
      return reply.code(204).send();
    });

    app.get('/admin/v1/enforcement-points', {
      config: { permission: 'signals.read' },
      schema: { summary: 'enforcement points registered through the revocation stream, with when each was last seen', tags: ['signals'], security, response: { 200: { type: 'object', properties: { enforcementPoints: { type: 'array', items: recordSchema } } }, ...common } },
    }, async () => ({ enforcementPoints: await points.listEnforcementPoints() }));
  }

  app.post('/admin/v1/drills/revoke', {
    config: { permission: 'revocations.publish' },
    schema: {
      summary: 'revocation drill: revoke the subject (SPIFFE ID, task, token) for real, or with `canary` a credential minted for the drill, and measure until every registered enforcement point denies',
      tags: ['signals'],
      security,
      body: { type: 'object', properties: { subject: { type: 'string', minLength: 1, maxLength: 2048 }, canary: { type: 'boolean' }, timeoutMs: { type: 'integer' } }, required: ['subject'], additionalProperties: false },
      response: { 200: recordSchema, ...common },
    },
  }, async (req) => {
    const drill = deps.drill?.();
    if (drill === undefined) throw new TypeError('revocation drills are not wired in this server');
    const b = req.body as { subject: string; canary?: boolean; timeoutMs?: number };
    const o = originOf(req);
    return drill.run({ subject: b.subject, canary: b.canary === true, timeoutMs: b.timeoutMs ?? 10_000 }, o.actor, o.correlationId);
  });

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
      querystring: { type: 'object', properties: { after: { type: 'string', pattern: CURSOR.source }, pep: { type: 'string', pattern: PEP_NAME.source } }, additionalProperties: false },
    },
  }, async (req, reply) => {
    const lastId = req.headers['last-event-id'];
    const q = req.query as { after?: string; pep?: string };
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
    const res = openEventStream(reply, req.correlationId);
    let last = from ?? (await signals.bus.head());
    // Naming itself (`?pep=`) registers the enforcement point; every heartbeat refreshes it while the stream is open.
    const principalId = origin.actor.id;
    const touch = (): void => {
      if (q.pep === undefined || deps.points === undefined) return;
      deps.points.touchEnforcementPoint({ id: `${principalId}/${q.pep}`, principalId, name: q.pep, at: new Date().toISOString() }).catch((err: unknown) => req.log.warn({ err }, 'enforcement point registry write failed'));
    };
    touch();
    const heartbeat = (): void => {
      res.write(`event: heartbeat\ndata: {"cursor":${last}}\n\n`);
      touch();
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

function streamCaller(req: FastifyRequest): StreamCaller {
  const o = originOf(req);
  const p = req.principal;
  if (p === undefined) throw new TypeError('SSF route reached without a principal');
  return { id: p.id, admin: p.role === 'admin', actor: o.actor, correlationId: o.correlationId };
}

const anyObject = { type: 'object', additionalProperties: true } as const;
const streamIdQuery = { type: 'object', properties: { stream_id: { type: 'string', minLength: 1, maxLength: 128 } }, additionalProperties: false } as const;

/**
 * Shared Signals routes (SSF 1.0 §7, §8; RFC 8935; RFC 8936). Stream
 * management and poll are for receivers holding an admin credential with
 * `revocations.subscribe` (role `pep`, or `admin` who sees every stream);
 * the push receiver endpoint is authenticated by the SET's signature and the
 * `Authorization` value given to the transmitter.
 */
function registerSsfRoutes(app: FastifyInstance, ssf: ServedSsf): void {
  const { streams, receiver } = ssf;
  const tags = ['ssf'];
  // SSF §7.1: transmitter metadata; `issuer` is the URL it is served under.
  app.get('/.well-known/ssf-configuration', { schema: { summary: 'Shared Signals transmitter metadata', tags } }, async () => ({
    spec_version: '1_0',
    issuer: streams.issuer,
    jwks_uri: `${streams.issuer}/ssf/jwks`,
    ...streams.endpoints(),
    authorization_schemes: [{ spec_urn: 'urn:ietf:rfc:6749' }],
    default_subjects: 'ALL',
    critical_subject_members: ['uri', 'jwt_id', 'opaque'],
  }));
  app.get('/ssf/jwks', { schema: { summary: 'the keys SETs are signed with (RS256)', tags } }, async () => (await ssf.signer()).jwks());

  const managed = { permission: 'revocations.subscribe' as const };
  app.post('/ssf/stream', { config: managed, schema: { summary: 'create a stream (SSF §8.1.1.1); no `delivery` means poll', tags, security, body: anyObject } }, async (req, reply) => reply.code(201).send(await streams.create(streamCaller(req), req.body)));
  app.get('/ssf/stream', { config: managed, schema: { summary: 'read one stream (`stream_id`) or every stream of the caller (SSF §8.1.1.2)', tags, security, querystring: streamIdQuery } }, async (req) => streams.read(streamCaller(req), (req.query as { stream_id?: string }).stream_id));
  app.patch('/ssf/stream', { config: managed, schema: { summary: 'update a stream: only the fields given change (SSF §8.1.1.3)', tags, security, body: anyObject } }, async (req) => streams.update(streamCaller(req), req.body, false));
  app.put('/ssf/stream', { config: managed, schema: { summary: 'replace a stream configuration (SSF §8.1.1.4)', tags, security, body: anyObject } }, async (req) => streams.update(streamCaller(req), req.body, true));
  app.delete('/ssf/stream', { config: managed, schema: { summary: 'delete a stream and what is queued on it (SSF §8.1.1.5)', tags, security, querystring: { ...streamIdQuery, required: ['stream_id'] } } }, async (req, reply) => {
    await streams.remove(streamCaller(req), (req.query as { stream_id: string }).stream_id);
    return reply.code(204).send();
  });
  app.get('/ssf/status', { config: managed, schema: { summary: 'stream status (SSF §8.1.2.1)', tags, security, querystring: { ...streamIdQuery, required: ['stream_id'] } } }, async (req) => streams.status(streamCaller(req), (req.query as { stream_id: string }).stream_id));
  app.post('/ssf/status', { config: managed, schema: { summary: 'enable, pause or disable a stream; emits a stream-updated SET (SSF §8.1.2.2)', tags, security, body: anyObject } }, async (req) => streams.setStatus(streamCaller(req), req.body));
  app.post('/ssf/subjects::add', { config: managed, schema: { summary: 'add a subject back to a stream (SSF §8.1.3.2)', tags, security, body: anyObject } }, async (req, reply) => {
    await streams.subject(streamCaller(req), req.body, true);
    return reply.code(200).send({});
  });
  app.post('/ssf/subjects::remove', { config: managed, schema: { summary: 'stop sending SETs about a subject on a stream (SSF §8.1.3.3)', tags, security, body: anyObject } }, async (req, reply) => {
    await streams.subject(streamCaller(req), req.body, false);
    return reply.code(204).send();
  });
  app.post('/ssf/verify', { config: managed, schema: { summary: 'queue a verification SET carrying `state` (SSF §8.1.4.2); 429 within `min_verification_interval`', tags, security, body: anyObject } }, async (req, reply) => {
    await streams.verify(streamCaller(req), req.body);
    return reply.code(204).send();
  });
  app.post('/ssf/poll/:streamId', {
    config: managed,
    schema: { summary: 'RFC 8936 poll: acknowledge (`ack`, `setErrs`) and take queued SETs', tags, security, params: { type: 'object', properties: { streamId: { type: 'string', minLength: 1, maxLength: 128 } }, required: ['streamId'] }, body: anyObject },
  }, async (req) => streams.poll(streamCaller(req), (req.params as { streamId: string }).streamId, req.body));

  // RFC 8935 receiver: the body is one SET.
  app.addContentTypeParser('application/secevent+jwt', { parseAs: 'string', bodyLimit: 65_536 }, (_req, body, done) => done(null, body));
  app.post('/ssf/receiver', { schema: { summary: 'RFC 8935 push endpoint: CAEP/RISC SETs from configured transmitters become signals; 202, or 400 `{err, description}`', tags } }, async (req, reply) => {
    const ct = (req.headers['content-type'] ?? '').split(';')[0]?.trim().toLowerCase();
    const body = typeof req.body === 'string' ? req.body : '';
    try {
      if (ct !== 'application/secevent+jwt') throw new SetRejected('invalid_request', 'the content type must be `application/secevent+jwt`');
      await receiver.receivePush(req.headers.authorization, body, req.correlationId);
      return reply.code(202).send();
    } catch (e) {
      if (!(e instanceof SetRejected)) throw e;
      return reply.code(400).header('content-type', 'application/json; charset=utf-8').send({ err: e.err, description: e.message });
    }
  });
}

/** The signals context as the server runs it. */
export interface ServedSignals {
  readonly service: SignalService;
  readonly bus: RevocationBus;
  readonly ssf: ServedSsf;
  readonly points: EnforcementPointStore;
  /** Set once the credentials context exists. */
  setDrill(d: RevocationDrill): void;
  drill(): RevocationDrill | undefined;
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

function parseTransmitters(json: string, env: Readonly<Record<string, string | undefined>>): TrustedTransmitter[] {
  const fail = (m: string): Error => signalsErrors.error('ERR_SIGNALS_SSF_TRANSMITTERS_CONFIG', m);
  const raw = JSON.parse(json) as unknown;
  if (!Array.isArray(raw)) throw fail('option `ssf.transmitters` must be a JSON array');
  const url = (v: unknown, f: string): string => {
    if (typeof v !== 'string' || !/^https?:\/\/[^\s]+$/.test(v)) throw fail(`\`${f}\` must be an http(s) URL`);
    return v;
  };
  const secret = (v: unknown, f: string): string => {
    if (typeof v !== 'string' || !/^[A-Z][A-Z0-9_]*$/.test(v) || v.startsWith('WRIT_')) throw fail(`\`${f}\` must name an environment variable outside \`WRIT_*\``);
    const value = env[v];
    if (value === undefined || value === '') throw fail(`environment variable \`${v}\` for \`${f}\` is not set`);
    return value;
  };
  return raw.map((r: unknown, i) => {
    const at = `ssf.transmitters[${i}]`;
    if (typeof r !== 'object' || r === null || Array.isArray(r)) throw fail(`\`${at}\` must be an object`);
    const o = r as Record<string, unknown>;
    for (const k of Object.keys(o)) if (!['issuer', 'jwksUri', 'audience', 'pushAuthorizationEnv', 'push', 'pollUrl', 'pollAuthorizationEnv', 'pollIntervalMs'].includes(k)) throw fail(`\`${at}\` has unknown field \`${k.slice(0, 40)}\``);
    if (typeof o.issuer !== 'string' || o.issuer === '') throw fail(`\`${at}.issuer\` must be a non-empty string`);
    if (typeof o.audience !== 'string' || o.audience === '') throw fail(`\`${at}.audience\` must be a non-empty string`);
    if (o.push !== undefined && typeof o.push !== 'boolean') throw fail(`\`${at}.push\` must be a boolean`);
    if (o.pollIntervalMs !== undefined && (typeof o.pollIntervalMs !== 'number' || !Number.isInteger(o.pollIntervalMs) || o.pollIntervalMs < 50 || o.pollIntervalMs > 3_600_000)) throw fail(`\`${at}.pollIntervalMs\` must be an integer from 50 to 3600000`);
    return {
      issuer: o.issuer,
      jwksUri: url(o.jwksUri, `${at}.jwksUri`),
      audience: o.audience,
      ...(o.pushAuthorizationEnv === undefined ? {} : { pushAuthorization: secret(o.pushAuthorizationEnv, `${at}.pushAuthorizationEnv`) }),
      ...(o.push === undefined ? {} : { push: o.push as boolean }),
      ...(o.pollUrl === undefined ? {} : { pollUrl: url(o.pollUrl, `${at}.pollUrl`) }),
      ...(o.pollAuthorizationEnv === undefined ? {} : { pollAuthorization: secret(o.pollAuthorizationEnv, `${at}.pollAuthorizationEnv`) }),
      ...(o.pollIntervalMs === undefined ? {} : { pollIntervalMs: o.pollIntervalMs as number }),
    };
  });
}

/** Where SSF delivery outcomes go (the app's logger once it exists). */
export interface SsfDeliveryLog {
  push?: (r: DeliveryReport) => void;
  stream?: (r: StreamDeliveryReport) => void;
  poll?: (issuer: string, err: unknown) => void;
}

/**
 * The signals context's {@link SecretSealer} over the KEK: envelope
 * encryption as for CA keys and engine passwords, the context bound as AAD;
 * the sealed value is stored as JSON.
 *
 * @example
 * const sealer = kekSealer(new KeyEncryptionKey(kekBytes));
 * const sealed = sealer.seal(new Secret('Bearer x'), ssfStreamSecretContext('st_1'));
 */
export function kekSealer(kek: KeyEncryptionKey): SecretSealer {
  return {
    seal: (plain, context) => JSON.stringify(sealSecret(kek, plain, context)),
    open(sealed, context) {
      let parsed: unknown;
      try {
        parsed = JSON.parse(sealed);
      } catch {
        parsed = {};
      }
      // Not a sealed value at all: `openSecret` refuses it as an unknown version, like any other that does not open.
      return openSecret(kek, (typeof parsed === 'object' && parsed !== null ? parsed : {}) as SealedSecret, context);
    },
  };
}

/**
 * Build the revocation bus `bus.kind` names, the signal service over the
 * store, and the Shared Signals transmitter and receiver; `sealer` keeps
 * push streams' credentials sealed in the store.
 *
 * @example
 * const signals = await startSignals(config, store, audit, kekSealer(kek), undefined);
 */
export async function startSignals(config: WritConfig, store: Store, audit: AuditSink, sealer: SecretSealer, pgSchema: string | undefined, env: Readonly<Record<string, string | undefined>> = {}, onDelivery?: (r: DeliveryReport) => void, log: SsfDeliveryLog = {}): Promise<ServedSignals> {
  const receivers = parseReceivers(config['ssf.receivers'], env);
  const transmitters = parseTransmitters(config['ssf.transmitters'], env);
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
  // One stored key for every replica, sealed under the KEK; loaded (or made) on first use. A load
  // that failed is tried again on the next use rather than remembered.
  let signing: Promise<SetSigner> | undefined = receivers.length === 0 ? undefined : Promise.resolve(await SetSigner.load(store.ssf, sealer, systemClock));
  const signer = (): Promise<SetSigner> => (signing ??= SetSigner.load(store.ssf, sealer, systemClock).catch((e: unknown) => {
    signing = undefined;
    throw e;
  }));
  const streams = new SsfStreams({ store: store.ssf, sealer, signer, audit, clock: systemClock, onDelivery: (r) => log.stream?.(r) });
  const receiver = new SsfReceiver({
    transmitters,
    store: store.ssf,
    audit,
    clock: systemClock,
    accept: async (input, origin) => (await service.accept(input, { actor: { type: 'system', id: `ssf:${origin.issuer}` }, source: `ssf:${origin.issuer}`, correlationId: origin.correlationId })).record.id,
    onPollError: (issuer, err) => log.poll?.(issuer, err),
  });
  const push = receivers.length === 0 ? undefined : new SsfPushTransmitter({ bus, signer: await signer(), receivers, clock: systemClock, ...(onDelivery === undefined ? {} : { onDelivery }) });
  const ssf: ServedSsf = { signer, streams, receiver, ...(push === undefined ? {} : { push }) };
  let drill: RevocationDrill | undefined;
  return {
    service,
    bus,
    ssf,
    points: store.ssf,
    setDrill(d) {
      drill = d;
    },
    drill: () => drill,
    async listening(baseUrl) {
      push?.setIssuer(baseUrl);
      await push?.start();
      streams.setIssuer(baseUrl);
      await streams.start(bus);
      receiver.startPolling(newCorrelationId);
    },
    async close() {
      receiver.close();
      await streams.close();
      await push?.close();
      await bus.close();
    },
  };
}
