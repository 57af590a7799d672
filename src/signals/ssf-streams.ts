/**
 * Shared Signals transmitter with stream management (SSF 1.0 §8; STANDARDS.md
 * §3): receivers create, read, update, replace and delete their streams, read
 * and set their status, add and remove subjects and ask for a verification
 * event. Every revocation on the bus becomes a CAEP SET queued per stream
 * (durable, in the store), then delivered by push (RFC 8935) with retries and
 * exponential backoff, or by poll (RFC 8936) until acknowledged.
 *
 * INVARIANT: a SET's `jti` for a revocation is derived from the revocation id
 * and the stream id, so replicas that all hear the revocation queue it once.
 *
 * INVARIANT: a push stream's `authorization_header` is stored only sealed
 * (the {@link SecretSealer} port: the KEK, the stream id bound as AAD); it is
 * opened just before a push and never read back, logged or audited. A row an
 * older version stored in plain text is sealed on start (and by the sweep).
 * A credential that does not open is a failed try: nothing is sent.
 */
import { createHash, randomBytes } from 'node:crypto';
import type { AuditActor, AuditSink, Clock } from '../kernel/index.ts';
import { Secret, canonicalJson, newCorrelationId } from '../kernel/index.ts';
import { signalsErrors } from './errors.ts';
import { ssfStreamSecretContext } from './ports.ts';
import type { QueuedSet, RevocationBus, RevocationEvent, SecretSealer, SsfStore, SsfStreamRecord, SsfStreamState, SsfSubject, Unsubscribe } from './ports.ts';
import { CAEP_CREDENTIAL_CHANGE, CAEP_SESSION_REVOKED, SSF_PUSH, setForRevocation } from './ssf.ts';
import type { SetClaims, SetSigner, SubjectId } from './ssf.ts';

/** RFC 8936 poll delivery. */
export const SSF_POLL = 'urn:ietf:rfc:8936';
/** SSF §8.1.4 verification event. */
export const SSF_VERIFICATION = 'https://schemas.openid.net/secevent/ssf/event-type/verification';
/** SSF §8.1.5 stream-updated event. */
export const SSF_STREAM_UPDATED = 'https://schemas.openid.net/secevent/ssf/event-type/stream-updated';

/** Event types Writ transmits on streams. */
export const SSF_EVENTS_SUPPORTED: readonly string[] = [CAEP_SESSION_REVOKED, CAEP_CREDENTIAL_CHANGE];
/** Delivered whatever was requested (SSF: verification and stream-updated are part of managing the stream). */
const ALWAYS = new Set([SSF_VERIFICATION, SSF_STREAM_UPDATED]);

const STATUSES = ['enabled', 'paused', 'disabled'] as const;
type Status = (typeof STATUSES)[number];

/** Who manages a stream: its owner, or an admin who may manage every stream. */
export interface StreamCaller {
  readonly id: string;
  readonly admin: boolean;
  readonly actor: AuditActor;
  readonly correlationId: string;
}

/** What happened to one queued SET. */
export interface StreamDeliveryReport {
  readonly streamId: string;
  readonly jti: string;
  /** `credential-unreadable`: the stream's sealed `authorization_header` did not open (wrong KEK, tampered or moved row); nothing was sent. */
  readonly outcome: 'delivered' | 'rejected' | 'gave-up' | 'acknowledged' | 'receiver-error' | 'credential-unreadable';
  readonly attempts: number;
  readonly status?: number;
  /** RFC 8935 §2.4 / RFC 8936 `err` code reported by the receiver. */
  readonly err?: string;
}

/** Options of {@link SsfStreams}. */
export interface SsfStreamsOptions {
  readonly store: SsfStore;
  /** Seals push streams' `authorization_header` for the store, and opens it to push. */
  readonly sealer: SecretSealer;
  /** The signing key, made on first use. */
  readonly signer: () => Promise<SetSigner>;
  readonly audit: AuditSink;
  readonly clock: Clock;
  /** Push tries per SET before giving up; default 8. */
  readonly maxAttempts?: number;
  /** First retry delay, doubling up to `maxRetryMs`; default 200 ms. */
  readonly retryBaseMs?: number;
  readonly maxRetryMs?: number;
  /** Seconds a receiver must wait between verification requests; default 5. */
  readonly minVerificationInterval?: number;
  /** How often queued push SETs (retries, other replicas' queues) are looked at; default 1000 ms. */
  readonly sweepMs?: number;
  /** Longest a poll with `returnImmediately: false` waits for a SET; default 30 s. */
  readonly longPollMs?: number;
  readonly onDelivery?: (r: StreamDeliveryReport) => void;
}

const URL_RE = /^https?:\/\/[^\s]{1,2040}$/;
const EVENT_URI = /^[A-Za-z][A-Za-z0-9+.-]*:[^\s]{1,500}$/;
const ID = /^[A-Za-z0-9._~-]{1,128}$/;

function invalid(message: string): Error {
  return signalsErrors.error('ERR_SIGNALS_SSF_STREAM_INVALID', message);
}

function obj(v: unknown, what: string): Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw invalid(`${what} must be a JSON object`);
  return v as Record<string, unknown>;
}

/** Receiver-supplied fields of a stream configuration (SSF §8.1.1); the rest are transmitter-supplied and ignored when sent. */
const RECEIVER_FIELDS = new Set(['delivery', 'events_requested', 'description']);
const READ_ONLY_FIELDS = new Set(['stream_id', 'iss', 'aud', 'events_supported', 'events_delivered', 'min_verification_interval', 'inactivity_timeout']);

interface ReceiverConfig {
  delivery?: SsfStreamState['delivery'];
  events_requested?: string[];
  description?: string;
}

function parseReceiverConfig(body: unknown, allowStreamId: boolean): ReceiverConfig {
  const o = obj(body, 'a stream configuration');
  for (const k of Object.keys(o)) {
    if (RECEIVER_FIELDS.has(k) || READ_ONLY_FIELDS.has(k)) continue;
    if (k === 'stream_id' && allowStreamId) continue;
    throw invalid(`field \`${k.slice(0, 40)}\` is not part of a stream configuration`);
  }
  const out: ReceiverConfig = {};
  if (o.delivery !== undefined) {
    const d = obj(o.delivery, '`delivery`');
    for (const k of Object.keys(d)) if (!['method', 'endpoint_url', 'authorization_header'].includes(k)) throw invalid(`field \`delivery.${k.slice(0, 40)}\` is not supported`);
    if (d.method === SSF_PUSH) {
      if (typeof d.endpoint_url !== 'string' || !URL_RE.test(d.endpoint_url)) throw invalid('push delivery needs `delivery.endpoint_url`, an http(s) URL');
      if (d.authorization_header !== undefined && (typeof d.authorization_header !== 'string' || d.authorization_header.length > 4096 || /[\r\n]/.test(d.authorization_header))) throw invalid('`delivery.authorization_header` must be one header value of at most 4096 characters');
      out.delivery = { method: SSF_PUSH, endpoint_url: d.endpoint_url, ...(d.authorization_header === undefined ? {} : { authorization_header: d.authorization_header as string }) };
    } else if (d.method === SSF_POLL) {
      // RFC 8936: the transmitter supplies the poll URL; a receiver-sent one is ignored.
      out.delivery = { method: SSF_POLL };
    } else throw invalid(`\`delivery.method\` must be \`${SSF_PUSH}\` or \`${SSF_POLL}\``);
  }
  if (o.events_requested !== undefined) {
    if (!Array.isArray(o.events_requested) || o.events_requested.length > 32) throw invalid('`events_requested` must be an array of at most 32 event type URIs');
    for (const e of o.events_requested as unknown[]) if (typeof e !== 'string' || !EVENT_URI.test(e)) throw invalid('`events_requested` must hold event type URIs');
    out.events_requested = [...new Set(o.events_requested as string[])];
  }
  if (o.description !== undefined) {
    if (typeof o.description !== 'string' || o.description.length > 256) throw invalid('`description` must be a string of at most 256 characters');
    out.description = o.description;
  }
  return out;
}

function streamIdOf(body: Record<string, unknown>): string {
  const id = body.stream_id;
  if (typeof id !== 'string' || !ID.test(id)) throw invalid('`stream_id` is required');
  return id;
}

/** A subject identifier (RFC 9493 / SSF §3), checked for shape. */
function parseSubject(v: unknown): SsfSubject {
  const o = obj(v, '`subject`');
  if (typeof o.format !== 'string' || !/^[a-z_]{1,32}$/.test(o.format)) throw invalid('`subject.format` is required');
  const json = JSON.stringify(o);
  if (json.length > 2048) throw invalid('`subject` is too large');
  return JSON.parse(json) as SsfSubject;
}

function sameSubject(a: unknown, b: unknown): boolean {
  return canonicalJson(a) === canonicalJson(b);
}

/** What a receiver reads: the configuration without Writ's state, and never the authorization header it gave. */
export function publicConfig(s: SsfStreamState): Record<string, unknown> {
  const { status: _s, reason: _r, excluded_subjects: _x, last_verification_at: _v, delivery, ...rest } = s;
  const { authorization_header: _a, ...d } = delivery;
  return { ...rest, delivery: d };
}

/** What a push may send as `Authorization`: the header (none when the receiver gave none), or `undefined` when it did not open. */
type PushAuthorization = { readonly header: Secret | undefined } | undefined;

/** A deterministic SET id: one per revocation and stream, whichever replica makes it. */
function jtiFor(streamId: string, key: string): string {
  const h = createHash('sha256').update(`${streamId}\n${key}`).digest('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
}

/**
 * @example
 * const streams = new SsfStreams({ store: store.ssf, sealer, signer: () => signer, audit, clock: systemClock });
 * streams.setIssuer('https://writ.example');
 * await streams.start(bus);
 * const config = await streams.create(caller, { delivery: { method: SSF_POLL } });
 */
export class SsfStreams {
  readonly #o: SsfStreamsOptions;
  #issuer = '';
  #stop: Unsubscribe | undefined;
  #sweep: ReturnType<typeof setInterval> | undefined;
  #closed = false;
  readonly #pushing = new Map<string, boolean>();
  readonly #waiters = new Map<string, Set<() => void>>();
  /** Streams whose credential did not open, audited once until it opens again. */
  readonly #unreadable = new Set<string>();

  constructor(options: SsfStreamsOptions) {
    this.#o = options;
  }

  setIssuer(issuer: string): void {
    this.#issuer = issuer.replace(/\/+$/, '');
  }

  get issuer(): string {
    return this.#issuer;
  }

  /** Transmitter metadata members for stream management (SSF §7.1). */
  endpoints(): Record<string, unknown> {
    const i = this.#issuer;
    return {
      delivery_methods_supported: [SSF_PUSH, SSF_POLL],
      configuration_endpoint: `${i}/ssf/stream`,
      status_endpoint: `${i}/ssf/status`,
      add_subject_endpoint: `${i}/ssf/subjects:add`,
      remove_subject_endpoint: `${i}/ssf/subjects:remove`,
      verification_endpoint: `${i}/ssf/verify`,
    };
  }

  /** Seal what an older version stored in plain text, then follow the bus from now: every revocation becomes a SET on each stream that wants it. */
  async start(bus: RevocationBus): Promise<void> {
    if (this.#stop !== undefined) return;
    try {
      for (const r of await this.#o.store.listStreams()) await this.#sealLegacy(r);
    } catch {
      // The store is unreachable: the sweep seals them.
    }
    this.#stop = await bus.subscribe(undefined, (e) => this.#onRevocation(e));
    this.#sweep = setInterval(() => void this.#sweepAll(), this.#o.sweepMs ?? 1000);
    this.#sweep.unref();
  }

  async close(): Promise<void> {
    this.#closed = true;
    if (this.#sweep !== undefined) clearInterval(this.#sweep);
    for (const set of this.#waiters.values()) for (const w of set) w();
    await this.#stop?.();
  }

  // ------------------------------------------------------------ management

  /** SSF §8.1.1.1: create a stream; 201 with the full configuration. */
  async create(caller: StreamCaller, body: unknown): Promise<Record<string, unknown>> {
    const c = parseReceiverConfig(body, false);
    const now = new Date(this.#o.clock.nowMs()).toISOString();
    const streamId = `st_${randomBytes(12).toString('hex')}`;
    const requested = c.events_requested ?? [...SSF_EVENTS_SUPPORTED];
    const state: SsfStreamState = {
      stream_id: streamId,
      iss: this.#issuer,
      aud: caller.id,
      events_supported: SSF_EVENTS_SUPPORTED,
      events_requested: requested,
      events_delivered: SSF_EVENTS_SUPPORTED.filter((e) => requested.includes(e)),
      // No delivery means poll (SSF §8.1.1.1).
      delivery: this.#delivery(streamId, c.delivery ?? { method: SSF_POLL }),
      min_verification_interval: this.#o.minVerificationInterval ?? 5,
      ...(c.description === undefined ? {} : { description: c.description }),
      status: 'enabled',
      excluded_subjects: [],
    };
    const stored = this.#stored(streamId, state.delivery, undefined);
    await this.#o.store.insertStream({ streamId, owner: caller.id, config: { ...state, delivery: stored.delivery }, ...stored.sealed, revision: 1, createdAt: now, updatedAt: now });
    await this.#audit(caller, 'ssf.stream.created', streamId, { delivery: state.delivery.method, eventsDelivered: state.events_delivered, ...(state.delivery.endpoint_url === undefined ? {} : { endpointUrl: urlForAudit(state.delivery.endpoint_url) }) });
    return publicConfig(state);
  }

  /** SSF §8.1.1.2: one stream, or every stream of the caller. */
  async read(caller: StreamCaller, streamId: string | undefined): Promise<Record<string, unknown> | Record<string, unknown>[]> {
    if (streamId !== undefined) return publicConfig((await this.#own(caller, streamId)).config);
    const all = await this.#o.store.listStreams(caller.admin ? undefined : caller.id);
    return all.map((r) => publicConfig(r.config));
  }

  /** SSF §8.1.1.3 (PATCH, `replace` false) and §8.1.1.4 (PUT, `replace` true). */
  async update(caller: StreamCaller, body: unknown, replace: boolean): Promise<Record<string, unknown>> {
    const o = obj(body, 'a stream configuration');
    const id = streamIdOf(o);
    const c = parseReceiverConfig(o, true);
    // The stored credential stays with the delivery it was given for, and goes when the delivery is replaced.
    const keepsDelivery = c.delivery === undefined && !replace;
    return this.#change(caller, id, 'ssf.stream.updated', (s) => {
      const requested = c.events_requested ?? (replace ? [...SSF_EVENTS_SUPPORTED] : s.events_requested);
      const delivery = c.delivery ?? (replace ? { method: SSF_POLL } : s.delivery);
      const { description: _d, ...rest } = s;
      const description = c.description ?? (replace ? undefined : s.description);
      return { ...rest, events_requested: requested, events_delivered: SSF_EVENTS_SUPPORTED.filter((e) => requested.includes(e)), delivery: this.#delivery(id, delivery), ...(description === undefined ? {} : { description }) };
    }, {}, keepsDelivery).then(publicConfig);
  }

  /** SSF §8.1.1.5: delete a stream and its queue. */
  async remove(caller: StreamCaller, streamId: string): Promise<void> {
    await this.#own(caller, streamId);
    if (!(await this.#o.store.deleteStream(streamId))) throw signalsErrors.error('ERR_SIGNALS_SSF_STREAM_NOT_FOUND', `no stream \`${streamId}\``);
    await this.#audit(caller, 'ssf.stream.deleted', streamId, {});
  }

  /** SSF §8.1.2.1. */
  async status(caller: StreamCaller, streamId: string): Promise<{ stream_id: string; status: Status; reason?: string }> {
    const s = (await this.#own(caller, streamId)).config;
    return { stream_id: s.stream_id, status: s.status, ...(s.reason === undefined ? {} : { reason: s.reason }) };
  }

  /** SSF §8.1.2.2: a status change emits a stream-updated SET. */
  async setStatus(caller: StreamCaller, body: unknown): Promise<{ stream_id: string; status: Status; reason?: string }> {
    const o = obj(body, 'a status request');
    for (const k of Object.keys(o)) if (!['stream_id', 'status', 'reason'].includes(k)) throw invalid(`field \`${k.slice(0, 40)}\` is not part of a status request`);
    const id = streamIdOf(o);
    if (typeof o.status !== 'string' || !(STATUSES as readonly string[]).includes(o.status)) throw invalid('`status` must be `enabled`, `paused` or `disabled`');
    if (o.reason !== undefined && (typeof o.reason !== 'string' || o.reason.length > 256)) throw invalid('`reason` must be a string of at most 256 characters');
    const status = o.status as Status;
    const reason = o.reason as string | undefined;
    const before = (await this.#own(caller, id)).config.status;
    const s = await this.#change(caller, id, 'ssf.stream.status-changed', (cur) => {
      const { reason: _r, ...rest } = cur;
      return { ...rest, status, ...(reason === undefined ? {} : { reason }) };
    }, { from: before, to: status });
    if (before !== status) await this.#enqueueControl(s, `stream-updated:${s.stream_id}:${randomBytes(6).toString('hex')}`, SSF_STREAM_UPDATED, { status, ...(reason === undefined ? {} : { reason }) });
    return { stream_id: id, status, ...(reason === undefined ? {} : { reason }) };
  }

  /** SSF §8.1.3.2 / §8.1.3.3: subjects (default ALL, so removing one excludes it and adding it back includes it). */
  async subject(caller: StreamCaller, body: unknown, add: boolean): Promise<void> {
    const o = obj(body, 'a subject request');
    for (const k of Object.keys(o)) if (!['stream_id', 'subject', 'verified'].includes(k)) throw invalid(`field \`${k.slice(0, 40)}\` is not part of a subject request`);
    const id = streamIdOf(o);
    const subject = parseSubject(o.subject);
    if (o.verified !== undefined && typeof o.verified !== 'boolean') throw invalid('`verified` must be a boolean');
    await this.#change(caller, id, add ? 'ssf.subject.added' : 'ssf.subject.removed', (s) => {
      const rest = s.excluded_subjects.filter((x) => !sameSubject(x, subject));
      return { ...s, excluded_subjects: add ? rest : [...rest, subject].slice(-10_000) };
    }, { subject });
  }

  /** SSF §8.1.4.2: queue a verification SET carrying `state`; 429 within `min_verification_interval`. */
  async verify(caller: StreamCaller, body: unknown): Promise<void> {
    const o = obj(body, 'a verification request');
    for (const k of Object.keys(o)) if (!['stream_id', 'state'].includes(k)) throw invalid(`field \`${k.slice(0, 40)}\` is not part of a verification request`);
    const id = streamIdOf(o);
    if (o.state !== undefined && (typeof o.state !== 'string' || o.state.length > 256)) throw invalid('`state` must be a string of at most 256 characters');
    const nowMs = this.#o.clock.nowMs();
    const s = await this.#change(caller, id, 'ssf.stream.verification-requested', (cur) => {
      const last = cur.last_verification_at === undefined ? undefined : Date.parse(cur.last_verification_at);
      if (last !== undefined && nowMs - last < cur.min_verification_interval * 1000) throw signalsErrors.error('ERR_SIGNALS_SSF_VERIFY_TOO_SOON', `wait ${cur.min_verification_interval} s between verification requests`);
      return { ...cur, last_verification_at: new Date(nowMs).toISOString() };
    });
    await this.#enqueueControl(s, `verification:${s.stream_id}:${nowMs}:${randomBytes(6).toString('hex')}`, SSF_VERIFICATION, o.state === undefined ? {} : { state: o.state });
  }

  // ------------------------------------------------------------ poll (RFC 8936)

  /**
   * RFC 8936 §2.4: acknowledge `ack` and `setErrs`, then return up to
   * `maxEvents` queued SETs (they stay queued until acknowledged). With
   * `returnImmediately: false` and nothing queued, waits up to the long-poll limit.
   */
  async poll(caller: StreamCaller, streamId: string, body: unknown): Promise<{ sets: Record<string, string>; moreAvailable: boolean }> {
    const pollInvalid = (m: string): Error => signalsErrors.error('ERR_SIGNALS_SSF_POLL_INVALID', m);
    if (typeof body !== 'object' || body === null || Array.isArray(body)) throw pollInvalid('a poll request must be a JSON object');
    const o = body as Record<string, unknown>;
    for (const k of Object.keys(o)) if (!['maxEvents', 'returnImmediately', 'ack', 'setErrs'].includes(k)) throw pollInvalid(`field \`${k.slice(0, 40)}\` is not part of a poll request`);
    if (o.maxEvents !== undefined && (typeof o.maxEvents !== 'number' || !Number.isInteger(o.maxEvents) || o.maxEvents < 0)) throw pollInvalid('`maxEvents` must be a non-negative integer');
    if (o.returnImmediately !== undefined && typeof o.returnImmediately !== 'boolean') throw pollInvalid('`returnImmediately` must be a boolean');
    const ack = o.ack ?? [];
    if (!Array.isArray(ack) || ack.length > 1000 || ack.some((j) => typeof j !== 'string' || j.length > 256)) throw pollInvalid('`ack` must be an array of at most 1000 `jti` strings');
    const errs = o.setErrs ?? {};
    if (typeof errs !== 'object' || errs === null || Array.isArray(errs) || Object.keys(errs).length > 1000) throw pollInvalid('`setErrs` must be an object of `jti` → `{err, description}`');
    for (const v of Object.values(errs as Record<string, unknown>)) {
      if (typeof v !== 'object' || v === null || typeof (v as { err?: unknown }).err !== 'string') throw pollInvalid('each `setErrs` entry must be `{err, description}`');
    }
    const rec = await this.#own(caller, streamId);
    if (rec.config.delivery.method !== SSF_POLL) throw pollInvalid(`stream \`${streamId}\` is not a poll stream`);
    await this.#o.store.deleteSets(streamId, ack as string[]);
    const errJtis = Object.keys(errs);
    await this.#o.store.deleteSets(streamId, errJtis);
    for (const j of ack as string[]) this.#o.onDelivery?.({ streamId, jti: j, outcome: 'acknowledged', attempts: 1 });
    for (const j of errJtis) this.#o.onDelivery?.({ streamId, jti: j, outcome: 'receiver-error', attempts: 1, err: (errs as Record<string, { err: string }>)[j]?.err ?? '' });
    if (errJtis.length > 0) await this.#audit(caller, 'ssf.set.rejected-by-receiver', streamId, { setErrs: Object.fromEntries(errJtis.map((j) => [j, String((errs as Record<string, { err: string }>)[j]?.err ?? '').slice(0, 64)])) }, 'failure');
    const max = Math.min(o.maxEvents === undefined ? 1000 : (o.maxEvents as number), 1000);
    if (max === 0) return { sets: {}, moreAvailable: false };
    const due = async (): Promise<readonly QueuedSet[]> => {
      const cur = await this.#o.store.getStream(streamId);
      if (cur === undefined || cur.config.status !== 'enabled') return [];
      return this.#o.store.dueSets(streamId, '9999-12-31T23:59:59.999Z', max + 1);
    };
    let rows = await due();
    if (rows.length === 0 && o.returnImmediately === false && !this.#closed) {
      await this.#waitFor(streamId, this.#o.longPollMs ?? 30_000);
      rows = await due();
    }
    const sets: Record<string, string> = {};
    for (const r of rows.slice(0, max)) sets[r.jti] = r.set;
    return { sets, moreAvailable: rows.length > max };
  }

  // ------------------------------------------------------------ internals

  #delivery(streamId: string, d: SsfStreamState['delivery']): SsfStreamState['delivery'] {
    return d.method === SSF_POLL ? { method: SSF_POLL, endpoint_url: `${this.#issuer}/ssf/poll/${streamId}` } : d;
  }

  async #own(caller: StreamCaller, streamId: string): Promise<SsfStreamRecord> {
    const r = ID.test(streamId) ? await this.#o.store.getStream(streamId) : undefined;
    // Another receiver's stream is "not found": its existence is not disclosed.
    if (r === undefined || (!caller.admin && r.owner !== caller.id)) throw signalsErrors.error('ERR_SIGNALS_SSF_STREAM_NOT_FOUND', `no stream \`${streamId.slice(0, 128)}\``);
    return r;
  }

  /**
   * Apply `f` to the stored stream (compare-and-set). `keepsDelivery`: the
   * delivery is the stored one, so its sealed credential stays; otherwise the
   * new delivery's credential (if any) is sealed and the old one dropped.
   */
  async #change(caller: StreamCaller, streamId: string, action: string, f: (s: SsfStreamState) => SsfStreamState, details: Record<string, unknown> = {}, keepsDelivery = true): Promise<SsfStreamState> {
    const cur = await this.#own(caller, streamId);
    const next = f(cur.config);
    const stored = this.#stored(streamId, next.delivery, keepsDelivery ? cur.sealedAuthorization : undefined);
    const { sealedAuthorization: _old, ...base } = cur;
    const config = { ...next, delivery: stored.delivery };
    const ok = await this.#o.store.updateStream({ ...base, config, ...stored.sealed, revision: cur.revision + 1, updatedAt: new Date(this.#o.clock.nowMs()).toISOString() }, cur.revision);
    if (!ok) throw signalsErrors.error('ERR_SIGNALS_SSF_STREAM_CONFLICT', `stream \`${streamId}\` changed while it was updated; retry`);
    await this.#audit(caller, action, streamId, details);
    return config;
  }

  /**
   * A delivery as stored: without `authorization_header`, which is sealed to
   * this stream; `kept` (an already sealed credential) when it carries none.
   */
  #stored(streamId: string, d: SsfStreamState['delivery'], kept: string | undefined): { delivery: SsfStreamState['delivery']; sealed: { sealedAuthorization?: string } } {
    const { authorization_header: header, ...delivery } = d;
    if (header === undefined) return { delivery, sealed: kept === undefined ? {} : { sealedAuthorization: kept } };
    return { delivery, sealed: { sealedAuthorization: this.#o.sealer.seal(new Secret(header), ssfStreamSecretContext(streamId)) } };
  }

  /** A row an older version wrote with the credential in plain text: seal it; a replica that sealed it first wins the compare-and-set. */
  async #sealLegacy(r: SsfStreamRecord): Promise<void> {
    if (r.config.delivery.authorization_header === undefined) return;
    const stored = this.#stored(r.streamId, r.config.delivery, undefined);
    const { sealedAuthorization: _old, ...base } = r;
    await this.#o.store.updateStream({ ...base, config: { ...r.config, delivery: stored.delivery }, ...stored.sealed, revision: r.revision + 1 }, r.revision);
  }

  /** Open the stream's credential for a push; `undefined` (and audited once) when it does not open. */
  async #authorization(r: SsfStreamRecord): Promise<PushAuthorization> {
    // A row still in plain text (an older replica wrote it since the sweep): used as it is; the sweep seals it.
    const plain = r.config.delivery.authorization_header;
    if (plain !== undefined) return { header: new Secret(plain) };
    if (r.sealedAuthorization === undefined) return { header: undefined };
    try {
      const header = this.#o.sealer.open(r.sealedAuthorization, ssfStreamSecretContext(r.streamId));
      this.#unreadable.delete(r.streamId);
      return { header };
    } catch {
      // The error is not kept: only that it did not open is reported.
      if (!this.#unreadable.has(r.streamId)) {
        this.#unreadable.add(r.streamId);
        // An audit that failed is tried again on the next push.
        await this.#o.audit.append({ action: 'ssf.stream.credential-unreadable', actor: { type: 'system', id: 'writ' }, target: { type: 'ssf_stream', id: r.streamId }, outcome: 'failure', correlationId: newCorrelationId(), details: { reason: 'the sealed authorization header did not open (another key-encryption key, or a tampered or moved row); nothing is pushed' } }).catch(() => this.#unreadable.delete(r.streamId));
      }
      return undefined;
    }
  }

  async #audit(caller: StreamCaller, action: string, streamId: string, details: Record<string, unknown>, outcome: 'success' | 'failure' = 'success'): Promise<void> {
    await this.#o.audit.append({ action, actor: caller.actor, target: { type: 'ssf_stream', id: streamId }, outcome, correlationId: caller.correlationId, details });
  }

  async #enqueueControl(s: SsfStreamState, key: string, type: string, event: Record<string, unknown>): Promise<void> {
    const iat = Math.floor(this.#o.clock.nowMs() / 1000);
    const jti = jtiFor(s.stream_id, key);
    const claims: SetClaims = { iss: this.#issuer, aud: typeof s.aud === 'string' ? s.aud : (s.aud[0] ?? ''), iat, jti, txn: key, sub_id: { format: 'opaque', id: s.stream_id }, events: { [type]: event } };
    await this.#enqueue(s, claims);
  }

  async #enqueue(s: SsfStreamState, claims: SetClaims): Promise<void> {
    const signer = await this.#o.signer();
    const set = await signer.sign(claims);
    const now = new Date(this.#o.clock.nowMs()).toISOString();
    if (!(await this.#o.store.enqueueSet({ streamId: s.stream_id, jti: claims.jti, set, createdAt: now, attempts: 0, nextAt: now }))) return;
    for (const w of this.#waiters.get(s.stream_id) ?? []) w();
    if (s.delivery.method === SSF_PUSH && s.status === 'enabled') void this.#push(s.stream_id);
  }

  async #onRevocation(e: RevocationEvent): Promise<void> {
    if (this.#closed) return;
    const iat = Math.floor(this.#o.clock.nowMs() / 1000);
    for (const r of await this.#o.store.listStreams()) {
      const s = r.config;
      if (s.status === 'disabled') continue;
      const aud = typeof s.aud === 'string' ? s.aud : (s.aud[0] ?? '');
      const claims = setForRevocation(e, this.#issuer, aud, iat);
      if (claims === undefined) return;
      const type = Object.keys(claims.events)[0] ?? '';
      if (!s.events_delivered.includes(type) && !ALWAYS.has(type)) continue;
      if (s.excluded_subjects.some((x) => sameSubject(x, claims.sub_id as SubjectId))) continue;
      await this.#enqueue(s, { ...claims, jti: jtiFor(s.stream_id, `revocation:${e.id}`) });
    }
  }

  #waitFor(streamId: string, ms: number): Promise<void> {
    return new Promise((resolve) => {
      let set = this.#waiters.get(streamId);
      if (set === undefined) this.#waiters.set(streamId, (set = new Set()));
      const waiters = set;
      const done = (): void => {
        clearTimeout(t);
        waiters.delete(done);
        resolve();
      };
      const t = setTimeout(done, ms);
      waiters.add(done);
    });
  }

  async #sweepAll(): Promise<void> {
    if (this.#closed) return;
    try {
      for (const r of await this.#o.store.listStreams()) {
        // One row that cannot be rewritten now does not hold up the others' pushes.
        await this.#sealLegacy(r).catch(() => undefined);
        if (r.config.delivery.method === SSF_PUSH && r.config.status === 'enabled') void this.#push(r.streamId);
      }
    } catch {
      // The store is unreachable: the next sweep retries.
    }
  }

  /** Deliver what is due on a push stream; one runner per stream in this process, claims make replicas safe. */
  async #push(streamId: string): Promise<void> {
    if (this.#pushing.has(streamId)) {
      this.#pushing.set(streamId, true);
      return;
    }
    this.#pushing.set(streamId, false);
    try {
      for (;;) {
        const rec = await this.#o.store.getStream(streamId);
        if (rec === undefined || rec.config.status !== 'enabled' || rec.config.delivery.method !== SSF_PUSH || this.#closed) return;
        const due = await this.#o.store.dueSets(streamId, new Date(this.#o.clock.nowMs()).toISOString(), 20);
        const auth = due.length === 0 ? { header: undefined } : await this.#authorization(rec);
        for (const q of due) await this.#deliverOne(rec.config, q, auth);
        if (due.length < 20 && this.#pushing.get(streamId) !== true) return;
        this.#pushing.set(streamId, false);
      }
    } catch {
      // Store trouble: the sweep comes back to it.
    } finally {
      this.#pushing.delete(streamId);
    }
  }

  async #deliverOne(s: SsfStreamState, q: QueuedSet, auth: PushAuthorization): Promise<void> {
    const nowMs = this.#o.clock.nowMs();
    // Claim it for the length of one try, so another replica does not send it at the same time.
    const claim = new Date(nowMs + 30_000).toISOString();
    if (!(await this.#o.store.rescheduleSet(s.stream_id, q.jti, q.nextAt, q.attempts, claim))) return;
    const attempt = q.attempts + 1;
    const report = (x: Omit<StreamDeliveryReport, 'streamId' | 'jti' | 'attempts'>): void => this.#o.onDelivery?.({ streamId: s.stream_id, jti: q.jti, attempts: attempt, ...x });
    let status: number | undefined;
    // Fail closed: without its credential the SET is not sent; the try counts, so it is given up in the end.
    if (auth === undefined) report({ outcome: 'credential-unreadable' });
    else {
      try {
        const res = await fetch(s.delivery.endpoint_url ?? '', {
          method: 'POST',
          headers: { 'content-type': 'application/secevent+jwt', accept: 'application/json', ...(auth.header === undefined ? {} : { authorization: auth.header.reveal() }) },
          body: q.set,
          signal: AbortSignal.timeout(10_000),
        });
        status = res.status;
        if (status === 202) {
          await res.body?.cancel().catch(() => undefined);
          await this.#o.store.deleteSets(s.stream_id, [q.jti]);
          report({ outcome: 'delivered', status });
          return;
        }
        if (status === 400) {
          // RFC 8935 §2.3: the receiver refused this SET; sending it again would not change that.
          const b = (await res.json().catch(() => ({}))) as { err?: unknown };
          await this.#o.store.deleteSets(s.stream_id, [q.jti]);
          report({ outcome: 'rejected', status, ...(typeof b.err === 'string' ? { err: b.err.slice(0, 64) } : {}) });
          return;
        }
        await res.body?.cancel().catch(() => undefined);
      } catch {
        // No answer: retried below.
      }
    }
    if (attempt >= (this.#o.maxAttempts ?? 8)) {
      await this.#o.store.deleteSets(s.stream_id, [q.jti]);
      report({ outcome: 'gave-up', ...(status === undefined ? {} : { status }) });
      return;
    }
    const delay = Math.min(this.#o.maxRetryMs ?? 30_000, (this.#o.retryBaseMs ?? 200) * 2 ** (attempt - 1));
    await this.#o.store.rescheduleSet(s.stream_id, q.jti, claim, attempt, new Date(this.#o.clock.nowMs() + delay).toISOString());
    const t = setTimeout(() => void this.#push(s.stream_id), delay + 5);
    t.unref();
  }
}

/**
 * A receiver's endpoint as the audit log keeps it: origin and path only. A
 * receiver may put a credential in the query string or the userinfo, and
 * neither belongs in the evidence trail.
 *
 * @example
 * urlForAudit('https://u:p@rx.example.com/events?token=x'); // 'https://rx.example.com/events'
 */
export function urlForAudit(url: string): string {
  try {
    const u = new URL(url);
    return `${u.origin}${u.pathname}`;
  } catch {
    return '[unparsable url]';
  }
}
