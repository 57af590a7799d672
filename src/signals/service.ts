/**
 * Accepting signals and revocations: validate, store, audit, then publish on
 * the revocation bus so every replica and enforcement point hears of it. The
 * order matters: the audit record is durable before the caller is answered,
 * and the bus event carries the signal's id so re-evaluation can find it.
 */
import { randomBytes } from 'node:crypto';
import type { AuditActor, AuditSink, Clock } from '../kernel/index.ts';
import { parseSignal } from './signal.ts';
import type { SignalRecord, SignalType } from './signal.ts';
import { parseRevocation } from './revocation.ts';
import type { RevocationBus, RevocationEvent, SignalContext, SignalStore } from './ports.ts';
import type { Reevaluator, ReevaluationReceipt } from './reevaluation.ts';

/** What {@link SignalService} is built from. */
export interface SignalServiceDeps {
  readonly store: SignalStore;
  readonly audit: AuditSink;
  readonly bus: RevocationBus;
  readonly clock: Clock;
}

/** Who sent a signal: the audit actor and the `source` kept with the signal. */
export interface SignalOrigin {
  readonly actor: AuditActor;
  readonly source: string;
  readonly correlationId: string;
}

/** Time-ordered ids, so signals received in the same millisecond still sort. */
function signalId(nowMs: number): string {
  return `sig_${nowMs.toString(36).padStart(9, '0')}${randomBytes(6).toString('hex')}`;
}

/**
 * @example
 * const signals = new SignalService({ store: store.signals, audit, bus, clock: systemClock });
 * const { record, event } = await signals.accept(body, { actor, source: actor.id, correlationId });
 */
export class SignalService {
  readonly #deps: SignalServiceDeps;
  #reevaluator: Reevaluator | undefined;

  constructor(deps: SignalServiceDeps) {
    this.#deps = deps;
  }

  /**
   * Re-evaluate on every accepted signal. Set once the contexts the port
   * reaches (credentials, PDP) exist; without it signals are only stored and
   * published.
   */
  setReevaluator(r: Reevaluator | undefined): void {
    this.#reevaluator = r;
  }

  get bus(): RevocationBus {
    return this.#deps.bus;
  }

  /**
   * Validate (throws `ERR_SIGNALS_INVALID`), store, audit `signal.received`,
   * publish, then re-evaluate (when a re-evaluator is set) and return its receipt.
   */
  async accept(input: unknown, origin: SignalOrigin): Promise<{ record: SignalRecord; event: RevocationEvent; receipt?: ReevaluationReceipt }> {
    const parsed = parseSignal(input);
    const nowMs = this.#deps.clock.nowMs();
    const receivedAt = new Date(nowMs).toISOString();
    const record: SignalRecord = {
      id: signalId(nowMs),
      type: parsed.signal.type,
      subject: parsed.signal.subject,
      receivedAt,
      occurredAt: parsed.occurredAt ?? receivedAt,
      source: origin.source,
      ...(parsed.reason === undefined ? {} : { reason: parsed.reason }),
      signal: parsed.signal,
    };
    await this.#deps.store.insertSignal(record);
    await this.#deps.audit.append({
      action: 'signal.received',
      actor: origin.actor,
      target: { type: 'signal', id: record.id, name: record.subject },
      outcome: 'success',
      reasons: [record.type, ...(record.reason === undefined ? [] : [record.reason])],
      correlationId: origin.correlationId,
      details: { signal: record.signal, occurredAt: record.occurredAt, source: record.source },
      time: receivedAt,
    });
    const event = await this.#deps.bus.publish({ id: record.id, kind: 'signal', subject: record.subject, reason: record.type, at: receivedAt });
    if (this.#reevaluator === undefined) return { record, event };
    const receipt = await this.#reevaluator.run(record, origin.correlationId);
    return { record, event, receipt };
  }

  /** Validate (throws `ERR_SIGNALS_REVOCATION_INVALID`), publish, audit `revocation.published`. */
  async revoke(input: unknown, origin: SignalOrigin): Promise<RevocationEvent> {
    const r = parseRevocation(input);
    const event = await this.#deps.bus.publish(r);
    await this.#deps.audit.append({
      action: 'revocation.published',
      actor: origin.actor,
      target: { type: 'revocation', id: event.id, ...(event.subject === undefined ? {} : { name: event.subject }) },
      outcome: 'success',
      reasons: [event.kind, event.reason],
      correlationId: origin.correlationId,
      details: { cursor: event.cursor, kind: event.kind, subject: event.subject, leaseId: event.leaseId, tokenId: event.tokenId, bus: this.#deps.bus.kind },
    });
    return event;
  }

  /** Stored signals, newest first. */
  list(q: { readonly subject?: string; readonly type?: SignalType; readonly limit: number }): Promise<readonly SignalRecord[]> {
    return this.#deps.store.listSignals(q);
  }

  /** The read side the PDP uses: latest posture and risk of a subject. */
  context(): SignalContext {
    const store = this.#deps.store;
    return {
      async posture(subject) {
        const r = await store.latestSignal(subject, 'posture-changed');
        if (r === undefined || r.signal.type !== 'posture-changed') return undefined;
        return { score: r.signal.score, failingChecks: r.signal.failingChecks, at: r.occurredAt };
      },
      async risk(subject) {
        const r = await store.latestSignal(subject, 'risk-changed');
        if (r === undefined || r.signal.type !== 'risk-changed') return undefined;
        return { level: r.signal.level, at: r.occurredAt };
      },
    };
  }
}
