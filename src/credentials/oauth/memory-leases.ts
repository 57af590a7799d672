/**
 * An in-memory {@link LeaseManagerPort} for tests and for a server that has
 * no durable lease manager wired: same contract (write-ahead `pending`, then
 * `active`; `isLive` only for an unexpired active lease), no persistence.
 */
import { randomUUID } from 'node:crypto';
import type { Clock } from '../../kernel/index.ts';
import type { Lease, LeaseManagerPort, OpenLeaseRequest } from '../lease-port.ts';

/**
 * @example
 * const leases = new MemoryLeaseManager(clock);
 * const l = await leases.open({ kind: 'access_token', subject: 's', ttlMs: 60_000, correlationId: 'c' });
 * await leases.activate(l.id);
 */
export class MemoryLeaseManager implements LeaseManagerPort {
  readonly #clock: Clock;
  readonly #leases = new Map<string, Lease>();

  constructor(clock: Clock) {
    this.#clock = clock;
  }

  /** Every lease, for tests. */
  all(): readonly Lease[] {
    return [...this.#leases.values()];
  }

  async open(req: OpenLeaseRequest): Promise<Lease> {
    if (!Number.isFinite(req.ttlMs) || req.ttlMs <= 0) throw new TypeError('lease ttlMs must be positive');
    const now = this.#clock.nowMs();
    const maxMs = Math.max(req.ttlMs, req.maxTtlMs ?? req.ttlMs);
    const lease: Lease = Object.freeze({
      id: randomUUID(),
      kind: req.kind,
      subject: req.subject,
      taskId: req.taskId ?? null,
      audience: req.audience ?? null,
      state: 'pending',
      createdAt: new Date(now).toISOString(),
      expiresAt: new Date(now + req.ttlMs).toISOString(),
      maxExpiresAt: new Date(now + maxMs).toISOString(),
      revokedAt: null,
      revokeReason: null,
      handle: Object.freeze({ ...(req.handle ?? {}) }),
    });
    this.#leases.set(lease.id, lease);
    return lease;
  }

  async activate(id: string): Promise<Lease> {
    const l = this.#leases.get(id);
    if (l === undefined || l.state !== 'pending') throw new TypeError(`lease ${id} is not pending`);
    const next = Object.freeze({ ...l, state: 'active' as const });
    this.#leases.set(id, next);
    return next;
  }

  async get(id: string): Promise<Lease | undefined> {
    return this.#leases.get(id);
  }

  async isLive(id: string): Promise<boolean> {
    const l = this.#leases.get(id);
    return l !== undefined && l.state === 'active' && Date.parse(l.expiresAt) > this.#clock.nowMs();
  }

  async renew(id: string, ttlMs: number): Promise<Lease> {
    const l = this.#leases.get(id);
    if (l === undefined || l.state !== 'active') throw new TypeError(`lease ${id} is not active`);
    const exp = Math.min(this.#clock.nowMs() + ttlMs, Date.parse(l.maxExpiresAt));
    const next = Object.freeze({ ...l, expiresAt: new Date(exp).toISOString() });
    this.#leases.set(id, next);
    return next;
  }

  async revoke(id: string, reason: string): Promise<Lease | undefined> {
    const l = this.#leases.get(id);
    if (l === undefined) return undefined;
    if (l.state === 'revoked') return l;
    const next = Object.freeze({ ...l, state: 'revoked' as const, revokedAt: this.#clock.now().toISOString(), revokeReason: reason });
    this.#leases.set(id, next);
    return next;
  }

  async revokeByTask(taskId: string, reason: string): Promise<readonly Lease[]> {
    const out: Lease[] = [];
    for (const l of this.#leases.values()) if (l.taskId === taskId && l.state !== 'revoked') out.push((await this.revoke(l.id, reason)) ?? l);
    return out;
  }

  async revokeBySubject(subject: string, reason: string): Promise<readonly Lease[]> {
    const out: Lease[] = [];
    for (const l of this.#leases.values()) if (l.subject === subject && l.state !== 'revoked') out.push((await this.revoke(l.id, reason)) ?? l);
    return out;
  }
}
