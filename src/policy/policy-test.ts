/**
 * Policy test cases as data files: `{name?, entities, request, want: {decision, reasons?}}`.
 * `entities` are Cedar entity JSON served through an in-memory loader (the
 * policy set's own entities file still applies); `request` is a
 * {@link DecisionRequest}; `want.reasons`, when given, must equal the
 * decision's reasons as a set.
 */
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { AuditSink, Clock } from '../kernel/index.ts';
import type { EntityJson } from './cedar.ts';
import { Decider } from './decide.ts';
import type { Decision, DecisionRequest } from './decide.ts';
import { policyErrors } from './errors.ts';
import { recordingAuditSink } from './fakes.ts';
import type { PolicyEngine } from './policy-set.ts';
import { memoryEntityLoader } from './ports.ts';

/** One case. */
export interface PolicyCase {
  readonly name: string;
  readonly entities: readonly EntityJson[];
  readonly request: DecisionRequest;
  readonly want: { readonly decision: 'allow' | 'deny'; readonly reasons?: readonly string[] };
}

/** The outcome of one case. */
export interface PolicyCaseResult {
  readonly name: string;
  readonly pass: boolean;
  readonly want: PolicyCase['want'];
  readonly got: Decision;
  /** Why it failed, when it did. */
  readonly mismatch?: string;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function invalid(name: string, what: string): Error {
  return policyErrors.error('ERR_POLICY_CASE_INVALID', `case \`${name}\`: ${what}`);
}

/**
 * Check one parsed case file's shape.
 *
 * @example
 * parsePolicyCase({ entities: [], request: { principal, action: 'http:GET', resource }, want: { decision: 'deny' } }, 'x.case.json');
 */
export function parsePolicyCase(data: unknown, fallbackName: string): PolicyCase {
  if (!isObject(data)) throw invalid(fallbackName, 'must be a JSON object');
  const name = typeof data.name === 'string' && data.name !== '' ? data.name : fallbackName;
  if (!Array.isArray(data.entities)) throw invalid(name, '`entities` must be an array');
  if (!isObject(data.request)) throw invalid(name, '`request` must be an object');
  const r = data.request;
  for (const k of ['principal', 'resource'] as const) {
    const e = r[k];
    if (!isObject(e) || typeof e.type !== 'string' || typeof e.id !== 'string') throw invalid(name, `\`request.${k}\` must be {type, id}`);
  }
  if (typeof r.action !== 'string' && !isObject(r.action)) throw invalid(name, '`request.action` must be a string or {type, id}');
  if (r.context !== undefined && !isObject(r.context)) throw invalid(name, '`request.context` must be an object');
  if (!isObject(data.want)) throw invalid(name, '`want` must be an object');
  const d = data.want.decision;
  const decision = d === 'allow' || d === true ? 'allow' : d === 'deny' || d === false ? 'deny' : undefined;
  if (decision === undefined) throw invalid(name, '`want.decision` must be `allow` or `deny`');
  const reasons = data.want.reasons;
  if (reasons !== undefined && (!Array.isArray(reasons) || !reasons.every((x) => typeof x === 'string'))) {
    throw invalid(name, '`want.reasons` must be an array of strings');
  }
  return {
    name,
    entities: data.entities as EntityJson[],
    request: r as unknown as DecisionRequest,
    want: reasons === undefined ? { decision } : { decision, reasons: reasons as string[] },
  };
}

/**
 * Read every `*.case.json` under `dir` (recursively), sorted by path.
 *
 * @example
 * const cases = await readPolicyCases('./examples/policies/tests');
 */
export async function readPolicyCases(dir: string): Promise<PolicyCase[]> {
  const names = (await readdir(dir, { recursive: true })).map(String).filter((n) => n.endsWith('.case.json')).sort();
  const out: PolicyCase[] = [];
  for (const n of names) {
    let data: unknown;
    try {
      data = JSON.parse(await readFile(join(dir, n), 'utf8'));
    } catch (e) {
      throw policyErrors.error('ERR_POLICY_CASE_INVALID', `case \`${n}\`: not readable JSON`, { cause: e });
    }
    out.push(parsePolicyCase(data, n));
  }
  return out;
}

/**
 * Run cases against the engine's active set.
 *
 * @example
 * const results = await runPolicyCases(engine, cases, { clock: systemClock });
 * results.filter((r) => !r.pass);
 */
export async function runPolicyCases(
  engine: PolicyEngine,
  cases: readonly PolicyCase[],
  options: { clock: Clock; audit?: AuditSink },
): Promise<PolicyCaseResult[]> {
  // Policy tests decide; they do not record.
  const audit = options.audit ?? recordingAuditSink(options.clock, false);
  const results: PolicyCaseResult[] = [];
  for (const c of cases) {
    const pdp = new Decider({ engine, audit, clock: options.clock, entityLoader: memoryEntityLoader(c.entities), cacheEntries: 0, timeoutMs: Infinity });
    const got = await pdp.decide(c.request);
    let mismatch: string | undefined;
    if (got.decision !== c.want.decision) mismatch = `decision ${got.decision}, want ${c.want.decision} (reasons: ${got.reasons.join(', ')})`;
    else if (c.want.reasons !== undefined) {
      const a = [...new Set(got.reasons)].sort().join(',');
      const b = [...new Set(c.want.reasons)].sort().join(',');
      if (a !== b) mismatch = `reasons [${got.reasons.join(', ')}], want [${c.want.reasons.join(', ')}]`;
    }
    results.push(mismatch === undefined ? { name: c.name, pass: true, want: c.want, got } : { name: c.name, pass: false, want: c.want, got, mismatch });
  }
  return results;
}
