/**
 * A collecting {@link AuditSink} for tests: keeps every event in order and
 * answers with a record shaped like the real one (no hash chain).
 */
import type { AuditEventInput, AuditRecord, AuditSink } from '../kernel/index.ts';

/**
 * @example
 * const audit = new CollectingAuditSink();
 * audit.actions(); // ['ca.key.prepared', …]
 */
export class CollectingAuditSink implements AuditSink {
  readonly events: AuditEventInput[] = [];

  async append(event: AuditEventInput): Promise<AuditRecord> {
    this.events.push(structuredClone(event));
    return {
      seq: this.events.length,
      time: event.time ?? new Date(0).toISOString(),
      action: event.action,
      actor: event.actor,
      ...(event.target === undefined ? {} : { target: event.target }),
      outcome: event.outcome,
      reasons: event.reasons ?? [],
      correlationId: event.correlationId,
      details: event.details ?? {},
      prevHash: '0'.repeat(64),
      hash: '0'.repeat(64),
    };
  }

  actions(): string[] {
    return this.events.map((e) => e.action);
  }
}
