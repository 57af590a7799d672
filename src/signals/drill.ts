/**
 * Revocation drills: perform an emergency revocation (or, with `canary`,
 * simulate one on a credential minted for the drill), then measure how long
 * each registered enforcement point takes to deny. An enforcement point
 * registers by following the revocation stream with a name (`?pep=`), which
 * the server refreshes on every heartbeat; it acknowledges each drill event
 * it applied (`POST /v1/revocations/ack`) with what its own check now says.
 * A point registered (seen within the liveness window) when the drill starts
 * that has not acknowledged every drill event when it ends is a failure.
 *
 * The signals context cannot revoke leases or mint credentials (layer 2);
 * {@link DrillTarget} is the port the server implements for that.
 */
import { randomBytes } from 'node:crypto';
import type { AuditActor, AuditSink, Clock } from '../kernel/index.ts';
import { SpiffeId } from '../kernel/index.ts';
import { signalsErrors } from './errors.ts';
import type { EnforcementPointStore, RevocationBus, RevocationEvent, RevocationInput } from './ports.ts';

/** Drill events have ids with this prefix; enforcement points acknowledge exactly these. */
export const DRILL_EVENT_PREFIX = 'drill_';

/** What a drill revokes. */
export type DrillSubjectKind = 'spiffe-id' | 'task' | 'token';

/** Port the server implements: the real revocation, and the canary credential. */
export interface DrillTarget {
  /** Revoke for real; returns the revocations to publish (without ids) and what was cut. */
  cut(kind: DrillSubjectKind, subject: string, correlationId: string, by: AuditActor): Promise<{ readonly events: readonly Omit<RevocationInput, 'id'>[]; readonly revoked: readonly { readonly id: string; readonly kind: string; readonly revokedAt: string | null }[] }>;
  /** Mint a short-lived canary credential for `subject`, then revoke it; returns its id. */
  canary(subject: string, drillId: string, correlationId: string): Promise<{ readonly leaseId: string }>;
}

/** One enforcement point in a drill report. */
export interface DrillPepResult {
  readonly id: string;
  readonly name: string;
  readonly principalId: string;
  /** `denied`: acknowledged every drill event and its check denies; `not-denied`: acknowledged, but its check did not deny; `missing`: did not acknowledge in time. */
  readonly status: 'denied' | 'not-denied' | 'missing';
  /** From the revocation's publish acknowledgement to the point's last acknowledgement (ms). */
  readonly timeToDenyMs?: number;
  readonly ackedAt?: string;
}

/** The drill report: printed, audited (`drill.completed`) and returned. */
export interface DrillReport {
  readonly drillId: string;
  readonly subject: string;
  readonly subjectKind: DrillSubjectKind;
  readonly canary: boolean;
  readonly startedAt: string;
  /** When the bus acknowledged the (last) revocation: time zero for every point. */
  readonly revokedAt: string;
  readonly finishedAt: string;
  readonly events: readonly { readonly id: string; readonly kind: string; readonly cursor: number }[];
  readonly revoked: readonly { readonly id: string; readonly kind: string; readonly revokedAt: string | null }[];
  readonly peps: readonly DrillPepResult[];
  readonly failures: number;
  readonly passed: boolean;
  /** Slowest point that denied (ms), when any did. */
  readonly maxTimeToDenyMs?: number;
}

/** Options of {@link RevocationDrill}. */
export interface RevocationDrillDeps {
  readonly bus: RevocationBus;
  readonly points: EnforcementPointStore;
  readonly target: DrillTarget;
  readonly audit: AuditSink;
  readonly clock: Clock;
  /** A point seen within this long counts as registered; default 15 s. */
  readonly livenessMs?: number;
  /** How often acknowledgements are read while waiting; default 20 ms. */
  readonly pollMs?: number;
}

const TASK = /^task_[0-9a-f]{24}$/;
const TOKEN = /^[A-Za-z0-9._:-]{1,128}$/;

/** Which kind of subject a drill names. Throws `ERR_SIGNALS_DRILL_INVALID`. */
export function drillSubjectKind(subject: string): DrillSubjectKind {
  if (subject.startsWith('spiffe://')) {
    if (SpiffeId.tryParse(subject) === undefined) throw signalsErrors.error('ERR_SIGNALS_DRILL_INVALID', `\`${subject.slice(0, 80)}\` is not a valid SPIFFE ID`);
    return 'spiffe-id';
  }
  if (TASK.test(subject)) return 'task';
  if (TOKEN.test(subject)) return 'token';
  throw signalsErrors.error('ERR_SIGNALS_DRILL_INVALID', 'a drill subject is a SPIFFE ID, a task id (`task_…`) or a token id (`jti`)');
}

/**
 * @example
 * const drills = new RevocationDrill({ bus, points: store.ssf, target, audit, clock: systemClock });
 * const report = await drills.run({ subject: 'spiffe://writ.local/ci', canary: true, timeoutMs: 5000 }, actor, cid);
 */
export class RevocationDrill {
  readonly #d: RevocationDrillDeps;

  constructor(deps: RevocationDrillDeps) {
    this.#d = deps;
  }

  async run(req: { readonly subject: string; readonly canary: boolean; readonly timeoutMs: number }, actor: AuditActor, correlationId: string): Promise<DrillReport> {
    const { bus, points, target, audit, clock } = this.#d;
    if (!Number.isInteger(req.timeoutMs) || req.timeoutMs < 100 || req.timeoutMs > 120_000) throw signalsErrors.error('ERR_SIGNALS_DRILL_INVALID', '`timeoutMs` must be an integer from 100 to 120000');
    const kind = drillSubjectKind(req.subject);
    const startMs = clock.nowMs();
    const drillId = `${DRILL_EVENT_PREFIX}${startMs.toString(36)}${randomBytes(6).toString('hex')}`;
    const registered = await points.listEnforcementPoints(new Date(startMs - (this.#d.livenessMs ?? 15_000)).toISOString());
    let inputs: Omit<RevocationInput, 'id'>[];
    let revoked: { id: string; kind: string; revokedAt: string | null }[];
    if (req.canary) {
      const c = await target.canary(req.subject, drillId, correlationId);
      // Only the canary token: the subject itself keeps its access.
      inputs = [{ kind: 'token-revoked', tokenId: c.leaseId, reason: 'drill-canary' }];
      revoked = [{ id: c.leaseId, kind: 'canary', revokedAt: new Date(clock.nowMs()).toISOString() }];
    } else {
      const cut = await target.cut(kind, req.subject, correlationId, actor);
      inputs = [...cut.events];
      revoked = [...cut.revoked];
      if (inputs.length === 0) throw signalsErrors.error('ERR_SIGNALS_DRILL_NOTHING_LIVE', `nothing live to revoke for \`${req.subject.slice(0, 80)}\``);
    }
    const events: RevocationEvent[] = [];
    const publishedAt = new Map<string, number>();
    for (const [i, input] of inputs.entries()) {
      const e = await bus.publish({ ...input, id: `${drillId}:${i}` });
      events.push(e);
      publishedAt.set(e.id, clock.nowMs());
    }
    const revokedMs = clock.nowMs();
    const ids = events.map((e) => e.id);
    const wanted = new Set(registered.map((p) => p.id));
    const deadline = revokedMs + req.timeoutMs;
    let acks = await points.listAcks(ids);
    const complete = (): boolean => [...wanted].every((p) => ids.every((id) => acks.some((a) => a.pepId === p && a.eventId === id)));
    while (!complete() && clock.nowMs() < deadline) {
      await new Promise((r) => setTimeout(r, this.#d.pollMs ?? 20));
      acks = await points.listAcks(ids);
    }
    const peps: DrillPepResult[] = registered.map((p) => {
      const mine = acks.filter((a) => a.pepId === p.id);
      const base = { id: p.id, name: p.name, principalId: p.principalId };
      if (!ids.every((id) => mine.some((a) => a.eventId === id))) return { ...base, status: 'missing' };
      // Time to deny: the slowest of its acknowledgements, each from its own revocation's publish acknowledgement.
      const ms = Math.max(...mine.map((a) => Date.parse(a.ackedAt) - (publishedAt.get(a.eventId) ?? revokedMs)));
      const ackedAt = mine.map((a) => a.ackedAt).sort().at(-1) ?? '';
      return { ...base, status: mine.every((a) => a.denied) ? 'denied' : 'not-denied', timeToDenyMs: Math.max(0, ms), ackedAt };
    });
    const failures = peps.filter((p) => p.status !== 'denied').length;
    const times = peps.flatMap((p) => (p.status === 'denied' && p.timeToDenyMs !== undefined ? [p.timeToDenyMs] : []));
    const report: DrillReport = {
      drillId,
      subject: req.subject,
      subjectKind: kind,
      canary: req.canary,
      startedAt: new Date(startMs).toISOString(),
      revokedAt: new Date(revokedMs).toISOString(),
      finishedAt: new Date(clock.nowMs()).toISOString(),
      events: events.map((e) => ({ id: e.id, kind: e.kind, cursor: e.cursor })),
      revoked,
      peps,
      failures,
      // A drill nobody could hear proves nothing: no registered point is a failure too.
      passed: failures === 0 && peps.length > 0,
      ...(times.length === 0 ? {} : { maxTimeToDenyMs: Math.max(...times) }),
    };
    await audit.append({
      action: 'drill.completed',
      actor,
      target: { type: 'drill', id: drillId, name: req.subject },
      outcome: report.passed ? 'success' : 'failure',
      reasons: [req.canary ? 'canary' : 'live-revocation', report.passed ? 'every-point-denied' : peps.length === 0 ? 'no-enforcement-points' : 'points-missing'],
      correlationId,
      details: { ...report },
    });
    return report;
  }
}
