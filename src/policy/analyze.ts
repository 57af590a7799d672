/**
 * Blast-radius analysis: what one principal can reach, or who can reach one
 * resource, under the active policy set. Every pair is decided with the real
 * `decide()` (so the answer is what enforcement would say for that request
 * and context), over the entities the PDP knows and the actions the schema
 * says apply; each finding names the policies that permit it.
 */
import type { DecideFn } from './authzen.ts';
import type { CompiledPolicySet } from './policy-set.ts';
import type { EntityLoader, EntityRef } from './ports.ts';
import { knownEntities } from './search.ts';

/** What to analyse: one principal (what can it reach) or one resource (who can reach it). */
export type AnalysisQuery = { readonly principal: EntityRef } | { readonly resource: EntityRef };

/** One allowed (principal, action, resource), with why. */
export interface AccessFinding {
  readonly principal: EntityRef;
  readonly action: string;
  readonly resource: EntityRef;
  /** The permits that allow it. */
  readonly determiningPolicies: readonly string[];
  readonly reasons: readonly string[];
}

/** The result of {@link analyzeAccess}. */
export interface AnalysisReport {
  readonly policyVersion: string | null;
  readonly findings: readonly AccessFinding[];
  /** Requests decided (allowed + denied). */
  readonly decided: number;
  readonly denied: number;
  /** True when `maxDecisions` stopped the analysis early: the findings are then a lower bound. */
  readonly truncated: boolean;
}

/** Where an analysis gets its candidates and decisions. */
export interface AnalyzeDeps {
  readonly decide: DecideFn;
  readonly set: CompiledPolicySet | undefined;
  readonly loaders?: readonly EntityLoader[];
}

/** Per-call options. */
export interface AnalyzeOptions {
  /** Context sent with every request (e.g. a posture for a what-if). */
  readonly context?: Readonly<Record<string, unknown>>;
  /** Stop after this many decisions (default 10,000). */
  readonly maxDecisions?: number;
  readonly correlationId?: string;
  readonly requestedBy?: string;
}

/**
 * What `query.principal` can reach, or who can reach `query.resource`.
 * Types are fully qualified (`Writ::Workload`).
 *
 * @example
 * const r = await analyzeAccess({ decide, set: engine.active }, { principal: { type: 'Writ::Workload', id: 'ledger' } });
 * r.findings; // [{ principal, action: 'http:GET', resource: { type: 'Writ::Service', id: 'payments-api' }, determiningPolicies: ['payments-team-calls-payments-api'], … }]
 */
export async function analyzeAccess(deps: AnalyzeDeps, query: AnalysisQuery, options: AnalyzeOptions = {}): Promise<AnalysisReport> {
  const set = deps.set;
  const max = options.maxDecisions ?? 10_000;
  if (set === undefined) return { policyVersion: null, findings: [], decided: 0, denied: 0, truncated: false };
  const info = set.schemaInfo;
  const loaders = deps.loaders ?? [];
  const byPrincipal = 'principal' in query;
  const fixed = byPrincipal ? query.principal : query.resource;
  const actions = [...info.actionAppliesTo.values()]
    .filter((a) => (byPrincipal ? a.principals.has(fixed.type) : a.resources.has(fixed.type)))
    .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));

  // The other side's candidates, per type, read once.
  const candidates = new Map<string, EntityRef[]>();
  const candidatesOf = async (type: string): Promise<EntityRef[]> => {
    let list = candidates.get(type);
    if (list === undefined) {
      list = await knownEntities(set, loaders, type);
      candidates.set(type, list);
    }
    return list;
  };

  const findings: AccessFinding[] = [];
  let decided = 0;
  let denied = 0;
  for (const applies of actions) {
    const action = applies.id;
    const otherTypes = [...(byPrincipal ? applies.resources : applies.principals)].sort();
    for (const t of otherTypes) {
      for (const other of await candidatesOf(t)) {
        if (decided >= max) return { policyVersion: set.version, findings, decided, denied, truncated: true };
        const principal = byPrincipal ? fixed : other;
        const resource = byPrincipal ? other : fixed;
        const d = await deps.decide({
          principal,
          action,
          resource,
          ...(options.context === undefined ? {} : { context: options.context }),
          ...(options.correlationId === undefined ? {} : { correlationId: options.correlationId }),
          ...(options.requestedBy === undefined ? {} : { requestedBy: options.requestedBy }),
          purpose: 'analyze',
        });
        decided += 1;
        if (d.decision !== 'allow') {
          denied += 1;
          continue;
        }
        findings.push({ principal, action, resource, determiningPolicies: d.determiningPolicies, reasons: d.reasons });
      }
    }
  }
  return { policyVersion: set.version, findings, decided, denied, truncated: false };
}
