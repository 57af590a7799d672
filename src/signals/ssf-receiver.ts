/**
 * Shared Signals receiver (STANDARDS.md §3): accepts CAEP and RISC Security
 * Event Tokens from configured transmitters, pushed to Writ (RFC 8935) or
 * polled by Writ (RFC 8936), checks them — signature by the transmitter's
 * JWKS, `typ` `secevent+jwt`, `iss`, `aud`, the SET rules (no `sub`/`exp`,
 * `jti`, `iat`, `events`) — and turns the events it understands into signals.
 *
 * A SET that fails is refused with the RFC 8935 §2.4 error code:
 * `invalid_request` (malformed, wrong `typ`, breaks the SET rules),
 * `invalid_key` (signature does not verify, unknown key),
 * `invalid_issuer`, `invalid_audience`, `authentication_failed` (the
 * `Authorization` the transmitter was given does not match), `access_denied`
 * (the transmitter may not push).
 */
import { createRemoteJWKSet, decodeJwt, decodeProtectedHeader, jwtVerify, errors as joseErrors } from 'jose';
import type { JWTPayload } from 'jose';
import { WritError, constantTimeEqual } from '../kernel/index.ts';
import type { AuditSink, Clock } from '../kernel/index.ts';
import type { SsfStore } from './ports.ts';
import { RISK_LEVELS } from './signal.ts';
import { CAEP_CREDENTIAL_CHANGE, CAEP_SESSION_REVOKED } from './ssf.ts';

/** RFC 8935 §2.4 error codes. */
export type SetErrorCode = 'invalid_request' | 'invalid_key' | 'invalid_issuer' | 'invalid_audience' | 'authentication_failed' | 'access_denied';

/** A refused SET: `err` goes back to the transmitter. */
export class SetRejected extends Error {
  readonly err: SetErrorCode;
  constructor(err: SetErrorCode, description: string) {
    super(description);
    this.name = 'SetRejected';
    this.err = err;
  }
}

/** A transmitter Writ listens to. */
export interface TrustedTransmitter {
  /** Its `issuer`: every SET's `iss` must equal it. */
  readonly issuer: string;
  readonly jwksUri: string;
  /** The `aud` SETs must carry for Writ. */
  readonly audience: string;
  /** The `Authorization` value it must send when it pushes; absent: the signature alone authenticates. */
  readonly pushAuthorization?: string;
  /** False: pushes are refused with `access_denied` (poll only). Default true. */
  readonly push?: boolean;
  /** RFC 8936 poll URL: Writ polls it when set. */
  readonly pollUrl?: string;
  readonly pollAuthorization?: string;
  readonly pollIntervalMs?: number;
}

/** What accepting one SET did. */
export interface ReceivedSet {
  readonly iss: string;
  readonly jti: string;
  /** Event type URIs in the SET. */
  readonly events: readonly string[];
  /** Ids of the signals it became. */
  readonly signals: readonly string[];
  /** True when this `iss`+`jti` was accepted before (not acted on again). */
  readonly replay: boolean;
}

/** Options of {@link SsfReceiver}. */
export interface SsfReceiverOptions {
  readonly transmitters: readonly TrustedTransmitter[];
  readonly store: SsfStore;
  readonly audit: AuditSink;
  readonly clock: Clock;
  /** Accept a signal (the signal service's `accept`); returns its id. */
  readonly accept: (input: Record<string, unknown>, origin: { issuer: string; correlationId: string }) => Promise<string>;
  readonly onPollError?: (issuer: string, err: unknown) => void;
}

const RISC = 'https://schemas.openid.net/secevent/risc/event-type/';
const CAEP = 'https://schemas.openid.net/secevent/caep/event-type/';
const KEBAB_SAFE = /[^a-z0-9]+/g;

type SubjectView = { spiffe?: string; email?: string; id?: string };

/** The subject of a SET (RFC 9493 / SSF §3), as far as Writ can name it. */
function subjectOf(v: unknown, depth = 0): SubjectView {
  if (typeof v !== 'object' || v === null || depth > 2) return {};
  const o = v as Record<string, unknown>;
  switch (o.format) {
    case 'uri':
      return typeof o.uri === 'string' && o.uri.startsWith('spiffe://') ? { spiffe: o.uri } : typeof o.uri === 'string' ? { id: o.uri } : {};
    case 'email':
      return typeof o.email === 'string' ? { email: o.email.toLowerCase() } : {};
    case 'opaque':
      return typeof o.id === 'string' ? { id: o.id } : {};
    case 'iss_sub':
      return typeof o.sub === 'string' ? { id: o.sub } : {};
    case 'complex': {
      let out: SubjectView = {};
      for (const k of ['application', 'device', 'user', 'session']) out = { ...subjectOf(o[k], depth + 1), ...out };
      return out;
    }
    default:
      return {};
  }
}

function reasonOf(type: string): string {
  const tail = type.slice(type.lastIndexOf('/') + 1).toLowerCase().replace(KEBAB_SAFE, '-').replace(/^-|-$/g, '');
  return `ssf-${tail}`.slice(0, 64);
}

/**
 * The signal one CAEP/RISC event becomes, or `undefined` when Writ has no
 * use for it (ignored, as SSF asks receivers to do with what they do not know).
 */
export function signalForEvent(type: string, event: Record<string, unknown>, subject: SubjectView): Record<string, unknown> | undefined {
  const ts = typeof event.event_timestamp === 'number' && Number.isFinite(event.event_timestamp) && event.event_timestamp > 0 && event.event_timestamp < 1e11 ? { occurredAt: new Date(Math.floor(event.event_timestamp) * 1000).toISOString() } : {};
  const base = { reason: reasonOf(type), ...ts };
  const ws = subject.spiffe;
  switch (type) {
    case CAEP_SESSION_REVOKED:
    case `${RISC}credential-compromise`:
    case `${RISC}account-credential-change-required`:
      return ws === undefined ? undefined : { type: 'credential-compromised', subject: ws, ...base };
    case CAEP_CREDENTIAL_CHANGE:
      return ws !== undefined && (event.change_type === 'revoke' || event.change_type === 'delete') ? { type: 'credential-compromised', subject: ws, ...base } : undefined;
    case `${CAEP}device-compliance-change`:
      if (ws === undefined) return undefined;
      if (event.current_status === 'not-compliant') return { type: 'posture-changed', subject: ws, score: 0, failingChecks: ['device-compliance'], ...base };
      if (event.current_status === 'compliant') return { type: 'posture-changed', subject: ws, score: 100, failingChecks: [], ...base };
      return undefined;
    case `${CAEP}risk-level-change`: {
      const level = typeof event.current_level === 'string' ? event.current_level.toLowerCase() : '';
      return ws !== undefined && (RISK_LEVELS as readonly string[]).includes(level) ? { type: 'risk-changed', subject: ws, level, ...base } : undefined;
    }
    case `${RISC}account-disabled`:
    case `${RISC}account-purged`:
      if (ws !== undefined) return { type: 'credential-compromised', subject: ws, ...base };
      if (subject.email !== undefined) return { type: 'owner-offboarded', subject: subject.email, ...base };
      return undefined;
    default:
      return undefined;
  }
}

/** The RFC 8935 refusal for a failure, or `undefined` for one that is Writ's own (a 5xx: the transmitter retries). */
function joseToErr(e: unknown): SetRejected | undefined {
  if (e instanceof SetRejected) return e;
  if (e instanceof WritError) return e.code === 'ERR_SIGNALS_INVALID' ? new SetRejected('invalid_request', `an event cannot become a signal: ${e.message}`) : undefined;
  if (e instanceof joseErrors.JWTClaimValidationFailed) {
    if (e.claim === 'iss') return new SetRejected('invalid_issuer', 'the SET `iss` is not the transmitter');
    if (e.claim === 'aud') return new SetRejected('invalid_audience', 'the SET `aud` does not name this receiver');
    if (e.claim === 'typ') return new SetRejected('invalid_request', 'the SET header `typ` must be `secevent+jwt`');
    return new SetRejected('invalid_request', `the SET claim \`${e.claim.slice(0, 40)}\` is invalid`);
  }
  if (e instanceof joseErrors.JWSSignatureVerificationFailed || e instanceof joseErrors.JWKSNoMatchingKey || e instanceof joseErrors.JOSEAlgNotAllowed || e instanceof joseErrors.JWKSMultipleMatchingKeys) {
    return new SetRejected('invalid_key', 'the SET signature does not verify with the transmitter\'s keys');
  }
  if (e instanceof joseErrors.JWKSTimeout || e instanceof joseErrors.JWKSInvalid) return new SetRejected('invalid_key', 'the transmitter\'s keys could not be read');
  if (e instanceof joseErrors.JOSEError) return new SetRejected('invalid_request', 'the SET is not a valid signed JWT');
  return undefined;
}

/**
 * @example
 * const rx = new SsfReceiver({ transmitters, store: store.ssf, audit, clock: systemClock, accept });
 * const r = await rx.receivePush(req.headers.authorization, body);   // throws SetRejected
 * rx.startPolling();
 */
export class SsfReceiver {
  readonly #o: SsfReceiverOptions;
  readonly #jwks = new Map<string, ReturnType<typeof createRemoteJWKSet>>();
  readonly #timers = new Set<ReturnType<typeof setTimeout>>();
  #closed = false;

  constructor(options: SsfReceiverOptions) {
    this.#o = options;
  }

  get transmitters(): readonly TrustedTransmitter[] {
    return this.#o.transmitters;
  }

  #keys(t: TrustedTransmitter): ReturnType<typeof createRemoteJWKSet> {
    let k = this.#jwks.get(t.jwksUri);
    if (k === undefined) this.#jwks.set(t.jwksUri, (k = createRemoteJWKSet(new URL(t.jwksUri), { timeoutDuration: 5000, cooldownDuration: 1000 })));
    return k;
  }

  /** RFC 8935: one pushed SET. Throws {@link SetRejected}; an accepted SET is 202. */
  async receivePush(authorization: string | undefined, body: string, correlationId: string): Promise<ReceivedSet> {
    let iss: string | undefined;
    try {
      iss = this.#peekIssuer(body);
      const t = this.#transmitter(iss);
      if (t.push === false) throw new SetRejected('access_denied', 'this transmitter may not push; it is polled');
      if (t.pushAuthorization !== undefined && (authorization === undefined || !constantTimeEqual(authorization, t.pushAuthorization))) throw new SetRejected('authentication_failed', 'the `Authorization` header is missing or wrong');
      return await this.#accept(t, body, correlationId, 'push');
    } catch (e) {
      const r = joseToErr(e);
      if (r === undefined) throw e;
      await this.#rejected(iss, r, correlationId, 'push');
      throw r;
    }
  }

  #peekIssuer(body: string): string {
    if (body.length > 65_536 || !/^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/.test(body)) throw new SetRejected('invalid_request', 'the body must be one SET in JWS compact serialization');
    let iss: unknown;
    try {
      decodeProtectedHeader(body);
      iss = decodeJwt(body).iss;
    } catch {
      throw new SetRejected('invalid_request', 'the SET is not a JWT');
    }
    if (typeof iss !== 'string') throw new SetRejected('invalid_issuer', 'the SET has no `iss`');
    return iss;
  }

  #transmitter(iss: string): TrustedTransmitter {
    const t = this.#o.transmitters.find((x) => x.issuer === iss);
    if (t === undefined) throw new SetRejected('invalid_issuer', 'the SET `iss` is not a configured transmitter');
    return t;
  }

  async #accept(t: TrustedTransmitter, jwt: string, correlationId: string, via: 'push' | 'poll'): Promise<ReceivedSet> {
    const { payload } = await jwtVerify(jwt, this.#keys(t), {
      issuer: t.issuer,
      audience: t.audience,
      typ: 'secevent+jwt',
      algorithms: ['RS256', 'PS256', 'ES256', 'ES384', 'EdDSA'],
    });
    const p = payload as JWTPayload & Record<string, unknown>;
    // SSF / RFC 8417 profile rules.
    if (p.sub !== undefined) throw new SetRejected('invalid_request', 'a SET must not carry `sub` (use `sub_id`)');
    if (p.exp !== undefined) throw new SetRejected('invalid_request', 'a SET must not carry `exp`');
    if (typeof p.jti !== 'string' || p.jti === '' || p.jti.length > 256) throw new SetRejected('invalid_request', 'the SET has no `jti`');
    if (typeof p.iat !== 'number') throw new SetRejected('invalid_request', 'the SET has no `iat`');
    if (p.iat * 1000 > this.#o.clock.nowMs() + 300_000) throw new SetRejected('invalid_request', 'the SET `iat` is in the future');
    const events = p.events;
    if (typeof events !== 'object' || events === null || Array.isArray(events) || Object.keys(events).length === 0) throw new SetRejected('invalid_request', 'the SET has no `events`');
    const types = Object.keys(events);
    if (types.length > 16) throw new SetRejected('invalid_request', 'the SET carries too many events');
    for (const type of types) {
      const ev = (events as Record<string, unknown>)[type];
      if (typeof ev !== 'object' || ev === null || Array.isArray(ev)) throw new SetRejected('invalid_request', 'each event in `events` must be a JSON object');
    }
    const key = `${t.issuer}|${p.jti}`;
    const fresh = await this.#o.store.rememberReceivedSet(key, new Date(this.#o.clock.nowMs()).toISOString());
    const signals: string[] = [];
    if (fresh) {
      try {
        for (const type of types) {
          const ev = (events as Record<string, Record<string, unknown>>)[type] ?? {};
          // `sub_id` is the primary subject; legacy events carry `subject` inside the event.
          const input = signalForEvent(type, ev, subjectOf(p.sub_id ?? ev.subject));
          if (input !== undefined) signals.push(await this.#o.accept(input, { issuer: t.issuer, correlationId }));
        }
      } catch (e) {
        // Acting on it failed: a redelivery must be acted on (at least once).
        await this.#o.store.forgetReceivedSet(key).catch(() => undefined);
        throw e;
      }
    }
    await this.#o.audit.append({
      action: 'ssf.set.received',
      actor: { type: 'system', id: `ssf:${t.issuer}` },
      target: { type: 'set', id: p.jti },
      outcome: 'success',
      reasons: [fresh ? (signals.length > 0 ? 'signals-accepted' : 'events-ignored') : 'replay'],
      correlationId,
      details: { issuer: t.issuer, via, events: types, signals },
    });
    return { iss: t.issuer, jti: p.jti, events: types, signals, replay: !fresh };
  }

  async #rejected(iss: string | undefined, r: SetRejected, correlationId: string, via: 'push' | 'poll'): Promise<void> {
    await this.#o.audit
      .append({
        action: 'ssf.set.rejected',
        actor: { type: 'anonymous', id: 'ssf-transmitter' },
        outcome: 'denied',
        reasons: [r.err.replaceAll('_', '-')],
        correlationId,
        // The issuer as claimed (unverified), bounded.
        details: { claimedIssuer: iss?.slice(0, 200) ?? null, err: r.err, description: r.message, via },
      })
      .catch(() => undefined);
  }

  // ------------------------------------------------------------ poll client (RFC 8936)

  /** Poll every transmitter that has a `pollUrl`, until {@link close}. */
  startPolling(newCorrelationId: () => string): void {
    for (const t of this.#o.transmitters) if (t.pollUrl !== undefined) this.#schedule(t, 0, { ack: [], setErrs: {} }, newCorrelationId, 0);
  }

  /** One poll round: acknowledge what the last round handled, take up to 100 SETs, handle them. */
  async pollOnce(t: TrustedTransmitter, pending: { ack: string[]; setErrs: Record<string, { err: string; description: string }> }, correlationId: string): Promise<{ handled: number; moreAvailable: boolean; next: { ack: string[]; setErrs: Record<string, { err: string; description: string }> } }> {
    const res = await fetch(t.pollUrl ?? '', {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json', ...(t.pollAuthorization === undefined ? {} : { authorization: t.pollAuthorization }) },
      body: JSON.stringify({ maxEvents: 100, returnImmediately: true, ...(pending.ack.length > 0 ? { ack: pending.ack } : {}), ...(Object.keys(pending.setErrs).length > 0 ? { setErrs: pending.setErrs } : {}) }),
      signal: AbortSignal.timeout(30_000),
    });
    if (res.status !== 200) {
      await res.body?.cancel().catch(() => undefined);
      throw new Error(`poll answered HTTP ${res.status}`);
    }
    const body = (await res.json()) as { sets?: unknown; moreAvailable?: unknown };
    const sets = typeof body.sets === 'object' && body.sets !== null && !Array.isArray(body.sets) ? (body.sets as Record<string, unknown>) : {};
    const next = { ack: [] as string[], setErrs: {} as Record<string, { err: string; description: string }> };
    for (const [jti, set] of Object.entries(sets).slice(0, 100)) {
      try {
        if (typeof set !== 'string') throw new SetRejected('invalid_request', 'the SET is not a string');
        const iss = this.#peekIssuer(set);
        if (iss !== t.issuer) throw new SetRejected('invalid_issuer', 'the SET `iss` is not the polled transmitter');
        await this.#accept(t, set, correlationId, 'poll');
        next.ack.push(jti);
      } catch (e) {
        const r = joseToErr(e);
        // Writ's own trouble: not acknowledged, so the transmitter offers it again.
        if (r === undefined) continue;
        await this.#rejected(t.issuer, r, correlationId, 'poll');
        next.setErrs[jti.slice(0, 256)] = { err: r.err, description: r.message };
      }
    }
    return { handled: Object.keys(sets).length, moreAvailable: body.moreAvailable === true, next };
  }

  #schedule(t: TrustedTransmitter, delayMs: number, pending: { ack: string[]; setErrs: Record<string, { err: string; description: string }> }, cid: () => string, failures: number): void {
    if (this.#closed) return;
    const timer = setTimeout(() => {
      this.#timers.delete(timer);
      this.pollOnce(t, pending, cid()).then(
        (r) => this.#schedule(t, r.moreAvailable || r.next.ack.length + Object.keys(r.next.setErrs).length > 0 ? 0 : (t.pollIntervalMs ?? 5000), r.next, cid, 0),
        (err: unknown) => {
          this.#o.onPollError?.(t.issuer, err);
          // Keep what is still to acknowledge; back off from 200 ms to 30 s.
          this.#schedule(t, Math.min(30_000, 200 * 2 ** failures), pending, cid, failures + 1);
        },
      );
    }, delayMs);
    timer.unref();
    this.#timers.add(timer);
  }

  close(): void {
    this.#closed = true;
    for (const t of this.#timers) clearTimeout(t);
    this.#timers.clear();
  }
}
