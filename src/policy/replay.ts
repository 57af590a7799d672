/**
 * Safe rollout: re-decide recorded decisions (`decision.made` audit events)
 * with a candidate policy set and report every decision that would flip.
 * Each recorded request is decided again at the time it was made (the clock
 * context source reads that time), with the context and attributes the
 * enforcement point sent; the candidate's own entities file applies.
 */
import { ManualClock } from '../kernel/index.ts';
import { clockContextSource } from './context-sources.ts';
import { Decider } from './decide.ts';
import type { DecisionRequest } from './decide.ts';
import { recordingAuditSink } from './fakes.ts';
import type { PolicyEngine } from './policy-set.ts';

/** The part of an audit record replay reads. */
export interface RecordedDecision {
  readonly seq: number;
  readonly time: string;
  readonly details: Readonly<Record<string, unknown>>;
}

/** One decision the candidate would answer differently. */
export interface Flip {
  readonly seq: number;
  readonly time: string;
  readonly decisionId: string;
  readonly request: DecisionRequest;
  readonly was: 'allow' | 'deny';
  readonly now: 'allow' | 'deny';
  readonly wasVersion: string | null;
  readonly reasons: readonly string[];
  readonly determiningPolicies: readonly string[];
}

/** What a replay found. */
export interface ReplayReport {
  readonly replayed: number;
  /** Records not replayed: explains, truncated or missing requests, unknown outcomes. */
  readonly skipped: number;
  readonly flips: readonly Flip[];
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isRef(v: unknown): v is { type: string; id: string } {
  return isObject(v) && typeof v.type === 'string' && typeof v.id === 'string';
}

/** The recorded request, if the record holds a complete one. */
function requestOf(details: Readonly<Record<string, unknown>>): DecisionRequest | undefined {
  const r = details.request;
  if (!isObject(r) || !isRef(r.principal) || !isRef(r.resource)) return undefined;
  const action = typeof r.action === 'string' ? r.action : isRef(r.action) ? { type: r.action.type, id: r.action.id } : undefined;
  if (action === undefined) return undefined;
  const entities = Array.isArray(r.entities) ? r.entities.filter((e): e is { uid: { type: string; id: string }; attrs?: Record<string, unknown> } => isObject(e) && isRef(e.uid)) : [];
  return {
    principal: { type: r.principal.type, id: r.principal.id },
    action,
    resource: { type: r.resource.type, id: r.resource.id },
    context: isObject(r.context) ? r.context : {},
    entities: entities.map((e) => ({ uid: { type: e.uid.type, id: e.uid.id }, attrs: isObject(e.attrs) ? e.attrs : {} })),
  };
}

/**
 * Re-decide `records` with the engine's active (candidate) set.
 *
 * @example
 * const engine = new PolicyEngine({ clock: systemClock });
 * await engine.load(await readPolicyFolder('./candidate'));
 * const report = await replayDecisions(engine, events);
 * for (const f of report.flips) console.log(f.decisionId, f.was, '->', f.now);
 */
export async function replayDecisions(engine: PolicyEngine, records: readonly RecordedDecision[]): Promise<ReplayReport> {
  if (engine.active === undefined) throw new TypeError('replay needs an engine with a loaded candidate set');
  const clock = new ManualClock(0);
  // No budget: a replay is offline, and load on the machine must not turn answers into timeouts.
  const pdp = new Decider({ engine, audit: recordingAuditSink(clock, false), clock, timeoutMs: Infinity, cacheEntries: 0, contextSources: [clockContextSource(clock)] });
  let replayed = 0;
  let skipped = 0;
  const flips: Flip[] = [];
  for (const rec of [...records].sort((a, b) => a.seq - b.seq)) {
    const d = rec.details;
    const was = d.decision;
    const request = requestOf(d);
    const at = Date.parse(rec.time);
    if ((d.purpose !== undefined && d.purpose !== 'enforce') || request === undefined || (was !== 'allow' && was !== 'deny') || Number.isNaN(at)) {
      skipped++;
      continue;
    }
    if (at > clock.nowMs()) clock.set(at);
    const got = await pdp.decide(request);
    replayed++;
    if (got.decision === was) continue;
    flips.push({
      seq: rec.seq,
      time: rec.time,
      decisionId: typeof d.decisionId === 'string' ? d.decisionId : '',
      request,
      was,
      now: got.decision,
      wasVersion: typeof d.policyVersion === 'string' ? d.policyVersion : null,
      reasons: got.reasons,
      determiningPolicies: got.determiningPolicies,
    });
  }
  return { replayed, skipped, flips };
}
