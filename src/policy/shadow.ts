/**
 * Shadow mode: a candidate policy set decides beside the active one on live
 * traffic. Its answers are compared, never enforced: a disagreement is an
 * audit event (`policy.shadow.disagreed`) and a count, nothing else.
 *
 * INVARIANT: the shadow cannot change a live decision. It sees a decision
 * only after the live Decider has finished it (and recorded it), on a later
 * microtask; every failure of the shadow is caught here and counted.
 */
import type { AuditSink, Clock } from '../kernel/index.ts';
import { Decider } from './decide.ts';
import type { Decision, DecisionRequest } from './decide.ts';
import { recordingAuditSink } from './fakes.ts';
import type { PolicyEngine } from './policy-set.ts';
import type { ContextSource, EntityLoader } from './ports.ts';

/** Counts since the shadow was set. */
export interface ShadowStats {
  /** Live decisions compared with the candidate. */
  readonly compared: number;
  /** Of those, how many the candidate decided the other way. */
  readonly disagreements: number;
  /** Comparisons that failed (the candidate's answer or its audit record could not be had). */
  readonly errors: number;
}

/** What a {@link ShadowEvaluator} is built from. */
export interface ShadowOptions {
  /** The candidate set, already loaded (`engine.active` is what decides). */
  readonly engine: PolicyEngine;
  /** Where disagreements are recorded. */
  readonly audit: AuditSink;
  readonly clock: Clock;
  /** The same ports the live Decider reads, so only the policies differ. */
  readonly entityLoader?: EntityLoader;
  readonly contextSources?: readonly ContextSource[];
  readonly timeoutMs?: number;
  /** Where the candidate came from (a folder), for status and audit. */
  readonly origin: string;
  /** Called after each comparison (metrics). */
  readonly onCompared?: (result: 'agree' | 'disagree' | 'error') => void;
}

/**
 * Compares live decisions with a candidate policy set.
 *
 * @example
 * const shadow = new ShadowEvaluator({ engine: candidate, audit, clock, origin: './policies-next' });
 * decider.observe((req, live) => shadow.compare(req, live));
 */
export class ShadowEvaluator {
  readonly #decider: Decider;
  readonly #engine: PolicyEngine;
  readonly #audit: AuditSink;
  readonly #onCompared: ((result: 'agree' | 'disagree' | 'error') => void) | undefined;
  readonly origin: string;
  readonly since: string;
  #compared = 0;
  #disagreements = 0;
  #errors = 0;

  constructor(o: ShadowOptions) {
    this.#engine = o.engine;
    this.#audit = o.audit;
    this.#onCompared = o.onCompared;
    this.origin = o.origin;
    this.since = o.clock.now().toISOString();
    // The candidate's own decisions are not `decision.made` events: only the live set's are.
    this.#decider = new Decider({
      engine: o.engine,
      audit: recordingAuditSink(o.clock, false),
      clock: o.clock,
      ...(o.entityLoader === undefined ? {} : { entityLoader: o.entityLoader }),
      contextSources: o.contextSources ?? [],
      ...(o.timeoutMs === undefined ? {} : { timeoutMs: o.timeoutMs }),
    });
  }

  /** The candidate's policy version. */
  get version(): string | null {
    return this.#engine.active?.version ?? null;
  }

  get stats(): ShadowStats {
    return { compared: this.#compared, disagreements: this.#disagreements, errors: this.#errors };
  }

  /** Decide `request` with the candidate and record a disagreement with `live`. Never throws. */
  async compare(request: DecisionRequest, live: Decision): Promise<'agree' | 'disagree' | 'error'> {
    let result: 'agree' | 'disagree' | 'error';
    try {
      const shadow = await this.#decider.decide({ ...request, purpose: 'enforce' });
      if (shadow.decision === live.decision) {
        result = 'agree';
      } else {
        await this.#audit.append({
          action: 'policy.shadow.disagreed',
          actor: { type: 'system', id: 'writ' },
          target: { type: 'policy_set', id: shadow.policyVersion ?? 'none', name: this.origin },
          outcome: 'success',
          reasons: ['shadow-disagreement'],
          correlationId: typeof request.correlationId === 'string' ? request.correlationId : live.decisionId,
          details: {
            decisionId: live.decisionId,
            // Only who, what and on what: the caller's context stays in the live `decision.made` record.
            principal: { type: request.principal.type, id: request.principal.id },
            action: typeof request.action === 'string' ? request.action : request.action.id,
            resource: { type: request.resource.type, id: request.resource.id },
            live: { decision: live.decision, reasons: live.reasons, policyIds: live.determiningPolicies, policyVersion: live.policyVersion },
            shadow: { decision: shadow.decision, reasons: shadow.reasons, policyIds: shadow.determiningPolicies, policyVersion: shadow.policyVersion },
            policyVersion: shadow.policyVersion,
          },
        });
        result = 'disagree';
      }
    } catch {
      result = 'error';
    }
    this.#compared += 1;
    if (result === 'disagree') this.#disagreements += 1;
    if (result === 'error') this.#errors += 1;
    try {
      this.#onCompared?.(result);
    } catch {
      // A metrics hook cannot break the comparison either.
    }
    return result;
  }
}
