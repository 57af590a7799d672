/**
 * Typed signals: what changed about a workload, node, owner, task or policy.
 * Untrusted input is copied field by field (allow-list) and checked with flat
 * guard clauses, one message each; SPIFFE IDs follow the kernel rules.
 */
import { SpiffeId } from '../kernel/index.ts';
import { signalsErrors } from './errors.ts';

/** The signal types. */
export const SIGNAL_TYPES = ['posture-changed', 'risk-changed', 'credential-compromised', 'owner-offboarded', 'task-completed', 'entry-deleted', 'node-evicted', 'policy-changed'] as const;
export type SignalType = (typeof SIGNAL_TYPES)[number];

/** Risk levels, lowest first (CAEP risk-level-change uses the same words). */
export const RISK_LEVELS = ['none', 'low', 'medium', 'high', 'critical'] as const;
export type RiskLevel = (typeof RISK_LEVELS)[number];

/** A validated signal. `subject` is what it is about, the key the PDP looks up by. */
export type Signal =
  | { readonly type: 'posture-changed'; readonly subject: string; readonly subjectKind: 'workload' | 'node'; readonly score: number; readonly failingChecks: readonly string[] }
  | { readonly type: 'risk-changed'; readonly subject: string; readonly level: RiskLevel }
  | { readonly type: 'credential-compromised'; readonly subject: string; readonly leaseId?: string; readonly tokenId?: string }
  | { readonly type: 'owner-offboarded'; readonly subject: string }
  | { readonly type: 'task-completed'; readonly subject: string; readonly workload?: string }
  | { readonly type: 'entry-deleted'; readonly subject: string; readonly entryId: string }
  | { readonly type: 'node-evicted'; readonly subject: string; readonly nodeId?: string }
  | { readonly type: 'policy-changed'; readonly subject: string; readonly policyVersion: string };

/** A stored signal. */
export interface SignalRecord {
  readonly id: string;
  readonly type: SignalType;
  readonly subject: string;
  /** When Writ accepted it (ISO-8601). */
  readonly receivedAt: string;
  /** When the source says it happened (ISO-8601); `receivedAt` when not given. */
  readonly occurredAt: string;
  /** Who sent it: admin principal id, SSF transmitter issuer, `writ`. */
  readonly source: string;
  /** Kebab-case reason, when given. */
  readonly reason?: string;
  readonly signal: Signal;
}

const ID = /^[A-Za-z0-9._:@/+-]{1,200}$/;
const KEBAB = /^[a-z0-9]+(?:-[a-z0-9]+)*$/;
const ISO = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:Z|[+-]\d{2}:\d{2})$/;
const MAX_CHECKS = 64;

function fail(message: string): Error {
  return signalsErrors.error('ERR_SIGNALS_INVALID', message);
}

function show(v: unknown): string {
  const s = typeof v === 'string' ? v : JSON.stringify(v) ?? String(v);
  return s.length > 80 ? `${s.slice(0, 80)}…` : s;
}

/** A SPIFFE ID by the kernel rules; throws `ERR_SIGNALS_INVALID` naming the field. */
function spiffe(v: unknown, field: string): string {
  if (typeof v !== 'string') throw fail(`\`${field}\` must be a SPIFFE ID string`);
  const id = SpiffeId.tryParse(v);
  if (id === undefined) throw fail(`\`${field}\` \`${show(v)}\` is not a valid SPIFFE ID`);
  return id.toString();
}

function ident(v: unknown, field: string): string {
  if (typeof v !== 'string' || !ID.test(v)) throw fail(`\`${field}\` must be 1-200 characters of letters, digits and . _ : @ / + -`);
  return v;
}

function optional<T>(o: Record<string, unknown>, k: string, f: (v: unknown, field: string) => T): T | undefined {
  return o[k] === undefined ? undefined : f(o[k], k);
}

const FIELDS: Readonly<Record<SignalType, readonly string[]>> = {
  'posture-changed': ['subjectKind', 'score', 'failingChecks'],
  'risk-changed': ['level'],
  'credential-compromised': ['leaseId', 'tokenId'],
  'owner-offboarded': [],
  'task-completed': ['workload'],
  'entry-deleted': ['entryId'],
  'node-evicted': ['nodeId'],
  'policy-changed': ['policyVersion'],
};
const COMMON = ['type', 'subject', 'reason', 'occurredAt'];

/** The input of {@link parseSignal}, as it arrives. */
export interface ParsedSignal {
  readonly signal: Signal;
  readonly reason?: string;
  readonly occurredAt?: string;
}

/**
 * Validate an untrusted signal. Subjects by type: posture, risk, compromise,
 * entry and node signals name a SPIFFE ID; `owner-offboarded` an owner id;
 * `task-completed` a task id; `policy-changed` the policy set name.
 *
 * @example
 * parseSignal({ type: 'posture-changed', subject: 'spiffe://writ.local/ci', subjectKind: 'workload', score: 40, failingChecks: ['disk-encryption'] });
 */
export function parseSignal(input: unknown): ParsedSignal {
  if (typeof input !== 'object' || input === null || Array.isArray(input)) throw fail('a signal must be a JSON object');
  const o = input as Record<string, unknown>;
  const type = o.type;
  if (typeof type !== 'string' || !(SIGNAL_TYPES as readonly string[]).includes(type)) throw fail(`unknown signal type \`${show(type)}\`; one of ${SIGNAL_TYPES.join(', ')}`);
  const t = type as SignalType;
  const allowed = new Set([...COMMON, ...FIELDS[t]]);
  for (const k of Object.keys(o)) if (!allowed.has(k)) throw fail(`field \`${show(k)}\` is not allowed in a \`${t}\` signal`);
  const reason = optional(o, 'reason', (v) => {
    if (typeof v !== 'string' || v.length > 64 || !KEBAB.test(v)) throw fail('`reason` must be kebab-case, at most 64 characters');
    return v;
  });
  const occurredAt = optional(o, 'occurredAt', (v) => {
    if (typeof v !== 'string' || !ISO.test(v) || Number.isNaN(Date.parse(v))) throw fail('`occurredAt` must be an ISO-8601 date-time');
    return new Date(v).toISOString();
  });
  const signal = parseBody(t, o);
  return { signal, ...(reason === undefined ? {} : { reason }), ...(occurredAt === undefined ? {} : { occurredAt }) };
}

function parseBody(t: SignalType, o: Record<string, unknown>): Signal {
  switch (t) {
    case 'posture-changed': {
      const subject = spiffe(o.subject, 'subject');
      const subjectKind = o.subjectKind ?? 'workload';
      if (subjectKind !== 'workload' && subjectKind !== 'node') throw fail('`subjectKind` must be `workload` or `node`');
      const score = o.score;
      if (typeof score !== 'number' || !Number.isInteger(score) || score < 0 || score > 100) throw fail('`score` must be an integer from 0 to 100');
      const checks = o.failingChecks ?? [];
      if (!Array.isArray(checks) || checks.length > MAX_CHECKS) throw fail(`\`failingChecks\` must be an array of at most ${MAX_CHECKS} check names`);
      const failingChecks: string[] = [];
      for (const c of checks as unknown[]) {
        if (typeof c !== 'string' || c.length > 64 || !KEBAB.test(c)) throw fail(`failing check \`${show(c)}\` must be kebab-case, at most 64 characters`);
        failingChecks.push(c);
      }
      return { type: t, subject, subjectKind, score, failingChecks };
    }
    case 'risk-changed': {
      const subject = spiffe(o.subject, 'subject');
      const level = o.level;
      if (typeof level !== 'string' || !(RISK_LEVELS as readonly string[]).includes(level)) throw fail(`\`level\` must be one of ${RISK_LEVELS.join(', ')}`);
      return { type: t, subject, level: level as RiskLevel };
    }
    case 'credential-compromised': {
      const subject = spiffe(o.subject, 'subject');
      const leaseId = optional(o, 'leaseId', ident);
      const tokenId = optional(o, 'tokenId', ident);
      return { type: t, subject, ...(leaseId === undefined ? {} : { leaseId }), ...(tokenId === undefined ? {} : { tokenId }) };
    }
    case 'owner-offboarded':
      return { type: t, subject: ident(o.subject, 'subject') };
    case 'task-completed': {
      const workload = optional(o, 'workload', spiffe);
      return { type: t, subject: ident(o.subject, 'subject'), ...(workload === undefined ? {} : { workload }) };
    }
    case 'entry-deleted':
      return { type: t, subject: spiffe(o.subject, 'subject'), entryId: ident(o.entryId, 'entryId') };
    case 'node-evicted': {
      const nodeId = optional(o, 'nodeId', ident);
      return { type: t, subject: spiffe(o.subject, 'subject'), ...(nodeId === undefined ? {} : { nodeId }) };
    }
    case 'policy-changed':
      return { type: t, subject: ident(o.subject ?? 'policy', 'subject'), policyVersion: ident(o.policyVersion, 'policyVersion') };
  }
}
