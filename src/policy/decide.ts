/**
 * The decision point: `decide(request)` assembles entities and context from
 * the PDP's own data, the ports and the caller, evaluates the matching slice
 * of the active policy set with Cedar, and explains itself.
 *
 * INVARIANT: allow is the only explicit branch. A decision is `allow` only
 * when Cedar answered `allow` with no evaluation error, every required input
 * was present and the deadline held; every other path falls through to a
 * deny that names its reasons. Every decision goes to the audit sink.
 */
import { randomUUID } from 'node:crypto';
import type { AuditActor, AuditSink, Clock } from '../kernel/index.ts';
import { canonicalJson, newCorrelationId } from '../kernel/index.ts';
import { statefulIsAuthorized } from './cedar.ts';
import type { AuthorizationAnswer, CedarValueJson, EntityJson } from './cedar.ts';
import type { CompiledPolicySet } from './policy-set.ts';
import type { PolicyEngine } from './policy-set.ts';
import type { ContextSource, EntityLoader, EntityRef } from './ports.ts';
import { resolveAction, uidKey } from './schema-info.ts';
import type { AttributeNames } from './schema-info.ts';

/** Attributes the caller supplies for an entity (AuthZEN `properties`). Never parents. */
export interface EntityData {
  readonly uid: EntityRef;
  readonly attrs?: Readonly<Record<string, unknown>>;
}

/** A decision request in Cedar terms. */
export interface DecisionRequest {
  readonly principal: EntityRef;
  /** An action id declared in the schema (`tools/call`), or its full uid. */
  readonly action: string | EntityRef;
  readonly resource: EntityRef;
  /** Context from the enforcement point; allow-listed to the action's declared context. */
  readonly context?: Readonly<Record<string, unknown>>;
  /** Caller-supplied attributes, lowest precedence (PDP data and loaders win). */
  readonly entities?: readonly EntityData[];
  /** Joins the decision to its unit of work in the audit log. */
  readonly correlationId?: string;
  /** Who asked (the enforcement point's principal id); recorded in the audit event. */
  readonly requestedBy?: string;
  /**
   * Why it is asked. `explain` (a person asking), `search` (an AuthZEN search
   * deciding its candidates) and `analyze` (`writ policy analyze`) are not
   * enforced as such: the audit event says so and replay skips them.
   */
  readonly purpose?: 'enforce' | 'explain' | 'search' | 'analyze';
}

/** A decision, explained. */
export interface Decision {
  readonly decision: 'allow' | 'deny';
  /** Kebab-case, most important first. */
  readonly reasons: readonly string[];
  /** Ids of the policies that determined it (permits for allow, forbids for deny). */
  readonly determiningPolicies: readonly string[];
  readonly policyVersion: string | null;
  readonly decisionId: string;
  /** True when the answer came from the decision cache. */
  readonly cached: boolean;
  /** Engine messages for logs and `explain`; never sent to clients as is. */
  readonly diagnostics: readonly string[];
}

/** Sees a final decision (see {@link Decider.observe}). */
export type DecisionObserver = (request: DecisionRequest, decision: Decision) => unknown;

/** Options of a {@link Decider}; checked once at construction. */
export interface DeciderOptions {
  readonly engine: PolicyEngine;
  readonly audit: AuditSink;
  readonly clock: Clock;
  readonly entityLoader?: EntityLoader;
  readonly contextSources?: readonly ContextSource[];
  /**
   * Wall-clock budget for one decision, data gathering included (default
   * 200 ms). `Infinity` sets no budget: for tests on a `ManualClock` and for
   * offline tools, where load on the machine must never turn an answer into
   * a `decision-timeout`.
   */
  readonly timeoutMs?: number;
  /** Decision cache size; 0 turns it off (default 10,000). */
  readonly cacheEntries?: number;
  /** Evaluate the per-request slice (default) or the whole set. */
  readonly slicing?: boolean;
  /** Fraction of allow decisions recorded in the audit log (default 1: all). Denies are always recorded. */
  readonly allowSampleRate?: number;
  /** Monotonic milliseconds for latency and the deadline (default `performance.now`). */
  readonly monotonicNow?: () => number;
  /** Source of randomness for allow sampling (default `Math.random`). */
  readonly random?: () => number;
}

interface Outcome {
  readonly allow: boolean;
  readonly reasons: readonly string[];
  readonly determiningPolicies: readonly string[];
  readonly diagnostics: readonly string[];
  readonly target: EntityRef | undefined;
  readonly actionId: string;
}

const KEBAB = /^[a-z0-9]+(?:-[a-z0-9]+)*$/;
const MAX_ENTITIES = 512;
const MAX_ROUNDS = 6;
const TIMEOUT = Symbol('timeout');

function deny(reasons: readonly string[], extra?: Partial<Outcome>): Outcome {
  return {
    allow: false,
    reasons,
    determiningPolicies: extra?.determiningPolicies ?? [],
    diagnostics: extra?.diagnostics ?? [],
    target: extra?.target,
    actionId: extra?.actionId ?? '',
  };
}

function isRef(v: unknown): v is EntityRef {
  if (typeof v !== 'object' || v === null) return false;
  const r = v as Record<string, unknown>;
  return typeof r.type === 'string' && r.type !== '' && typeof r.id === 'string';
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * Copy `attrs` keeping only declared names (all when open), recursing into
 * declared records, and dropping nulls: unknown fields are ignored, never an error.
 */
function allowList(attrs: Readonly<Record<string, unknown>> | undefined, declared: AttributeNames, depth = 0): Record<string, CedarValueJson> {
  const out: Record<string, CedarValueJson> = {};
  if (attrs === undefined || depth > 8) return out;
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined) continue;
    if (declared === null) {
      out[k] = v as CedarValueJson;
      continue;
    }
    if (!declared.has(k)) continue;
    const inner = declared.get(k) ?? null;
    out[k] = inner !== null && isPlainObject(v) ? allowList(v, inner, depth + 1) : (v as CedarValueJson);
  }
  return out;
}

/** Entity references held directly in a value (one level, and in sets). */
function refsIn(v: unknown, out: EntityRef[]): void {
  if (Array.isArray(v)) {
    for (const x of v) refsIn(x, out);
    return;
  }
  if (isPlainObject(v) && isPlainObject(v.__entity) && isRef(v.__entity)) out.push(v.__entity);
}

function withDeadline<T>(p: Promise<T>, ms: number): Promise<T | typeof TIMEOUT> {
  if (ms === Infinity) return p;
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<typeof TIMEOUT>((resolve) => {
    timer = setTimeout(() => resolve(TIMEOUT), Math.max(0, ms));
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

const MAX_RECORDED_REQUEST = 16 * 1024;

/**
 * The request as data, for `writ policy replay`: principal, action, resource,
 * the caller's context and attributes. Context and attributes are what the
 * enforcement point sent (already visible to it); a request larger than
 * 16 KiB is recorded as truncated and is not replayable.
 */
function recordedRequest(r: DecisionRequest): { request?: unknown; requestTruncated?: true } {
  if (!isPlainObject(r) || !isRef(r.principal) || !isRef(r.resource)) return {};
  const data = {
    principal: { type: r.principal.type, id: r.principal.id },
    action: typeof r.action === 'string' ? r.action : isRef(r.action) ? { type: r.action.type, id: r.action.id } : null,
    resource: { type: r.resource.type, id: r.resource.id },
    context: isPlainObject(r.context) ? r.context : {},
    entities: Array.isArray(r.entities) ? r.entities.filter((e) => isRef(e?.uid)).map((e) => ({ uid: { type: e.uid.type, id: e.uid.id }, attrs: isPlainObject(e.attrs) ? e.attrs : {} })) : [],
  };
  let size: number;
  try {
    size = JSON.stringify(data).length;
  } catch {
    return { requestTruncated: true };
  }
  return size > MAX_RECORDED_REQUEST ? { requestTruncated: true } : { request: data };
}

function actorOf(p: EntityRef): AuditActor {
  const last = (p.type.split('::').pop() ?? '').toLowerCase();
  const type: AuditActor['type'] = last === 'agent' ? 'agent' : last === 'node' ? 'node' : last === 'owner' ? 'admin' : 'workload';
  return { type, id: p.id };
}

/**
 * The policy decision point.
 *
 * @example
 * const pdp = new Decider({ engine, audit, clock: systemClock });
 * const d = await pdp.decide({
 *   principal: { type: 'Writ::Agent', id: 'spiffe://example.org/agent/triage' },
 *   action: 'tools/call',
 *   resource: { type: 'Writ::Tool', id: 'github/create_issue' },
 * });
 * d.decision; // 'deny'
 * d.reasons;  // ['no-matching-permit']
 */
export class Decider {
  readonly #engine: PolicyEngine;
  readonly #audit: AuditSink;
  readonly #clock: Clock;
  readonly #loader: EntityLoader | undefined;
  readonly #sources: readonly ContextSource[];
  readonly #timeoutMs: number;
  readonly #cacheMax: number;
  readonly #slicing: boolean;
  readonly #sampleRate: number;
  readonly #now: () => number;
  readonly #random: () => number;
  readonly #cache = new Map<string, Outcome>();
  #observer: DecisionObserver | undefined;

  constructor(o: DeciderOptions) {
    const timeoutMs = o.timeoutMs ?? 200;
    const cacheEntries = o.cacheEntries ?? 10_000;
    const sampleRate = o.allowSampleRate ?? 1;
    if (!(timeoutMs > 0)) throw new TypeError('timeoutMs must be > 0');
    if (!Number.isInteger(cacheEntries) || cacheEntries < 0) throw new TypeError('cacheEntries must be an integer >= 0');
    if (!(sampleRate >= 0 && sampleRate <= 1)) throw new TypeError('allowSampleRate must be within [0, 1]');
    const keys = new Set<string>();
    for (const s of o.contextSources ?? []) {
      if (!KEBAB.test(s.name)) throw new TypeError(`context source name ${s.name} must be kebab-case`);
      if (keys.has(s.key)) throw new TypeError(`two context sources fill context.${s.key}`);
      keys.add(s.key);
    }
    this.#engine = o.engine;
    this.#audit = o.audit;
    this.#clock = o.clock;
    this.#loader = o.entityLoader;
    this.#sources = o.contextSources ?? [];
    this.#timeoutMs = timeoutMs;
    this.#cacheMax = cacheEntries;
    this.#slicing = o.slicing ?? true;
    this.#sampleRate = sampleRate;
    this.#now = o.monotonicNow ?? (() => performance.now());
    this.#random = o.random ?? Math.random;
    // INVARIANT: no cached decision outlives the policy set it was made with.
    this.#engine.onSwap(() => this.#cache.clear());
  }

  /** Drop every cached decision (call on any signal the versions do not capture). */
  invalidate(): void {
    this.#cache.clear();
  }

  /**
   * Let `fn` see every enforced decision (not explains, searches or analyses,
   * nor a deny only because the audit log refused it) once it is final, on a
   * later microtask; `undefined` stops it. What `fn` does or throws cannot
   * change the decision (shadow mode uses this).
   *
   * @example
   * pdp.observe((request, decision) => shadow.compare(request, decision));
   */
  observe(fn: DecisionObserver | undefined): void {
    this.#observer = fn;
  }

  #notify(request: DecisionRequest, decision: Decision): Decision {
    const fn = this.#observer;
    const purpose = isPlainObject(request) ? request.purpose : undefined;
    if (fn !== undefined && (purpose === undefined || purpose === 'enforce')) {
      void Promise.resolve()
        .then(() => fn(request, decision))
        .catch(() => undefined);
    }
    return decision;
  }

  /** Number of cached decisions (for metrics). */
  get cacheSize(): number {
    return this.#cache.size;
  }

  /** Decide one request. Never throws for bad input: every failure is a deny with a reason. */
  async decide(request: DecisionRequest): Promise<Decision> {
    const start = this.#now();
    const decisionId = randomUUID();
    const set = this.#engine.active;
    let outcome: Outcome;
    let cached = false;
    try {
      const r = await this.#evaluate(request, set, start);
      outcome = r.outcome;
      cached = r.cached;
    } catch (e) {
      outcome = deny(['engine-error'], { diagnostics: [e instanceof Error ? e.message : 'unknown failure'] });
    }
    const latencyMs = this.#now() - start;
    const decision: Decision = {
      decision: outcome.allow ? 'allow' : 'deny',
      reasons: outcome.reasons,
      determiningPolicies: outcome.determiningPolicies,
      policyVersion: set?.version ?? null,
      decisionId,
      cached,
      diagnostics: outcome.diagnostics,
    };
    if (outcome.allow && this.#sampleRate < 1 && this.#random() >= this.#sampleRate) return this.#notify(request, decision);
    try {
      await this.#audit.append({
        action: 'decision.made',
        actor: isRef(request?.principal) ? actorOf(request.principal) : { type: 'anonymous', id: 'unknown' },
        ...(outcome.target === undefined ? {} : { target: { type: outcome.target.type, id: outcome.target.id } }),
        outcome: outcome.allow ? 'success' : 'denied',
        reasons: outcome.reasons,
        correlationId: typeof request?.correlationId === 'string' ? request.correlationId : newCorrelationId(),
        details: {
          decision: decision.decision,
          decisionId,
          policyVersion: decision.policyVersion,
          latencyMs: Math.round(latencyMs * 1000) / 1000,
          action: outcome.actionId,
          policyIds: outcome.determiningPolicies,
          cached,
          ...(typeof request?.requestedBy === 'string' ? { requestedBy: request.requestedBy } : {}),
          ...(request?.purpose === 'explain' || request?.purpose === 'search' || request?.purpose === 'analyze' ? { purpose: request.purpose } : {}),
          ...recordedRequest(request),
        },
        time: this.#clock.now().toISOString(),
      });
    } catch (e) {
      // An unrecorded allow is not an allow (ARCHITECTURE.md invariant 3).
      // Not handed to the observer: this deny says nothing about the policies.
      return { ...decision, decision: 'deny', reasons: ['audit-unavailable', ...decision.reasons], diagnostics: [...decision.diagnostics, e instanceof Error ? e.message : 'audit failed'] };
    }
    return this.#notify(request, decision);
  }

  async #evaluate(req: DecisionRequest, set: CompiledPolicySet | undefined, start: number): Promise<{ outcome: Outcome; cached: boolean }> {
    const none = (o: Outcome) => ({ outcome: o, cached: false });
    if (set === undefined) return none(deny(['policy-set-unavailable']));
    if (!isPlainObject(req) || !isRef(req.principal) || !isRef(req.resource)) return none(deny(['request-invalid']));
    if (req.context !== undefined && !isPlainObject(req.context)) return none(deny(['request-invalid']));
    const info = set.schemaInfo;

    // Resolve the action in the schema.
    const action = typeof req.action === 'string' ? resolveAction(info, req.action) : isRef(req.action) ? req.action : undefined;
    const actionKey = action === undefined ? '' : uidKey(action.type, action.id);
    const target = req.resource;
    if (action === undefined || !info.actionContexts.has(actionKey)) {
      return none(deny(['unknown-action'], { target }));
    }
    const base = { target, actionId: action.id };
    if (!info.entityTypes.has(req.principal.type)) return none(deny(['unknown-principal-type'], base));
    if (!info.entityTypes.has(req.resource.type)) return none(deny(['unknown-resource-type'], base));

    const declaredContext = info.actionContexts.get(actionKey) ?? null;
    const callerContext = allowList(req.context, declaredContext);
    const callerEntities = new Map<string, EntityJson>();
    for (const e of req.entities ?? []) {
      if (!isRef(e?.uid) || !info.entityTypes.has(e.uid.type)) continue;
      const attrs = allowList(isPlainObject(e.attrs) ? e.attrs : undefined, info.entityTypes.get(e.uid.type) ?? null);
      callerEntities.set(uidKey(e.uid.type, e.uid.id), { uid: { type: e.uid.type, id: e.uid.id }, attrs, parents: [] });
    }
    const sources = this.#sources.filter((s) => declaredContext === null || declaredContext.has(s.key));

    // Cache: only when every port can vouch for its data version.
    const principalKey = uidKey(req.principal.type, req.principal.id);
    const resourceKey = uidKey(req.resource.type, req.resource.id);
    let cacheKey: string | undefined;
    if (this.#cacheMax > 0) {
      const versions: (string | undefined)[] = [set.version, this.#loader === undefined ? '-' : this.#loader.version()];
      for (const s of sources) versions.push(s.version());
      if (versions.every((v) => v !== undefined)) {
        cacheKey = `${versions.join('|')}|${principalKey}|${actionKey}|${resourceKey}|${canonicalJson(callerContext)}|${canonicalJson([...callerEntities.entries()].sort())}`;
        const hit = this.#cache.get(cacheKey);
        if (hit !== undefined) return { outcome: hit, cached: true };
      }
    }

    // Gather entities and context within the deadline.
    const gathered = await withDeadline(this.#gather(set, req, callerEntities, callerContext, sources, action), this.#timeoutMs - (this.#now() - start));
    if (gathered === TIMEOUT) return none(deny(['decision-timeout'], base));
    const { entities, context, missing, diagnostics } = gathered;
    const absent = [
      ...(entities.has(principalKey) ? [] : ['principal-not-found']),
      ...(entities.has(resourceKey) ? [] : ['resource-not-found']),
      ...missing,
    ];
    if (absent.length > 0) return none(deny(absent, { ...base, diagnostics }));

    // Evaluate the slice (or the whole set).
    // NOTE: building a slice the first time (a one-off preparse) is not charged to the budget.
    const sliceStart = this.#now();
    const slice = this.#slicing
      ? set.slice({ principalType: req.principal.type, principalKey, actionKey, resourceType: req.resource.type, resourceKey })
      : { preparsedId: set.fullSetId, policyIds: set.policies.map((p) => p.id) };
    const sliceMs = this.#now() - sliceStart;
    let outcome: Outcome;
    if (slice === undefined) {
      outcome = deny(['no-matching-permit'], base);
    } else {
      const answer = statefulIsAuthorized({
        principal: { type: req.principal.type, id: req.principal.id },
        action: { type: action.type, id: action.id },
        resource: { type: req.resource.type, id: req.resource.id },
        context,
        entities: [...entities.values()],
        preparsedPolicySetId: slice.preparsedId,
        preparsedSchemaName: set.schemaId,
        validateRequest: false,
      });
      outcome = this.#interpret(set, answer, base);
    }
    // A decision that overran its budget is not trusted, whatever it said.
    if (this.#now() - start - sliceMs > this.#timeoutMs) return none(deny(['decision-timeout'], { ...base, diagnostics: outcome.diagnostics }));
    if (cacheKey !== undefined) {
      if (this.#cache.size >= this.#cacheMax) {
        const oldest = this.#cache.keys().next();
        if (oldest.done !== true) this.#cache.delete(oldest.value);
      }
      this.#cache.set(cacheKey, outcome);
    }
    return none(outcome);
  }

  #interpret(set: CompiledPolicySet, answer: AuthorizationAnswer, base: { target: EntityRef; actionId: string }): Outcome {
    if (answer.type === 'success') {
      const { decision, diagnostics } = answer.response;
      const ids = diagnostics.reason;
      const reasonsOf = (fallback: string) => {
        const rs = ids.map((id) => set.policyById.get(id)?.reason ?? fallback);
        return rs.length === 0 ? [fallback] : [...new Set(rs)];
      };
      if (decision === 'allow' && diagnostics.errors.length === 0) {
        return { allow: true, reasons: reasonsOf('policy-permit'), determiningPolicies: ids, diagnostics: [], ...base };
      }
      if (diagnostics.errors.length > 0) {
        return deny(['policy-evaluation-error'], {
          ...base,
          determiningPolicies: diagnostics.errors.map((e) => e.policyId),
          diagnostics: diagnostics.errors.map((e) => `${e.policyId}: ${e.error.message}`),
        });
      }
      if (ids.length === 0) return deny(['no-matching-permit'], base);
      return deny(reasonsOf('policy-forbid'), { ...base, determiningPolicies: ids });
    }
    const messages = answer.errors.map((e) => e.message);
    const reason = messages.some((m) => m.includes('context')) ? 'context-invalid' : messages.some((m) => m.includes('entit')) ? 'entity-data-invalid' : 'engine-error';
    return deny([reason], { ...base, diagnostics: messages });
  }

  async #gather(
    set: CompiledPolicySet,
    req: DecisionRequest,
    callerEntities: ReadonlyMap<string, EntityJson>,
    callerContext: Record<string, CedarValueJson>,
    sources: readonly ContextSource[],
    action: EntityRef,
  ): Promise<{ entities: Map<string, EntityJson>; context: Record<string, CedarValueJson>; missing: string[]; diagnostics: string[] }> {
    const entities = new Map<string, EntityJson>();
    const start: EntityRef[] = [req.principal, req.resource];
    refsIn(Object.values(callerContext), start);
    await this.#closure(set, start, callerEntities, entities);

    const context: Record<string, CedarValueJson> = { ...callerContext };
    const missing: string[] = [];
    const diagnostics: string[] = [];
    const results = await Promise.allSettled(
      sources.map((s) => s.load({ principal: req.principal, action, resource: req.resource, entities })),
    );
    const more: EntityRef[] = [];
    results.forEach((r, i) => {
      const s = sources[i];
      if (s === undefined) return;
      // Sources win over the caller: an enforcement point cannot supply posture or risk.
      delete context[s.key];
      if (r.status === 'fulfilled' && r.value !== undefined && r.value !== null) {
        context[s.key] = r.value;
        refsIn([r.value], more);
        return;
      }
      // A source that failed is a deny, required or not: its absence is not the same as "no data" (invariant 1).
      if (r.status === 'rejected') diagnostics.push(`${s.name}: ${r.reason instanceof Error ? r.reason.message : 'failed'}`);
      if (s.required || r.status === 'rejected') missing.push(`${s.name}-unavailable`);
    });
    if (more.length > 0) await this.#closure(set, more, callerEntities, entities);
    return { entities, context, missing, diagnostics };
  }

  /** Load `start` and everything reachable through parents and entity-valued attributes. */
  async #closure(set: CompiledPolicySet, start: EntityRef[], caller: ReadonlyMap<string, EntityJson>, out: Map<string, EntityJson>): Promise<void> {
    let frontier = start;
    for (let round = 0; round < MAX_ROUNDS && frontier.length > 0 && out.size < MAX_ENTITIES; round++) {
      const wanted = new Map<string, EntityRef>();
      for (const u of frontier) {
        const k = uidKey(u.type, u.id);
        if (!out.has(k) && !wanted.has(k)) wanted.set(k, u);
      }
      if (wanted.size === 0) return;
      const loaded = new Map<string, EntityJson>();
      if (this.#loader !== undefined) {
        const r = await this.#loader.load([...wanted.values()]);
        for (const e of r.entities) {
          const u = '__entity' in e.uid ? e.uid.__entity : e.uid;
          loaded.set(uidKey(u.type, u.id), e);
        }
      }
      const next: EntityRef[] = [];
      for (const [k, u] of wanted) {
        const own = set.entities.get(k);
        const fromLoader = loaded.get(k);
        const fromCaller = caller.get(k);
        if (own === undefined && fromLoader === undefined && fromCaller === undefined) continue;
        // Precedence: PDP-owned data, then loaders, then the caller; parents never from the caller.
        const attrs = { ...(fromCaller?.attrs ?? {}), ...(fromLoader?.attrs ?? {}), ...(own?.attrs ?? {}) };
        const parents = [...(fromLoader?.parents ?? []), ...(own?.parents ?? [])];
        out.set(k, { uid: { type: u.type, id: u.id }, attrs, parents });
        for (const p of parents) next.push('__entity' in p ? p.__entity : p);
        refsIn(Object.values(attrs), next);
      }
      frontier = next;
    }
  }
}
