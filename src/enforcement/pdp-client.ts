/**
 * The policy decision point as an enforcement point sees it: one port,
 * {@link PdpClient}, with a remote adapter (OpenID AuthZEN Authorization API
 * 1.0 over HTTP, §6 Access Evaluation, §10.1 HTTPS binding) and a local one
 * (a {@link Decider} in the same process), plus a short-lived decision cache.
 *
 * Fail closed (issue 6, acceptance "fail closed"): `evaluate` never throws and
 * never allows on failure. Unreachable PDP, timeout, non-200, a body that is
 * not an AuthZEN decision, or any decision other than `true` → deny with a
 * reason code.
 */
import { randomBytes } from 'node:crypto';
import { canonicalJson, Secret } from '../kernel/index.ts';
import type { Clock } from '../kernel/index.ts';
import { toDecisionRequest } from '../policy/index.ts';
import type { AuthzenAction, AuthzenEntity, Decider, SchemaInfo } from '../policy/index.ts';
import type { EnforcementErrorCode } from './errors.ts';

/** One access question (AuthZEN 1.0 §6.1). */
export interface AccessRequest {
  readonly subject: AuthzenEntity;
  readonly action: AuthzenAction;
  readonly resource: AuthzenEntity;
  readonly context?: Readonly<Record<string, unknown>>;
}

/** The answer, always present: an allow, or a deny with its reason code. */
export interface PdpDecision {
  readonly allow: boolean;
  /** Set on every deny: `ERR_ENFORCE_DENIED` for a policy deny, else why the PDP could not answer. */
  readonly code?: EnforcementErrorCode;
  /** Lowercase, human-readable; never a credential. */
  readonly reason: string;
  /** Links the enforcement to the PDP's `decision.made` audit record (its correlation id, or the local decision id). */
  readonly decisionId: string;
  readonly cached: boolean;
}

/** Per-call options. */
export interface EvaluateOptions {
  /** 32 lowercase hex digits; sent as the W3C trace id so the PDP's audit record carries it. */
  readonly correlationId?: string;
}

/**
 * The PDP port every enforcement point uses.
 *
 * @example
 * const d = await pdp.evaluate({ subject: { type: 'workload', id }, action: { name: 'http:GET' }, resource: { type: 'resource', id: 'api/hello' } });
 * if (!d.allow) deny(d.code, d.reason);
 */
export interface PdpClient {
  evaluate(request: AccessRequest, options?: EvaluateOptions): Promise<PdpDecision>;
  /**
   * Decide several requests in one round trip (AuthZEN 1.0 §7, `execute_all`);
   * one decision per request, in order, each failing closed on its own.
   */
  evaluateMany?(requests: readonly AccessRequest[], options?: EvaluateOptions): Promise<readonly PdpDecision[]>;
}

/**
 * Decide `requests` through `pdp`: one batch when it can, else one by one.
 *
 * @example
 * const ds = await evaluateAll(pdp, tools.map(toRequest));
 */
export async function evaluateAll(pdp: PdpClient, requests: readonly AccessRequest[], options: EvaluateOptions = {}): Promise<readonly PdpDecision[]> {
  if (requests.length === 0) return [];
  if (pdp.evaluateMany !== undefined) return pdp.evaluateMany(requests, options);
  return Promise.all(requests.map((r) => pdp.evaluate(r, options)));
}

const HEX32 = /^[0-9a-f]{32}$/;

function newId(): string {
  return randomBytes(16).toString('hex');
}

function deny(code: EnforcementErrorCode, reason: string, decisionId: string): PdpDecision {
  return { allow: false, code, reason, decisionId, cached: false };
}

/** Options of {@link RemotePdp}. */
export interface RemotePdpOptions {
  /** Base URL of the Writ server (or any AuthZEN PDP). */
  readonly url: string;
  /** A PEP credential (admin principal with role `pep`); sent as a bearer, never logged. */
  readonly credential: Secret;
  /** Deadline of one evaluation (default 2000 ms); past it the answer is a deny. */
  readonly timeoutMs?: number;
  /** The fetch to use (default the global one). */
  readonly fetch?: typeof fetch;
}

/**
 * AuthZEN over HTTP: `POST <url>/access/v1/evaluation` with the PEP
 * credential. Only `200` with a body whose `decision` is exactly `true`
 * allows (AuthZEN 1.0 §5.5: the decision is a boolean).
 *
 * @example
 * const pdp = new RemotePdp({ url: 'http://127.0.0.1:7400', credential: new Secret(token) });
 */
export class RemotePdp implements PdpClient {
  readonly #endpoint: string;
  readonly #batchEndpoint: string;
  readonly #credential: Secret;
  readonly #timeoutMs: number;
  readonly #fetch: typeof fetch;

  constructor(options: RemotePdpOptions) {
    const base = new URL(options.url);
    if (base.protocol !== 'http:' && base.protocol !== 'https:') throw new TypeError('the PDP URL must be http or https');
    this.#endpoint = `${options.url.replace(/\/+$/, '')}/access/v1/evaluation`;
    this.#batchEndpoint = `${options.url.replace(/\/+$/, '')}/access/v1/evaluations`;
    this.#credential = options.credential;
    this.#timeoutMs = options.timeoutMs ?? 2000;
    if (!(this.#timeoutMs > 0)) throw new TypeError('timeoutMs must be positive');
    this.#fetch = options.fetch ?? fetch;
  }

  async evaluate(request: AccessRequest, options: EvaluateOptions = {}): Promise<PdpDecision> {
    const id = options.correlationId !== undefined && HEX32.test(options.correlationId) ? options.correlationId : newId();
    let res: Response;
    let text: string;
    try {
      res = await this.#fetch(this.#endpoint, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          authorization: `Bearer ${this.#credential.reveal()}`,
          // W3C Trace Context: the server takes the trace id as the correlation id of its audit record.
          traceparent: `00-${id}-${randomBytes(8).toString('hex')}-01`,
        },
        body: JSON.stringify(request),
        signal: AbortSignal.timeout(this.#timeoutMs),
      });
      text = await res.text();
    } catch (e) {
      const timedOut = e instanceof Error && (e.name === 'TimeoutError' || e.name === 'AbortError');
      return deny('ERR_ENFORCE_PDP_UNAVAILABLE', timedOut ? `policy decision point did not answer within ${this.#timeoutMs} ms` : 'policy decision point is unreachable', id);
    }
    const decisionId = res.headers.get('x-correlation-id') ?? id;
    if (res.status !== 200) return deny('ERR_ENFORCE_PDP_UNAVAILABLE', `policy decision point answered status ${res.status}`, decisionId);
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      return deny('ERR_ENFORCE_PDP_MALFORMED', 'policy decision point answered a body that is not JSON', decisionId);
    }
    if (typeof body !== 'object' || body === null || !('decision' in body) || typeof body.decision !== 'boolean') {
      return deny('ERR_ENFORCE_PDP_MALFORMED', 'policy decision point answered without a boolean `decision`', decisionId);
    }
    if (body.decision !== true) return deny('ERR_ENFORCE_DENIED', 'denied by policy', decisionId);
    return { allow: true, reason: 'allowed by policy', decisionId, cached: false };
  }

  /**
   * `POST <url>/access/v1/evaluations` (AuthZEN 1.0 §7) with `execute_all`:
   * item i allows only when `evaluations[i].decision` is exactly `true`; a
   * missing item, a failed call or a malformed answer denies every item.
   */
  async evaluateMany(requests: readonly AccessRequest[], options: EvaluateOptions = {}): Promise<readonly PdpDecision[]> {
    const id = options.correlationId !== undefined && HEX32.test(options.correlationId) ? options.correlationId : newId();
    const all = (code: EnforcementErrorCode, reason: string, decisionId: string) => requests.map(() => deny(code, reason, decisionId));
    if (requests.length === 0) return [];
    let res: Response;
    let text: string;
    try {
      res = await this.#fetch(this.#batchEndpoint, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          authorization: `Bearer ${this.#credential.reveal()}`,
          traceparent: `00-${id}-${randomBytes(8).toString('hex')}-01`,
        },
        body: JSON.stringify({ evaluations: requests, options: { evaluations_semantic: 'execute_all' } }),
        signal: AbortSignal.timeout(this.#timeoutMs),
      });
      text = await res.text();
    } catch (e) {
      const timedOut = e instanceof Error && (e.name === 'TimeoutError' || e.name === 'AbortError');
      return all('ERR_ENFORCE_PDP_UNAVAILABLE', timedOut ? `policy decision point did not answer within ${this.#timeoutMs} ms` : 'policy decision point is unreachable', id);
    }
    const decisionId = res.headers.get('x-correlation-id') ?? id;
    if (res.status !== 200) return all('ERR_ENFORCE_PDP_UNAVAILABLE', `policy decision point answered status ${res.status}`, decisionId);
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      return all('ERR_ENFORCE_PDP_MALFORMED', 'policy decision point answered a body that is not JSON', decisionId);
    }
    const list = typeof body === 'object' && body !== null && 'evaluations' in body && Array.isArray(body.evaluations) ? (body.evaluations as unknown[]) : undefined;
    if (list === undefined || list.length !== requests.length) return all('ERR_ENFORCE_PDP_MALFORMED', 'policy decision point answered without one decision per request', decisionId);
    return list.map((d) => {
      if (typeof d !== 'object' || d === null || !('decision' in d) || typeof d.decision !== 'boolean') return deny('ERR_ENFORCE_PDP_MALFORMED', 'policy decision point answered without a boolean `decision`', decisionId);
      return d.decision === true ? { allow: true, reason: 'allowed by policy', decisionId, cached: false } : deny('ERR_ENFORCE_DENIED', 'denied by policy', decisionId);
    });
  }
}

/** Options of {@link LocalPdp}. */
export interface LocalPdpOptions {
  readonly decider: Decider;
  /** The active schema, to resolve AuthZEN type names (`workload` → `Writ::Workload`); e.g. `() => engine.active?.schemaInfo`. */
  readonly schemaInfo: () => SchemaInfo | undefined;
  /** Recorded as `requestedBy` in the decision's audit record. */
  readonly requestedBy?: string;
}

/**
 * The PDP in this process: the same mapping as the server's AuthZEN route
 * (`toDecisionRequest`), decided and audited by the {@link Decider}.
 *
 * @example
 * const pdp = new LocalPdp({ decider, schemaInfo: () => engine.active?.schemaInfo });
 */
export class LocalPdp implements PdpClient {
  readonly #o: LocalPdpOptions;

  constructor(options: LocalPdpOptions) {
    this.#o = options;
  }

  async evaluate(request: AccessRequest, options: EvaluateOptions = {}): Promise<PdpDecision> {
    const id = options.correlationId ?? newId();
    try {
      const base = toDecisionRequest(this.#o.schemaInfo(), request, id);
      const d = await this.#o.decider.decide({ ...base, ...(this.#o.requestedBy === undefined ? {} : { requestedBy: this.#o.requestedBy }) });
      if (d.decision !== 'allow') return deny('ERR_ENFORCE_DENIED', d.reasons.length === 0 ? 'denied by policy' : `denied by policy: ${d.reasons.join(', ')}`, d.decisionId);
      return { allow: true, reason: 'allowed by policy', decisionId: d.decisionId, cached: false };
    } catch {
      return deny('ERR_ENFORCE_PDP_UNAVAILABLE', 'local policy decision point failed', id);
    }
  }
}

/** Options of {@link CachingPdp}. */
export interface CachingPdpOptions {
  readonly clock: Clock;
  /** How long an answer is reused (default 1000 ms; 0 disables the cache). */
  readonly ttlMs?: number;
  /** Most entries kept (default 10000); the oldest go first. */
  readonly maxEntries?: number;
}

interface CacheEntry {
  readonly request: AccessRequest;
  readonly decision: PdpDecision;
  readonly expiresAt: number;
}

/**
 * A decision cache in front of a PDP, keyed by the canonical JSON of the whole
 * request. Only answers the PDP gave are cached (allow and policy deny); a
 * failure to ask is never cached, and a cold or cleared cache asks again, so
 * the cache can only repeat a decision, never invent one. `invalidate` and
 * `clear` are the hooks for revocation and policy-change signals.
 *
 * @example
 * const pdp = new CachingPdp(new RemotePdp({ url, credential }), { clock: systemClock, ttlMs: 500 });
 * pdp.invalidate((r) => r.subject.id === revokedSpiffeId);
 */
export class CachingPdp implements PdpClient {
  readonly #inner: PdpClient;
  readonly #clock: Clock;
  readonly #ttlMs: number;
  readonly #max: number;
  readonly #entries = new Map<string, CacheEntry>();

  constructor(inner: PdpClient, options: CachingPdpOptions) {
    this.#inner = inner;
    this.#clock = options.clock;
    this.#ttlMs = options.ttlMs ?? 1000;
    this.#max = options.maxEntries ?? 10_000;
    if (!(this.#ttlMs >= 0) || !(this.#max > 0)) throw new TypeError('ttlMs must be >= 0 and maxEntries > 0');
  }

  /** Entries held now (expired ones included until touched). */
  get size(): number {
    return this.#entries.size;
  }

  async evaluate(request: AccessRequest, options: EvaluateOptions = {}): Promise<PdpDecision> {
    if (this.#ttlMs === 0) return this.#inner.evaluate(request, options);
    const key = canonicalJson(request);
    const now = this.#clock.nowMs();
    const hit = this.#entries.get(key);
    if (hit !== undefined) {
      if (hit.expiresAt > now) return { ...hit.decision, cached: true };
      this.#entries.delete(key);
    }
    const d = await this.#inner.evaluate(request, options);
    if (d.allow || d.code === 'ERR_ENFORCE_DENIED') {
      if (this.#entries.size >= this.#max) {
        const oldest = this.#entries.keys().next();
        if (oldest.done !== true) this.#entries.delete(oldest.value);
      }
      this.#entries.set(key, { request, decision: d, expiresAt: now + this.#ttlMs });
    }
    return d;
  }

  /** Batch through the cache: hits are answered here, the misses go to the inner PDP in one batch. */
  async evaluateMany(requests: readonly AccessRequest[], options: EvaluateOptions = {}): Promise<readonly PdpDecision[]> {
    if (this.#ttlMs === 0) return evaluateAll(this.#inner, requests, options);
    const now = this.#clock.nowMs();
    const out: (PdpDecision | undefined)[] = requests.map((r) => {
      const hit = this.#entries.get(canonicalJson(r));
      return hit !== undefined && hit.expiresAt > now ? { ...hit.decision, cached: true } : undefined;
    });
    const missIdx = out.flatMap((d, i) => (d === undefined ? [i] : []));
    const misses = missIdx.map((i) => requests[i]).filter((r): r is AccessRequest => r !== undefined);
    const answers = await evaluateAll(this.#inner, misses, options);
    missIdx.forEach((i, j) => {
      const d = answers[j];
      const r = requests[i];
      if (d === undefined || r === undefined) return;
      out[i] = d;
      if (d.allow || d.code === 'ERR_ENFORCE_DENIED') {
        if (this.#entries.size >= this.#max) {
          const oldest = this.#entries.keys().next();
          if (oldest.done !== true) this.#entries.delete(oldest.value);
        }
        this.#entries.set(canonicalJson(r), { request: r, decision: d, expiresAt: now + this.#ttlMs });
      }
    });
    return out.map((d) => d ?? deny('ERR_ENFORCE_PDP_MALFORMED', 'no decision for this request', newId()));
  }

  /** Drop the entries whose request matches (all when no predicate): a revocation or policy change. */
  invalidate(matches?: (request: AccessRequest) => boolean): number {
    let n = 0;
    for (const [k, e] of this.#entries) {
      if (matches === undefined || matches(e.request)) {
        this.#entries.delete(k);
        n++;
      }
    }
    return n;
  }

  /** Drop every entry. */
  clear(): void {
    this.#entries.clear();
  }
}
