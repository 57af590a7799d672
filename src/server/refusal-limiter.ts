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

/**
 * @example
 * const limiter = new RefusalAuditLimiter({ burst: 100, perMinute: 60 }, audit, systemClock);
 * if (limiter.admit(req.ip, 'admin-api')) await audit.append(refusal);
 * await limiter.close();
 */
export class RefusalAuditLimiter {
  readonly #o: Required<RefusalLimiterOptions>;
  readonly #audit: AuditSink;
  readonly #clock: Clock;
  readonly #buckets = new Map<string, Bucket>();
  readonly #suppressed = new Map<string, Suppressed>();
  #timer: NodeJS.Timeout | undefined;
  /** Refusals counted instead of audited, since start (for `/metrics`). */
  suppressedTotal = 0;

  constructor(o: RefusalLimiterOptions, audit: AuditSink, clock: Clock) {
    if (!(o.burst >= 1) || !(o.perMinute >= 0)) throw new TypeError('refusal limiter: burst must be >= 1 and perMinute >= 0');
    this.#o = { maxSources: 10_000, flushEveryMs: 60_000, ...o };
    this.#audit = audit;
    this.#clock = clock;
  }

  /** True when this refusal is audited on its own; false when it is only counted. */
  admit(source: string, kind: RefusalKind): boolean {
    const now = this.#clock.nowMs();
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
    if (b.tokens >= 1) {
      b.tokens -= 1;
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
    this.#timer ??= setTimeout(() => {
      this.#timer = undefined;
      this.flush().catch(() => undefined);
    }, this.#o.flushEveryMs).unref();
    return false;
  }

  /** Write one `api.refusals.suppressed` event per source and kind counted since the last flush. */
  async flush(): Promise<void> {
    const pending = [...this.#suppressed];
    this.#suppressed.clear();
    for (const [sKey, s] of pending) {
      const sp = sKey.indexOf(' ');
      const kind = sKey.slice(0, sp);
      const source = sKey.slice(sp + 1);
      await this.#audit.append({
        action: 'api.refusals.suppressed',
        actor: { type: 'anonymous', id: 'anonymous', ...(source === SHARED ? {} : { ip: source }) },
        outcome: 'denied',
        reasons: ['unauthenticated', 'rate-limited'],
        correlationId: newCorrelationId(),
        details: { kind, source: source === SHARED ? 'many' : source, count: s.count, firstAt: s.firstAt, lastAt: s.lastAt },
      });
    }
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
