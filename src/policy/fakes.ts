/**
 * In-process stand-ins for the ports the policy context consumes, for tests,
 * policy test cases and benchmarks (fakes, not mocks: they behave).
 */
import type { AuditEventInput, AuditRecord, AuditSink, Clock } from '../kernel/index.ts';

/** An audit sink that keeps events in memory, in order, and can be made to fail. */
export interface RecordingAuditSink extends AuditSink {
  readonly events: AuditEventInput[];
  /** When set, `append` rejects with this error. */
  failWith: Error | undefined;
}

/**
 * A sink that records events (not hash-chained: the chain is audit's job).
 *
 * @example
 * const audit = recordingAuditSink(clock);
 * await pdp.decide(req);
 * audit.events[0]?.action; // 'decision.made'
 */
export function recordingAuditSink(clock: Clock, keep = true): RecordingAuditSink {
  const events: AuditEventInput[] = [];
  let seq = 0;
  const sink: RecordingAuditSink = {
    events,
    failWith: undefined,
    append: async (e): Promise<AuditRecord> => {
      if (sink.failWith !== undefined) throw sink.failWith;
      if (keep) events.push(e);
      seq += 1;
      return {
        seq,
        time: e.time ?? clock.now().toISOString(),
        action: e.action,
        actor: e.actor,
        outcome: e.outcome,
        reasons: e.reasons ?? [],
        correlationId: e.correlationId,
        details: e.details ?? {},
        prevHash: '',
        hash: '',
        ...(e.target === undefined ? {} : { target: e.target }),
      };
    },
  };
  return sink;
}
