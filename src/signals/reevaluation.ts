/**
 * Re-evaluation: on each signal, find what is live for the subjects it is
 * about, re-decide each item under current policy with the signal visible as
 * context, cut what no longer passes, publish the revocations on the bus and
 * write ONE receipt to the audit log listing every item and when it was cut.
 *
 * The signals context sits below credentials, identity's stores and the PDP
 * in the layering, so it cannot reach leases or `decide()` itself. It declares
 * {@link ReevaluationPort} and owns the orchestration (which subjects a
 * signal touches, the order of the steps, what is published, the receipt);
 * the server (composition root) implements the port over the lease manager,
 * the task store and the PDP.
 */
import type { AuditActor, AuditSink, Clock } from '../kernel/index.ts';
import type { RevocationBus, RevocationInput, SignalContext } from './ports.ts';
import type { SignalRecord } from './signal.ts';

/**
 * One live thing a signal may take away.
 * - `token`: an access or refresh token (its lease id is its `jti`);
 * - `lease`: a dynamic credential (PostgreSQL role, Redis ACL user, exception);
 * - `svid`: the SVIDs of a SPIFFE ID (cut by a `subject-revoked` event: agents
 *   stop serving them, PEPs drop them and every decision about the subject).
 */
export interface LiveItem {
  readonly type: 'token' | 'lease' | 'svid';
  /** Lease id (= token `jti`), or the SPIFFE ID for `svid`. */
  readonly id: string;
  /** Who holds it. */
  readonly subject: string;
  /** Lease kind (`access_token`, `postgres`, …) or `svid`. */
  readonly kind: string;
  readonly audience?: string;
  readonly taskId?: string;
  /**
   * True when it was issued through a PDP decision (access and refresh
   * tokens): any deny now cuts it. Items issued outside the PDP (SVIDs,
   * dynamic secrets an admin issued) are cut only when a policy explicitly
   * forbids them now, so a policy set that never mentions them does not take
   * them away on the first signal.
   */
  readonly gated: boolean;
}

/** What the subjects of a signal are, for {@link ReevaluationPort.findLive}. */
export interface LiveQuery {
  /** Holders (SPIFFE IDs, owner ids) whose items are live. */
  readonly subjects: readonly string[];
  /** Items bound to this task. */
  readonly taskId?: string;
  /** Every live item (policy changed); bounded by `limit`. */
  readonly all?: boolean;
  readonly limit: number;
}

/** The signal as the PDP sees it in a re-decision (Writ's Cedar `RequestContext`). */
export interface SignalDecisionContext {
  readonly posture?: { readonly score: number; readonly compliant: boolean; readonly observedAt: number };
  readonly risk?: { readonly level: string; readonly score: number };
}

/** A re-decision. */
export interface Redecision {
  readonly decision: 'allow' | 'deny';
  readonly reasons: readonly string[];
  readonly policyVersion: string | null;
  /** True when a `forbid` policy determined the deny (not just "no permit"). */
  readonly forbidden: boolean;
}

/**
 * Port the server implements: what is live, how the PDP judges it now, how
 * it is cut.
 *
 * @example
 * const port: ReevaluationPort = {
 *   findLive: async (q) => leasesOf(q),
 *   redecide: async (item, signal, context) => pdp.decide(requestFor(item, context)),
 *   cut: async (item, reason, cid) => ({ cutAt: (await leases.revoke(item.id, reason, cid))?.revokedAt ?? undefined }),
 *   invalidateDecisions: async () => pdp.invalidate(),
 * };
 */
export interface ReevaluationPort {
  findLive(q: LiveQuery): Promise<readonly LiveItem[]>;
  /** Re-decide under current policy; any error must come back as a deny (fail closed). */
  redecide(item: LiveItem, signal: SignalRecord, context: SignalDecisionContext, correlationId: string): Promise<Redecision>;
  /** Cut the item; `cutAt` is when it stopped working, `undefined` when it was no longer live. */
  cut(item: LiveItem, reason: string, correlationId: string): Promise<{ readonly cutAt?: string }>;
  /** Drop the PDP's cached decisions (signals are not in its cache key yet). */
  invalidateDecisions(): Promise<void>;
  /** Mark a task ended so nothing new binds to it (task-completed); optional. */
  endTask?(taskId: string, correlationId: string): Promise<void>;
  /** SPIFFE IDs of the workloads an owner (an entry's `owner.contact`) owns, for owner-offboarded; optional. */
  ownedBy?(owner: string): Promise<readonly string[]>;
}

/** One line of a receipt. */
export interface ReceiptItem {
  readonly type: LiveItem['type'] | 'decision-cache';
  readonly id: string;
  readonly subject?: string;
  readonly kind?: string;
  readonly audience?: string;
  readonly decision: 'allow' | 'deny';
  readonly reasons: readonly string[];
  readonly policyVersion?: string | null;
  /** `revoked` (with `cutAt`), `kept`, `already-ended` or `cut-failed`. */
  readonly outcome: 'revoked' | 'kept' | 'already-ended' | 'cut-failed' | 'invalidated';
  readonly cutAt?: string;
  /** Cursor of the revocation published for it. */
  readonly cursor?: number;
  /** True when it was cut but the bus did not take the revocation. */
  readonly unpublished?: boolean;
}

/** What one re-evaluation did; the same object is the receipt's `details`. */
export interface ReevaluationReceipt {
  readonly signalId: string;
  readonly signalType: string;
  readonly subject: string;
  readonly startedAt: string;
  readonly finishedAt: string;
  readonly items: readonly ReceiptItem[];
  readonly revoked: number;
  readonly kept: number;
  /** True when more items were live than `maxItems`; the rest were not looked at. */
  readonly truncated: boolean;
  /** Audit sequence number of the receipt. */
  readonly auditSeq?: number;
}

/** Options of {@link Reevaluator}. */
export interface ReevaluatorDeps {
  readonly port: ReevaluationPort;
  readonly bus: RevocationBus;
  readonly audit: AuditSink;
  readonly clock: Clock;
  readonly context: SignalContext;
  /** Items looked at per signal; default 10,000. */
  readonly maxItems?: number;
}

const RISK_SCORE: Readonly<Record<string, number>> = { none: 0, low: 25, medium: 50, high: 75, critical: 100 };

/** Which holders a signal is about. */
function querySubjects(s: SignalRecord): { subjects: string[]; taskId?: string; all?: boolean } {
  const sig = s.signal;
  switch (sig.type) {
    case 'task-completed':
      // The task's items, plus nothing else of the workload: other tasks go on.
      return { subjects: [], taskId: sig.subject };
    case 'policy-changed':
      return { subjects: [], all: true };
    default:
      return { subjects: [sig.subject] };
  }
}

/** Kebab-case reason the cut is recorded with. */
function cutReason(s: SignalRecord): string {
  switch (s.type) {
    case 'posture-changed':
      return 'posture-failed';
    case 'risk-changed':
      return 'risk-raised';
    default:
      return s.type;
  }
}

/** The revocation a cut item becomes on the bus. The id makes a retry (or a second replica) publish it once. */
function revocationFor(item: LiveItem, signal: SignalRecord, reason: string): RevocationInput {
  const id = `${signal.id}:${item.type}:${item.id}`;
  switch (item.type) {
    case 'token':
      return { id, kind: 'token-revoked', subject: item.subject, tokenId: item.id, reason };
    case 'lease':
      return { id, kind: 'lease-revoked', subject: item.subject, leaseId: item.id, reason };
    case 'svid':
      return { id, kind: 'subject-revoked', subject: item.subject, reason };
  }
}

const SYSTEM: AuditActor = { type: 'system', id: 'writ' };

/**
 * @example
 * const reevaluator = new Reevaluator({ port, bus, audit, clock: systemClock, context: service.context() });
 * const receipt = await reevaluator.run(record, correlationId);
 * console.log(receipt.items.filter((i) => i.outcome === 'revoked'));
 */
export class Reevaluator {
  readonly #d: ReevaluatorDeps;

  constructor(deps: ReevaluatorDeps) {
    const max = deps.maxItems ?? 10_000;
    if (!Number.isInteger(max) || max < 1) throw new TypeError('maxItems must be a positive integer');
    this.#d = deps;
  }

  /** The signal's subject as Cedar context: latest posture and risk (this signal included, it is stored first). */
  async #context(s: SignalRecord): Promise<SignalDecisionContext> {
    const subject = s.signal.type === 'task-completed' && s.signal.workload !== undefined ? s.signal.workload : s.subject;
    const [posture, risk] = await Promise.all([this.#d.context.posture(subject), this.#d.context.risk(subject)]);
    return {
      ...(posture === undefined ? {} : { posture: { score: posture.score, compliant: posture.failingChecks.length === 0, observedAt: Math.floor(Date.parse(posture.at) / 1000) } }),
      ...(risk === undefined ? {} : { risk: { level: risk.level, score: RISK_SCORE[risk.level] ?? 100 } }),
    };
  }

  /**
   * Re-evaluate everything live for the signal's subjects and cut what no
   * longer passes. `task-completed`, `entry-deleted`, `node-evicted` and a
   * `credential-compromised` that names no lease or token end every item
   * found whatever policy says; a `credential-compromised` naming one ends
   * that one; every other item is cut exactly when the PDP now denies it.
   */
  async run(signal: SignalRecord, correlationId: string, actor: AuditActor = SYSTEM): Promise<ReevaluationReceipt> {
    const { port, bus, audit, clock } = this.#d;
    const max = this.#d.maxItems ?? 10_000;
    const startedAt = new Date(clock.nowMs()).toISOString();
    const reason = cutReason(signal);
    const q = querySubjects(signal);
    // An owner who left: what they hold, and everything their workloads hold.
    if (signal.type === 'owner-offboarded' && port.ownedBy !== undefined) q.subjects.push(...(await port.ownedBy(signal.subject)).filter((x) => !q.subjects.includes(x)));
    if (q.taskId !== undefined) await port.endTask?.(q.taskId, correlationId);
    const found = await port.findLive({ subjects: q.subjects, ...(q.taskId === undefined ? {} : { taskId: q.taskId }), ...(q.all === true ? { all: true } : {}), limit: max + 1 });
    const truncated = found.length > max;
    const live = found.slice(0, max);
    // SVIDs of a SPIFFE subject are live as long as the subject may hold them.
    for (const subject of q.subjects) if (subject.startsWith('spiffe://')) live.push({ type: 'svid', id: subject, subject, kind: 'svid', gated: false });
    const context = await this.#context(signal);
    // Cached decisions first: a PEP or the PDP must not answer from a decision made before the signal.
    await port.invalidateDecisions();
    const items: ReceiptItem[] = [{ type: 'decision-cache', id: 'pdp', decision: 'deny', reasons: [reason], outcome: 'invalidated', cutAt: new Date(clock.nowMs()).toISOString() }];
    // Facts that end access whatever policy says: the task is over, the
    // identity or node is gone, or an unnamed credential of the subject leaked.
    const sig = signal.signal;
    const ends = sig.type === 'task-completed' || sig.type === 'entry-deleted' || sig.type === 'node-evicted' || (sig.type === 'credential-compromised' && sig.leaseId === undefined && sig.tokenId === undefined);
    for (const item of live) {
      let d: Redecision;
      if (ends) d = { decision: 'deny', reasons: [signal.type], policyVersion: null, forbidden: true };
      else if (signal.signal.type === 'credential-compromised' && (item.id === signal.signal.leaseId || item.id === signal.signal.tokenId)) d = { decision: 'deny', reasons: ['credential-compromised'], policyVersion: null, forbidden: true };
      else {
        try {
          d = await port.redecide(item, signal, context, correlationId);
        } catch {
          // Fail closed: a re-decision that cannot be made is a deny.
          d = { decision: 'deny', reasons: ['pdp-unavailable'], policyVersion: null, forbidden: false };
        }
      }
      const line = { type: item.type, id: item.id, subject: item.subject, kind: item.kind, ...(item.audience === undefined ? {} : { audience: item.audience }), decision: d.decision, reasons: d.reasons, policyVersion: d.policyVersion };
      // Allow is the only branch that keeps a PDP-issued item; one issued outside the PDP goes only on an explicit forbid.
      if (d.decision === 'allow' || (!item.gated && !d.forbidden)) {
        items.push({ ...line, outcome: 'kept' });
        continue;
      }
      let cutAt: string | undefined;
      try {
        cutAt = (await port.cut(item, reason, correlationId)).cutAt;
      } catch {
        items.push({ ...line, outcome: 'cut-failed' });
        continue;
      }
      if (cutAt === undefined) {
        items.push({ ...line, outcome: 'already-ended' });
        continue;
      }
      try {
        const event = await bus.publish({ ...revocationFor(item, signal, reason), at: cutAt });
        items.push({ ...line, outcome: 'revoked', cutAt, cursor: event.cursor });
      } catch {
        // Cut at the source, but enforcement points were not told: the receipt says so.
        items.push({ ...line, outcome: 'revoked', cutAt, unpublished: true });
      }
    }
    const revoked = items.filter((i) => i.outcome === 'revoked').length;
    const kept = items.filter((i) => i.outcome === 'kept').length;
    const failed = items.some((i) => i.outcome === 'cut-failed');
    const unpublished = items.some((i) => i.unpublished === true);
    const finishedAt = new Date(clock.nowMs()).toISOString();
    const receipt: ReevaluationReceipt = { signalId: signal.id, signalType: signal.type, subject: signal.subject, startedAt, finishedAt, items, revoked, kept, truncated };
    const rec = await audit.append({
      action: 'signal.reevaluated',
      actor,
      target: { type: 'signal', id: signal.id, name: signal.subject },
      outcome: failed || unpublished ? 'failure' : 'success',
      reasons: [signal.type, revoked > 0 ? 'access-revoked' : 'nothing-revoked', ...(failed ? ['cut-failed'] : []), ...(unpublished ? ['publish-failed'] : []), ...(truncated ? ['truncated'] : [])],
      correlationId,
      details: { ...receipt },
      time: finishedAt,
    });
    return { ...receipt, auditSeq: rec.seq };
  }
}
