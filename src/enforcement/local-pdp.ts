/**
 * The local PDP mode of an enforcement point: the active policy set's source
 * (`GET <server>/v1/policy/bundle`, ETag = version) compiled here with the
 * policy context's {@link PolicyEngine} and decided by a {@link Decider} in
 * this process, so a decision needs no round trip to the server.
 *
 * Fail closed: until a bundle has compiled, every evaluation is a deny with
 * `ERR_ENFORCE_POLICY_UNAVAILABLE`. A fetched bundle replaces the serving set
 * only when it compiles and compiles to the version the server advertised;
 * otherwise the previous set keeps serving (reported through `log`).
 *
 * NOTE: the local Decider has the clock as its only context source. The
 * server's live sources (posture, risk, registered identities) are not here,
 * so `context has posture` guards do not fire locally; remote mode is for
 * decisions that need them.
 */
import { randomBytes } from 'node:crypto';
import { Counter, Gauge } from 'prom-client';
import type { Registry } from 'prom-client';
import type { AuditSink, Clock, Secret } from '../kernel/index.ts';
import { Decider, PolicyEngine, clockContextSource, compilePolicySet } from '../policy/index.ts';
import type { PolicySource, SourceFile } from '../policy/index.ts';
import { LocalPdp } from './pdp-client.ts';
import type { AccessRequest, EvaluateOptions, PdpClient, PdpDecision } from './pdp-client.ts';

/** A policy bundle as the server serves it. */
export interface PolicyBundle {
  /** `pv-<hex>`: the content hash the source compiles to. */
  readonly version: string;
  readonly source: PolicySource;
}

/** What one refresh did. */
export type BundleRefresh =
  | { readonly outcome: 'unchanged'; readonly version: string | undefined }
  | { readonly outcome: 'updated'; readonly version: string; readonly previous: string | undefined }
  | { readonly outcome: 'rejected'; readonly version: string; readonly problems: readonly string[] }
  | { readonly outcome: 'unavailable'; readonly reason: string };

/** Options of {@link SyncedLocalPdp}. */
export interface SyncedLocalPdpOptions {
  /** Base URL of the Writ server. */
  readonly url: string;
  /** The PEP credential (role `pep`); sent as a bearer, never logged. */
  readonly credential: Secret;
  readonly clock: Clock;
  /** Where local decisions (`decision.made`) and policy swaps (`policy-set.activated` / `.rejected`) are recorded. */
  readonly audit: AuditSink;
  /** Recorded as `requestedBy` in each decision's audit record. */
  readonly requestedBy?: string;
  /** Wall-clock budget of one local decision (default 2000 ms). */
  readonly decisionTimeoutMs?: number;
  /** Deadline of one bundle fetch (default 10000 ms). */
  readonly fetchTimeoutMs?: number;
  /** Period of the ETag poll once a set serves (default 30000 ms); until then retries come every second at most. */
  readonly pollIntervalMs?: number;
  /** One line per bundle change, rejection or outage (never a credential). */
  readonly log?: (line: Readonly<Record<string, unknown>>) => void;
  /** The fetch to use (default the global one). */
  readonly fetch?: typeof fetch;
  /** Where to register `writ_proxy_local_policy_ready` and `writ_proxy_local_policy_refreshes_total{outcome}`. */
  readonly metrics?: Registry;
}

const VERSION = /^pv-[0-9a-f]{1,64}$/;
const MAX_FILES = 100_000;
const MAX_PATH = 1024;

function sourceFile(v: unknown, field: string): SourceFile {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error(`\`${field}\` is not an object`);
  const o = v as Record<string, unknown>;
  if (typeof o.path !== 'string' || o.path === '' || o.path.length > MAX_PATH) throw new Error(`\`${field}.path\` is not a file path`);
  if (typeof o.text !== 'string') throw new Error(`\`${field}.text\` is not a string`);
  return { path: o.path, text: o.text };
}

/**
 * Copy an untrusted bundle body into a {@link PolicyBundle}, allow-listing
 * its fields; throws an `Error` naming the first bad one.
 *
 * @example
 * const b = parsePolicyBundle(await res.json());
 */
export function parsePolicyBundle(body: unknown): PolicyBundle {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new Error('the bundle is not a JSON object');
  const o = body as Record<string, unknown>;
  if (typeof o.version !== 'string' || !VERSION.test(o.version)) throw new Error('`version` is not a policy version (`pv-<hex>`)');
  const schema = sourceFile(o.schema, 'schema');
  if (!Array.isArray(o.files) || o.files.length > MAX_FILES) throw new Error('`files` is not an array of policy files');
  const files = o.files.map((f, i) => sourceFile(f, `files[${i}]`));
  const entities = o.entities === undefined ? undefined : sourceFile(o.entities, 'entities');
  return { version: o.version, source: entities === undefined ? { schema, files } : { schema, files, entities } };
}

/**
 * A {@link PdpClient} deciding with a local copy of the server's policy set,
 * kept current by `refresh()` (call it on a `policy-changed` revocation
 * event) and by an ETag poll (`start()`).
 *
 * @example
 * const pdp = new SyncedLocalPdp({ url, credential: new Secret(token), clock: systemClock, audit });
 * pdp.onSwap(() => proxy.onPolicyChanged());
 * await pdp.start();
 */
export class SyncedLocalPdp implements PdpClient {
  readonly engine: PolicyEngine;
  readonly #o: SyncedLocalPdpOptions;
  readonly #endpoint: string;
  readonly #local: LocalPdp;
  readonly #fetch: typeof fetch;
  readonly #fetchTimeoutMs: number;
  readonly #pollMs: number;
  readonly #swapListeners = new Set<(version: string) => void>();
  /** The version a bundle was last rejected at: named in If-None-Match so it is not fetched and compiled again. */
  #rejected: string | undefined;
  #inflight: Promise<BundleRefresh> | undefined;
  #again = false;
  #timer: NodeJS.Timeout | undefined;
  #stopped = false;
  #lastOutage: string | undefined;
  readonly #refreshes: Counter<'outcome'> | undefined;

  constructor(options: SyncedLocalPdpOptions) {
    const base = new URL(options.url);
    if (base.protocol !== 'http:' && base.protocol !== 'https:') throw new TypeError('the server URL must be http or https');
    this.#o = options;
    this.#endpoint = `${options.url.replace(/\/+$/, '')}/v1/policy/bundle`;
    this.#fetch = options.fetch ?? fetch;
    this.#fetchTimeoutMs = options.fetchTimeoutMs ?? 10_000;
    this.#pollMs = options.pollIntervalMs ?? 30_000;
    if (!(this.#fetchTimeoutMs > 0) || !(this.#pollMs > 0)) throw new TypeError('fetchTimeoutMs and pollIntervalMs must be positive');
    this.engine = new PolicyEngine({ clock: options.clock, audit: options.audit });
    const decider = new Decider({
      engine: this.engine,
      audit: options.audit,
      clock: options.clock,
      contextSources: [clockContextSource(options.clock)],
      timeoutMs: options.decisionTimeoutMs ?? 2000,
    });
    this.#local = new LocalPdp({ decider, schemaInfo: () => this.engine.active?.schemaInfo, ...(options.requestedBy === undefined ? {} : { requestedBy: options.requestedBy }) });
    this.engine.onSwap((set) => {
      for (const fn of this.#swapListeners) fn(set.version);
    });
    const reg = options.metrics;
    if (reg !== undefined) {
      const engine = this.engine;
      new Gauge({ name: 'writ_proxy_local_policy_ready', help: 'local PDP mode: 1 while a compiled policy set serves, 0 while every request is denied (ERR_ENFORCE_POLICY_UNAVAILABLE)', registers: [reg], collect() {
        this.set(engine.active === undefined ? 0 : 1);
      } });
      this.#refreshes = new Counter({ name: 'writ_proxy_local_policy_refreshes_total', help: 'local PDP mode: policy bundle fetches by outcome (unchanged, updated, rejected, unavailable)', labelNames: ['outcome'] as const, registers: [reg] });
    }
  }

  /** The version serving now; undefined until a bundle compiled. */
  get version(): string | undefined {
    return this.engine.active?.version;
  }

  /** Call `fn` after each swap to a new set (drop decisions cached under the old one); returns an unsubscribe function. */
  onSwap(fn: (version: string) => void): () => void {
    this.#swapListeners.add(fn);
    return () => this.#swapListeners.delete(fn);
  }

  async evaluate(request: AccessRequest, options: EvaluateOptions = {}): Promise<PdpDecision> {
    // INVARIANT: no set, no allow.
    if (this.engine.active === undefined) {
      return { allow: false, code: 'ERR_ENFORCE_POLICY_UNAVAILABLE', reason: 'no policy bundle has been fetched and compiled from the server yet', decisionId: options.correlationId ?? randomBytes(16).toString('hex'), cached: false };
    }
    return this.#local.evaluate(request, options);
  }

  /**
   * Fetch the bundle (conditionally, by ETag) and install it if it changed
   * and compiles. Concurrent calls share one fetch; a call made while a fetch
   * is in flight runs one more fetch after it, so a change announced
   * mid-fetch is not missed. Never throws.
   */
  refresh(): Promise<BundleRefresh> {
    if (this.#inflight !== undefined) {
      this.#again = true;
      return this.#inflight;
    }
    const once = async (): Promise<BundleRefresh> => {
      let r: BundleRefresh;
      try {
        r = await this.#refreshOnce();
      } catch (e) {
        // An engine fault, or an audit sink that refused the load's record: reported, never thrown (`version` says what serves).
        r = this.#unavailable(`the bundle refresh failed: ${e instanceof Error ? e.message.slice(0, 200) : 'unknown error'}`);
      }
      this.#refreshes?.labels(r.outcome).inc();
      return r;
    };
    const run = (async (): Promise<BundleRefresh> => {
      let r = await once();
      while (this.#again && !this.#stopped) {
        this.#again = false;
        r = await once();
      }
      return r;
    })();
    this.#inflight = run;
    void run.finally(() => {
      if (this.#inflight === run) this.#inflight = undefined;
    });
    return run;
  }

  /** First fetch (awaited), then the poll: every second until a set serves, then every `pollIntervalMs`. */
  async start(): Promise<BundleRefresh> {
    this.#stopped = false;
    const first = await this.refresh();
    this.#schedule();
    return first;
  }

  /** Stop polling. */
  stop(): void {
    this.#stopped = true;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  #schedule(): void {
    if (this.#stopped) return;
    const ms = this.engine.active === undefined ? Math.min(this.#pollMs, 1000) : this.#pollMs;
    this.#timer = setTimeout(() => {
      void this.refresh().finally(() => this.#schedule());
    }, ms);
    this.#timer.unref();
  }

  async #refreshOnce(): Promise<BundleRefresh> {
    const active = this.engine.active?.version;
    const known = [active, this.#rejected].filter((v): v is string => v !== undefined).map((v) => `"${v}"`);
    let res: Response;
    let text: string;
    try {
      res = await this.#fetch(this.#endpoint, {
        headers: { authorization: `Bearer ${this.#o.credential.reveal()}`, accept: 'application/json', ...(known.length === 0 ? {} : { 'if-none-match': known.join(', ') }) },
        signal: AbortSignal.timeout(this.#fetchTimeoutMs),
      });
      text = await res.text();
    } catch (e) {
      const timedOut = e instanceof Error && (e.name === 'TimeoutError' || e.name === 'AbortError');
      return this.#unavailable(timedOut ? `the server did not answer within ${this.#fetchTimeoutMs} ms` : 'the server is unreachable');
    }
    if (res.status === 304) {
      this.#lastOutage = undefined;
      return { outcome: 'unchanged', version: active };
    }
    if (res.status !== 200) {
      let code = '';
      try {
        const b = JSON.parse(text) as { code?: unknown };
        if (typeof b.code === 'string') code = ` (${b.code.slice(0, 64)})`;
      } catch {
        // no code to report
      }
      return this.#unavailable(`the server answered status ${res.status}${code}`);
    }
    let bundle: PolicyBundle;
    try {
      bundle = parsePolicyBundle(JSON.parse(text));
    } catch (e) {
      return this.#unavailable(`the server answered a malformed bundle: ${e instanceof Error ? e.message : 'not JSON'}`);
    }
    this.#lastOutage = undefined;
    if (bundle.version === active) return { outcome: 'unchanged', version: active };
    // INVARIANT: only a set that compiles, to the version the server advertised, is installed.
    const compiled = compilePolicySet(bundle.source);
    let problems: string[];
    if (compiled.ok && compiled.set.version !== bundle.version) {
      problems = [`the bundle compiled to version ${compiled.set.version}, not the advertised ${bundle.version}`];
    } else {
      // A source that does not compile is loaded anyway so the engine records `policy-set.rejected` in the audit log;
      // it keeps the previous set serving. Files compile once: the engine reuses what compilePolicySet did.
      const report = await this.engine.load(bundle.source);
      if (report.ok && report.activeVersion === bundle.version) {
        this.#rejected = undefined;
        this.#o.log?.({ msg: 'policy', updated: bundle.version, previous: active ?? null, policies: this.engine.active?.policies.length ?? 0 });
        return { outcome: 'updated', version: bundle.version, previous: active };
      }
      problems = report.problems.slice(0, 20).map((p) => `${p.file}:${p.line}:${p.column}: ${p.message}`);
    }
    this.#rejected = bundle.version;
    this.#o.log?.({ msg: 'policy', error: `policy bundle ${bundle.version} rejected, ${active === undefined ? 'no set serves (every request is denied)' : `${active} keeps serving`}`, problems: problems.slice(0, 5) });
    return { outcome: 'rejected', version: bundle.version, problems };
  }

  #unavailable(reason: string): BundleRefresh {
    // One line per kind of outage, not one per retry.
    if (this.#lastOutage !== reason) {
      this.#lastOutage = reason;
      const active = this.engine.active?.version;
      this.#o.log?.({ msg: 'policy', error: `cannot fetch the policy bundle: ${reason}; ${active === undefined ? 'no set serves (every request is denied)' : `${active} keeps serving`}` });
    }
    return { outcome: 'unavailable', reason };
  }
}
