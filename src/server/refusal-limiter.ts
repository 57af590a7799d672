/**
 * Bounded audit of anonymous refusals. A caller that presents no valid
 * credential costs Writ nothing to refuse, but each refusal is a durable
 * audit row: left unbounded, anyone who can reach the port can fill the
 * disk. Each source address gets a token bucket (`audit.anonymousRefusalBurst`
 * refusals at once, refilled at `audit.anonymousRefusalsPerMinute`); refusals
 * beyond it are not audited one by one but counted, and the count goes into
 * one `api.refusals.suppressed` event per source and window, so the evidence
 * of the flood is kept and only its volume is not. Authenticated callers are
 * never limited: every call they make, refused or not, is audited.
 */
import { newCorrelationId } from '../kernel/index.ts';
import type { AuditSink, Clock } from '../kernel/index.ts';

/** Where a refusal happened: the admin API (401) or the OAuth endpoints (anonymous `token.refused`). */
export type RefusalKind = 'admin-api' | 'oauth';

export interface RefusalLimiterOptions {
  /** Refusals per source audited at once, before the limit applies. */
  readonly burst: number;
  /** Refill rate of a source's bucket. */
  readonly perMinute: number;
  /** Sources tracked at once; beyond, new sources share one bucket (`*`). */
  readonly maxSources?: number;
  /** How often suppressed counts are written (default 60 s). */
  readonly flushEveryMs?: number;
  /** Told when the counts could not be written (they are kept and tried again). */
  readonly onError?: (e: unknown) => void;
}

interface Bucket {
  tokens: number;
  atMs: number;
}

interface Suppressed {
  count: number;
  firstAt: string;
  lastAt: string;
}

const SHARED = '*';

/** Every source together may have this many times one source's budget audited one by one. */
export const GLOBAL_FACTOR = 10;

/**
 * The source a refusal is counted under: the address itself for IPv4 (an
 * IPv4-mapped IPv6 address counts as its IPv4), the /64 for IPv6, since one
 * host commonly holds a whole /64 and could otherwise rotate through it.
 *
 * @example
 * sourceOf('2001:db8:1:2:aa::7'); // '2001:db8:1:2::/64'
 */
export function sourceOf(address: string): string {
  const mapped = /^::ffff:(\d{1,3}(?:\.\d{1,3}){3})$/i.exec(address);
  if (mapped?.[1] !== undefined) return mapped[1];
  if (!address.includes(':')) return address;
  const bare = address.split('%')[0] ?? '';
  const [head = '', tail] = bare.split('::');
  const h = head === '' ? [] : head.split(':');
  const t = tail === undefined || tail === '' ? [] : tail.split(':');
  const groups = tail === undefined ? h : [...h, ...Array<string>(Math.max(0, 8 - h.length - t.length)).fill('0'), ...t];
  return `${groups.slice(0, 4).map((g) => (Number.parseInt(g, 16) || 0).toString(16)).join(':')}::/64`;
}

/**
 * @example
 * const limiter = new RefusalAuditLimiter({ burst: 100, perMinute: 60 }, audit, systemClock);
 * if (limiter.admit(req.ip, 'admin-api')) await audit.append(refusal);
 * await limiter.close();
 */
export class RefusalAuditLimiter {
  readonly #o: Required<Omit<RefusalLimiterOptions, 'onError'>>;
  readonly #onError: (e: unknown) => void;
  readonly #audit: AuditSink;
  readonly #clock: Clock;
  readonly #buckets = new Map<string, Bucket>();
  readonly #suppressed = new Map<string, Suppressed>();
  readonly #global: Bucket;
  #timer: NodeJS.Timeout | undefined;
  /** Refusals counted instead of audited, since start (for `/metrics`). */
  suppressedTotal = 0;

  constructor(o: RefusalLimiterOptions, audit: AuditSink, clock: Clock) {
    if (!(o.burst >= 1) || !(o.perMinute >= 0)) throw new TypeError('refusal limiter: burst must be >= 1 and perMinute >= 0');
    const { onError, ...rest } = o;
    this.#o = { maxSources: 10_000, flushEveryMs: 60_000, ...rest };
    this.#onError = onError ?? (() => undefined);
    this.#global = { tokens: o.burst * GLOBAL_FACTOR, atMs: clock.nowMs() };
    this.#audit = audit;
    this.#clock = clock;
  }

  /** True when this refusal is audited on its own; false when it is only counted. */
  admit(address: string, kind: RefusalKind): boolean {
    const now = this.#clock.nowMs();
    const source = sourceOf(address);
    let key = source;
    let b = this.#buckets.get(key);
    if (b === undefined) {
      if (this.#buckets.size >= this.#o.maxSources) this.#sweep(now);
      if (this.#buckets.size >= this.#o.maxSources) key = SHARED;
      b = this.#buckets.get(key);
      if (b === undefined) {
        b = { tokens: this.#o.burst, atMs: now };
        this.#buckets.set(key, b);
      }
    }
    b.tokens = Math.min(this.#o.burst, b.tokens + ((now - b.atMs) / 60_000) * this.#o.perMinute);
    b.atMs = now;
    // And every source together: many addresses (a botnet, an IPv6 range) share one ceiling of GLOBAL_FACTOR × a source's budget.
    const g = this.#global;
    g.tokens = Math.min(this.#o.burst * GLOBAL_FACTOR, g.tokens + ((now - g.atMs) / 60_000) * this.#o.perMinute * GLOBAL_FACTOR);
    g.atMs = now;
    if (b.tokens >= 1 && g.tokens >= 1) {
      b.tokens -= 1;
      g.tokens -= 1;
      return true;
    }
    const at = new Date(now).toISOString();
    const sKey = `${kind} ${key}`;
    const s = this.#suppressed.get(sKey);
    if (s === undefined) this.#suppressed.set(sKey, { count: 1, firstAt: at, lastAt: at });
    else {
      s.count += 1;
      s.lastAt = at;
    }
    this.suppressedTotal += 1;
    this.#arm();
    return false;
  }

  /** Write one `api.refusals.suppressed` event per source and kind counted since the last flush. */
  async flush(): Promise<void> {
    const pending = [...this.#suppressed];
    this.#suppressed.clear();
    for (const [i, [sKey, s]] of pending.entries()) {
      try {
        await this.#append(sKey, s);
      } catch (e) {
        // Not written: the counts stay for the next flush (merged with what arrived since), and the caller hears of it.
        for (const [k, v] of pending.slice(i)) this.#keep(k, v);
        throw e;
      }
    }
  }

  #keep(sKey: string, s: Suppressed): void {
    const cur = this.#suppressed.get(sKey);
    this.#suppressed.set(sKey, cur === undefined ? { ...s } : { count: cur.count + s.count, firstAt: s.firstAt < cur.firstAt ? s.firstAt : cur.firstAt, lastAt: s.lastAt > cur.lastAt ? s.lastAt : cur.lastAt });
  }

  async #append(sKey: string, s: Suppressed): Promise<void> {
    const sp = sKey.indexOf(' ');
    const kind = sKey.slice(0, sp);
    const source = sKey.slice(sp + 1);
    // The actor's `ip` only when the source is one address (not `*`, not an IPv6 /64).
    const ip = source === SHARED || source.includes('/') ? undefined : source;
    await this.#audit.append({
      action: 'api.refusals.suppressed',
      actor: { type: 'anonymous', id: 'anonymous', ...(ip === undefined ? {} : { ip }) },
      outcome: 'denied',
      reasons: ['unauthenticated', 'rate-limited'],
      correlationId: newCorrelationId(),
      details: { kind, source: source === SHARED ? 'many' : source, count: s.count, firstAt: s.firstAt, lastAt: s.lastAt },
    });
  }

  /** Write the counts after `flushEveryMs`; on failure keep them and try again then. */
  #arm(): void {
    this.#timer ??= setTimeout(() => {
      this.#timer = undefined;
      this.flush().catch((e: unknown) => {
        this.#onError(e);
        this.#arm();
      });
    }, this.#o.flushEveryMs).unref();
  }

  /** Stop the timer and write what was counted (on shutdown, before the audit writer closes). */
  async close(): Promise<void> {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    await this.flush();
  }

  /** Drop buckets that have refilled completely: those sources are back where a new one starts. */
  #sweep(now: number): void {
    for (const [k, b] of this.#buckets) {
      if (k !== SHARED && b.tokens + ((now - b.atMs) / 60_000) * this.#o.perMinute >= this.#o.burst) this.#buckets.delete(k);
    }
  }
}
